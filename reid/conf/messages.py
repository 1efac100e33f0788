"""The wording of config errors: one line naming the key, what was expected and a fix."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf

from reid.conf.schema import UNION_ORIGINS, override_text

# Hydra's instantiation keys, allowed in every node that has a _target_.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})

MAX_LISTED_KEYS = 12


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


#: options that moved, old key -> new key (named in the error of a config that still uses the old one)
MOVED_KEYS = {
    "data.schedule.max_epochs": "trainer.max_epochs",
    "data.schedule.val_every_n_epochs": "trainer.check_val_every_n_epoch",
    "data.schedule.lr": "model.optimizer.lr",
    "data.schedule.lr_milestones": "model.scheduler.milestones",
}


def _moved_key_problem(key_path: str) -> str | None:
    """The error of a key that moved (``data.schedule.lr`` -> ``model.optimizer.lr``), None for other keys."""
    if key_path in MOVED_KEYS:
        return f"config key '{key_path}' has moved (fix: {MOVED_KEYS[key_path]}=...)"
    moved = sorted(new for old, new in MOVED_KEYS.items() if old.startswith(key_path + "."))
    if moved:
        return f"config key '{key_path}' has moved (fix: its options are now {', '.join(moved)})"
    return None


def _unknown_key_problem(key_path: str, key: str, parent: str, known: list[str]) -> str:
    moved = _moved_key_problem(key_path)
    if moved:
        return moved
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown config key '{key_path}' (did you mean '{_join(parent, close[0])}'?)"
    listed = [k for k in known if k not in HYDRA_KEYS]
    more = ", ..." if len(listed) > MAX_LISTED_KEYS else ""
    where = f"'{parent}'" if parent else "the top level"
    return (
        f"unknown config key '{key_path}' (fix: remove it or correct it; the keys of {where} are "
        f"{', '.join(listed[:MAX_LISTED_KEYS])}{more})"
    )


def _type_problem(path: str, value: Any, expected: Any, example: Any) -> str:
    fix = f"e.g. {path}={override_text(example)}" if example is not None else f"use {_describe(expected)}"
    return f"config key '{path}': expected {_describe(expected)}, got {_format_value(value)} (fix: {fix})"


def _describe(expected: Any) -> str:
    """A short name of a type, as used in the error messages (``int``, ``list of int``...)."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in UNION_ORIGINS:
        names = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_describe(args[0])}"
        return f"list of {_describe(args[0]) if args else 'values'}"
    if origin is list:
        return f"list of {_describe(args[0]) if args else 'values'}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(expected):
        return "a group of options (a mapping)"
    if expected is type(None):
        return "null"
    return getattr(expected, "__name__", str(expected))


def _format_value(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    return repr(value)


def _field(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text, re.MULTILINE)
    return match[1] if match else None


def _missing_option_problem(message: str) -> str:
    """``data=nosuch``: the group's options (the schemas left out), with the nearest."""
    wanted = _field(r"Could not find '([^']+)'", message) or "?"
    group, _, option = wanted.rpartition("/")
    listed = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", message)
    options = [line.strip() for line in listed[1].splitlines()] if listed else []
    close = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
    hint = f"did you mean '{group}={close[0]}'?" if close else f"one of {', '.join(options)}"
    if not group:
        return f"no config named '{option}' (fix: {hint if close else 'check the name'})"
    return f"config group '{group}' has no option '{option}' (fix: {hint})"


def _override_value(override: str) -> Any:
    """The value of ``key=value`` as Hydra parses it (``true`` -> True, ``[1,a]`` -> [1, 'a'])."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).value()
    except Exception:  # noqa: BLE001 - shown as written when Hydra's parser cannot read it either
        return override.split("=", 1)[1]
