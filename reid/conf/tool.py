"""The one way every command-line tool reads its options: `key=value` arguments, composed by Hydra into a dataclass.

A tool declares its options as a dataclass (types, defaults, ``help`` in each field's metadata)
and calls :func:`run_tool`. The dataclass is registered in Hydra's ConfigStore (``tools/<name>``)
and composed with the command line as Hydra overrides, so every tool takes the same syntax as
``reid-train`` (``key=value``, lists as ``[a,b]``, ``null``) and reports a misspelt option, a
wrong type, a value out of range or a bad input in one ``error:`` line, exit status 2.
Arguments without ``=`` are the items of the tool's positional list option, if it has one
(``reid-report outputs/a outputs/b`` is ``reid-report paths=[outputs/a,outputs/b]``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from reid.errors import one_line, user_errors

Options = TypeVar("Options")
TOOL_GROUP = "tools"


def option(default: Any, help: str, *, positional: bool = False, **valid: Any) -> Any:  # noqa: A002 - the word users read
    """A tool option: its default, one line of ``--help``, optionally its valid range (:class:`reid.conf.ranges.Range`).

    ``positional``: the list option that bare arguments fill (``reid-report DIR [DIR ...]``).
    """
    from reid.conf.ranges import Range

    metadata: dict[str, Any] = {"help": help}
    if positional:
        metadata["positional"] = True
    if valid:
        metadata["range"] = Range(**valid)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def tool_options(options_type: type[Options], argv: Sequence[str], name: str) -> Options:
    """The options of tool ``name`` from its command line, composed by Hydra and checked against ``options_type``.

    Raises:
        ConfigError: an unknown option (with the nearest), a wrong type, a choice or range not met.
    """
    from omegaconf import OmegaConf

    from reid.conf import compose_config
    from reid.conf.store import register_tool
    from reid.conf.validate import validate_options
    from reid.errors import ConfigError

    register_tool(TOOL_GROUP, name, options_type)
    overrides = _overrides(argv, options_type)
    cfg = compose_config(overrides, config_name=f"{TOOL_GROUP}/{name}")
    validate_options(cfg, options_type)
    values = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(values, dict)
    missing = [str(key) for key, value in values.items() if value == "???"]
    if missing:
        raise ConfigError([f"option '{key}' is required (fix: add {key}=...)" for key in missing])
    return options_type(**{str(key): value for key, value in values.items()})


def run_tool(
    function: Callable[[Options], int | None], options_type: type[Options], name: str, argv: Sequence[str] | None = None
) -> int:
    """Runs ``function`` on the tool's options; returns the exit status.

    ``--help`` prints the options; bad options or input print one ``error:`` line and return 2
    (``REID_DEBUG=1`` raises instead, with the traceback).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in args):
        print(usage(options_type, name, function))
        return 0
    try:
        status = function(tool_options(options_type, args, name))
    except user_errors() as err:
        if os.environ.get("REID_DEBUG"):
            raise
        print(f"error: {one_line(str(err))}", file=sys.stderr, flush=True)
        return 2
    return int(status or 0)


#: the tools with a console script ``reid-<name>`` (pyproject's [project.scripts]); the others run as
#: ``python -m reid.tools.<name>``
CONSOLE_TOOLS = ("train", "evaluate", "report", "export", "bench", "summary", "extract-pose", "search")


def program(name: str) -> str:
    """How a user starts the tool ``name`` (``bench loader`` is a sub-command of ``reid-bench``)."""
    return f"reid-{name}" if name.split()[0] in CONSOLE_TOOLS else f"python -m reid.tools.{name}"


def usage(options_type: type, name: str, function: Callable[..., Any] | None = None) -> str:
    """``--help``: what the tool does and each option with its default."""
    doc = (function.__doc__ or options_type.__doc__ or "").strip().splitlines()
    lines = [f"{program(name)} [key=value ...]" + (f": {doc[0]}" if doc else ""), "", "options:"]
    positional = _positional_field(options_type)
    for item in dataclasses.fields(options_type):
        default = (
            item.default
            if item.default is not dataclasses.MISSING
            else (item.default_factory() if item.default_factory is not dataclasses.MISSING else "(required)")
        )
        default = "(required)" if default == "???" else default
        bare = " (also given as bare arguments)" if item.name == positional else ""
        lines.append(f"  {item.name}={_shown(default)}  {item.metadata.get('help', '')}{bare}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return str(value)


def _positional_field(options_type: type) -> str | None:
    """The option that bare arguments fill: the one marked ``positional`` in its metadata."""
    for item in dataclasses.fields(options_type):
        if item.metadata.get("positional"):
            return item.name
    return None


def _overrides(argv: Sequence[str], options_type: type) -> list[str]:
    """The arguments as Hydra overrides.

    Bare arguments become the items of the positional list option; the value of a text option is
    taken as written (``command=python train.py -m model=a,b`` is one string, not a sweep).
    """
    positional = _positional_field(options_type)
    texts, text_lists = _text_options(options_type)
    bare = [arg for arg in argv if "=" not in arg and not arg.startswith(("+", "~"))]
    overrides = []
    for arg in argv:
        if arg in bare:
            continue
        key, _, value = arg.partition("=")
        if key in texts and value != "null" and not _is_quoted(value):
            arg = f"{key}={_quoted(value)}"
        elif key in text_lists and value.startswith("[") and value.endswith("]"):
            # items as written: `overrides=[model.net.width=0.5]` (an `=` is not Hydra's grammar in a list)
            items = [item.strip() for item in value[1:-1].split(",") if item.strip()]
            arg = f"{key}=[{','.join(item if _is_quoted(item) else _quoted(item) for item in items)}]"
        overrides.append(arg)
    if bare:
        if positional is None:
            from reid.errors import ConfigError

            raise ConfigError(
                [f"arguments are key=value, got {bare[0]!r} (fix: e.g. {bare[0]}=... ; --help lists the options)"]
            )
        overrides.append(f"{positional}=[{','.join(_quoted(item) for item in bare)}]")
    return overrides


def _text_options(options_type: type) -> tuple[set[str], set[str]]:
    """The options typed ``str`` and those typed ``List[str]`` (either one optional)."""
    texts, text_lists = set(), set()
    for name, hint in typing.get_type_hints(options_type).items():
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if hint is str:
            texts.add(name)
        elif typing.get_origin(hint) is list and typing.get_args(hint) == (str,):
            text_lists.add(name)
    return texts, text_lists


def _is_quoted(value: str) -> bool:
    return len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]


def _quoted(text: str) -> str:
    """``text`` as one quoted Hydra value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


__all__ = ["option", "run_tool", "tool_options", "usage"]
