"""`validate_config`: a wrong type or misspelt key -> one line naming the key.

Hydra only refuses a misspelt key given on the command line without ``+``; a typo in a YAML file
(an experiment config, ``data.pose.min_conff``) is merged silently and either ignored (options
read from a mapping) or fails at instantiation with a long traceback. :func:`validate_config`
checks the composed config against the dataclasses of :mod:`reid.conf.schema` before anything is built and raises
:class:`ConfigError` with the full key path, what was expected and a fix.

What is checked:

* the groups whose ``_target_`` is one of this project's classes (``data``: ReIDDataModule or
  ImageNetDataModule; ``model``: ReIDModule or ClassificationModule; ``model.net``:
  AttentionReIDNet), ``eval``, ``paths`` and the top-level keys, key by key with types;
* ``trainer``: the keys of ``conf/trainer/default.yaml`` with types, any other key must be a
  parameter of ``pytorch_lightning.Trainer``;
* every other node with a ``_target_`` (``model.optimizer``, ``model.scheduler``, each callback
  and logger): its keys must be parameters of the target (unless it takes ``**kwargs``);
* a group whose ``_target_`` is some other class is left to that class.

Values that are interpolations which cannot be resolved here (``${hydra:...}`` outside a Hydra
run) are not type-checked; ``data.options`` is free-form (each data set loader has its own).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import typing
from functools import cache
from typing import Any, Literal

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationValidationError

from reid.conf.messages import HYDRA_KEYS, _format_value, _join, _type_problem, _unknown_key_problem
from reid.conf.schema import UNION_ORIGINS, Range, _default, _type_hints, derived_schemas, override_text
from reid.errors import ConfigError


class _Unresolved:
    """An interpolation that cannot be resolved outside a Hydra run: not type-checked."""


class _Missing:
    """A mandatory value left as ``???``."""


_UNRESOLVED = _Unresolved()

_MISSING = _Missing()

# ${a.b.c}: a value that only repeats another key (reported there, not twice)
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")


class _Findings:
    """Problems found so far, by key path, and which keys only repeat another key (``${...}``)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.references: dict[str, str] = {}

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def messages(self) -> list[str]:
        """One line per problem; a key interpolating a key that has its own problem is left out."""
        flagged = {path for path, _ in self.items}
        lines = []
        for path, message in self.items:
            reference = self.references.get(path)
            if reference is not None:
                if reference in flagged:
                    continue
                message = message.replace(f"config key '{path}'", f"config key '{path}' (= ${{{reference}}})", 1)
            lines.append(message)
        return lines


def validate_config(cfg: DictConfig) -> None:
    """Checks a composed train/evaluate config against the schemas of this module.

    Call it before instantiating anything. Missing optional keys are fine (evaluate.yaml has no
    ``callbacks``); keys whose value is ``???`` are reported.

    Raises:
        ConfigError: one line per problem, each naming the full key path and a fix, e.g.
            ``config key 'data.batch_size': expected int, got 'abc' (fix: e.g. data.batch_size=32)``
            or ``unknown config key 'model.net.widht' (did you mean 'model.net.width'?)``.
    """
    findings = _Findings()
    _check(cfg, derived_schemas()["RunConfig"], "", findings, example=None)
    _check_optimizer(cfg, findings)
    if findings.items:
        raise ConfigError(findings.messages())


def _child(node: Any, key: Any, path: str, findings: _Findings) -> Any:
    """``_read(node, key)``, noting in ``findings`` when the value is ``${another.key}``."""
    if isinstance(node, (DictConfig, ListConfig)) and OmegaConf.is_interpolation(node, key):
        match = _REFERENCE.match(str(node._get_node(key)._value()))  # type: ignore[union-attr]
        if match:
            findings.references[path] = match[1]
    return _read(node, key)


def _read(node: Any, key: Any) -> Any:
    """The value at ``node[key]``, resolved; _MISSING for ``???``; _UNRESOLVED when it cannot be resolved here."""
    if not isinstance(node, (DictConfig, ListConfig)):
        return node[key]
    if OmegaConf.is_missing(node, key):
        return _MISSING
    try:
        return node[key]
    except InterpolationValidationError:
        # ${other.key} whose value the typed node refuses: report the value it would take
        match = _REFERENCE.match(str(node._get_node(key)._value()))  # type: ignore[union-attr]
        if match:
            return OmegaConf.select(node._get_root(), match[1], default=_UNRESOLVED)
        return _UNRESOLVED
    except Exception:  # noqa: BLE001 - any resolver failure means "not checkable here", not "wrong"
        return _UNRESOLVED


def _check(value: Any, expected: Any, path: str, findings: _Findings, example: Any) -> None:
    """Appends to ``findings`` what is wrong with ``value`` as a ``expected`` at ``path``."""
    if value is _UNRESOLVED or expected is Any:
        return
    if value is _MISSING:
        fix = f"add {path}=..." if example == MISSING else f"set it, e.g. {path}={override_text(example)}"
        findings.add(path, f"config key '{path}' has no value (???) (fix: {fix})")
        return
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in UNION_ORIGINS:
        if value is None and type(None) in args:
            return
        options: list[Any] = [a for a in args if a is not type(None)]
        schemas: list[Any] = [a for a in options if dataclasses.is_dataclass(a)]
        if len(schemas) > 1 and isinstance(value, (DictConfig, dict)):
            chosen = _schema_for(value, schemas)  # the schema of the node's _target_
            if chosen is not None:
                _check_node(value, chosen, path, findings)
            return
        if len(options) == 1 and _kind(options[0]) != "scalar":
            _check(value, options[0], path, findings, example)
            return
        for option in options:
            attempt = _Findings()
            _check(value, option, path, attempt, example)
            if not attempt.items:
                return
        # a mapping or list of the right kind: report what is wrong inside it rather than its type
        for option in options:
            if _kind(option) == _kind(value) != "scalar":
                _check(value, option, path, findings, example)
                return
        findings.add(path, _type_problem(path, value, expected, example))
        return
    if dataclasses.is_dataclass(expected):
        expected = typing.cast(type, expected)
        if value is None or not isinstance(value, (DictConfig, dict)):
            findings.add(path, _type_problem(path, value, expected, example))
        elif _schema_for(value, [expected]) is not None:
            _check_node(value, expected, path, findings)
        return
    if origin is Literal:
        if not (isinstance(value, str) and value in args) and value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"e.g. {path}={args[0]}"
            findings.add(
                path,
                f"config key '{path}': expected one of {', '.join(repr(a) for a in args)}, "
                f"got {_format_value(value)} (fix: {hint})",
            )
        return
    if origin in (list, tuple):
        if not isinstance(value, (ListConfig, list, tuple)):
            findings.add(path, _type_problem(path, value, expected, example))
            return
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                findings.add(path, _type_problem(path, value, expected, example))
                return
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        for index, item_type in enumerate(item_types):
            item_path = _join(path, index)
            _check(_child(value, index, item_path, findings), item_type, item_path, findings, None)
        return
    if origin is dict:
        if not isinstance(value, (DictConfig, dict)):
            findings.add(path, _type_problem(path, value, expected, example))
            return
        value_type = args[1] if len(args) == 2 else Any
        for key in value:
            item_path = _join(path, key)
            _check(_child(value, key, item_path, findings), value_type, item_path, findings, None)
        return
    if not _scalar_matches(value, expected):
        findings.add(path, _type_problem(path, value, expected, example))


def _kind(value_or_type: Any) -> str:
    """``mapping``, ``list`` or ``scalar``, for a value or a schema type."""
    origin = typing.get_origin(value_or_type)
    if isinstance(value_or_type, (DictConfig, dict)) or origin is dict or dataclasses.is_dataclass(value_or_type):
        return "mapping"
    if isinstance(value_or_type, (ListConfig, list, tuple)) or origin in (list, tuple):
        return "list"
    return "scalar"


def _scalar_matches(value: Any, expected: Any) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if expected is type(None):
        return value is None
    return isinstance(value, expected)


def _schema_for(value: DictConfig | dict, schemas: list[type]) -> type | None:
    """The schema among ``schemas`` that describes ``value``: by its ``_target_`` when the schema names targets.

    None when the node's ``_target_`` is another class (left to that class) or cannot be resolved.
    """
    target = _read(value, "_target_") if "_target_" in value else None
    for schema in schemas:
        targets = getattr(schema, "TARGETS", None)
        if targets is None or target is None and "_target_" not in value:
            return schema
        if isinstance(target, str) and target in targets:
            return schema
    return None


def _check_node(value: DictConfig | dict, schema: type, path: str, findings: _Findings) -> None:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = _type_hints(schema)
    extra_keys: frozenset[str] | None = frozenset()
    if getattr(schema, "KEYS_FROM_TARGET", False):
        extra_keys = _target_parameters(value, path, findings)
    for key in value:
        key_path = _join(path, key)
        if key in fields:
            item = _child(value, key, key_path, findings)
            before = len(findings.items)
            _check(item, hints[key], key_path, findings, _default(fields[key]))
            valid = fields[key].metadata.get("range")
            if valid is not None and len(findings.items) == before:
                _check_range(item, valid, key_path, findings, _default(fields[key]))
            choices = fields[key].metadata.get("choices")
            if choices is not None and len(findings.items) == before and isinstance(item, str):
                _check_choice(item, _registry_names(choices), key_path, findings)
        elif key in HYDRA_KEYS:
            continue
        elif extra_keys is not None and key not in extra_keys:
            known = sorted(set(fields) | (extra_keys or set()))
            findings.add(key_path, _unknown_key_problem(key_path, str(key), path, known))


def _check_range(value: Any, valid: Range, path: str, findings: _Findings, example: Any) -> None:
    """Adds a finding when the number ``value`` (or a number in the list ``value``) is outside ``valid``."""
    items = list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool) and not valid.contains(item):
            shown = _format_value(OmegaConf.to_container(value) if isinstance(value, ListConfig) else value)
            fix = f"e.g. {path}={override_text(example)}" if example is not None else f"a value {valid.describe()}"
            bounds = ("in " if valid.low is not None and valid.high is not None else "") + valid.describe()
            if isinstance(item, float) and not math.isfinite(item):
                bounds = f"a finite number {bounds}"  # YAML reads .nan, nan and 1e400 (inf) as floats
            findings.add(path, f"config key '{path}': {shown} is out of range, must be {bounds} (fix: {fix})")
            return


def _registry_names(where: str) -> tuple[str, ...]:
    """The names of a registry given as ``module:ATTRIBUTE`` (imported when a config is checked)."""
    import importlib

    module, attribute = where.split(":")
    return tuple(getattr(importlib.import_module(module), attribute))


def _check_choice(value: str, choices: tuple[str, ...], path: str, findings: _Findings) -> None:
    """Adds a finding when ``value`` is not one of ``choices`` (with the nearest as a hint)."""
    if value in choices:
        return
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"e.g. {path}={choices[0]}"
    findings.add(
        path,
        f"config key '{path}': expected one of {', '.join(repr(c) for c in choices)}, "
        f"got {_format_value(value)} (fix: {hint})",
    )


# the options of every optimiser (model.optimizer), whatever its class: numbers, in range
OPTIMIZER_RANGES = {
    "lr": Range(0.0, low_open=True),
    "momentum": Range(0.0, 1.0),
    "weight_decay": Range(0.0),
    "dampening": Range(0.0, 1.0),
    "eps": Range(0.0, low_open=True),
}


def _check_optimizer(cfg: DictConfig, findings: _Findings) -> None:
    """``model.optimizer``'s numeric options: a number (not ``'abc'``) within :data:`OPTIMIZER_RANGES`."""
    model = cfg.get("model") if isinstance(cfg, DictConfig) else None
    optimizer = model.get("optimizer") if isinstance(model, DictConfig) else None
    if not isinstance(optimizer, DictConfig):
        return
    for key, valid in OPTIMIZER_RANGES.items():
        if key not in optimizer:
            continue
        path = f"model.optimizer.{key}"
        item = _child(optimizer, key, path, findings)
        if item is _UNRESOLVED or item is None:
            continue
        if not _scalar_matches(item, float):
            findings.add(path, _type_problem(path, item, float, 0.01 if key == "lr" else None))
        else:
            _check_range(item, valid, path, findings, 0.01 if key == "lr" else None)


def _target_parameters(value: DictConfig | dict, path: str, findings: _Findings) -> frozenset[str] | None:
    """Keyword parameters of the node's ``_target_``; None (anything goes) when it takes ``**kwargs`` or is unknown."""
    target = _read(value, "_target_") if "_target_" in value else None
    if not isinstance(target, str):
        return None
    try:
        return _parameters_of(target)
    except ImportError as err:
        findings.add(
            _join(path, "_target_"),
            f"config key '{_join(path, '_target_')}': cannot import {target!r} ({err}) "
            "(fix: correct the dotted path of the class or function)",
        )
        return None


@cache
def _parameters_of(target: str) -> frozenset[str] | None:
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as err:  # noqa: BLE001 - Hydra wraps import failures in several types
        raise ImportError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return frozenset(
        name
        for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


def validate_options(cfg: DictConfig, options_type: type) -> None:
    """Checks a composed tool config against its options dataclass (choices, ranges, exact types).

    Raises:
        ConfigError: one line per problem, as :func:`validate_config`.
    """
    findings = _Findings()
    _check_node(cfg, options_type, "", findings)
    if findings.items:
        raise ConfigError(findings.messages())
