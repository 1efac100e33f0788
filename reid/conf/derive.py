"""Schemas derived from constructor signatures: an option's type, default and range are written once, in the code.

A class such as :class:`reid.models.AttentionReIDNet` declares each option as a keyword
parameter: its type (a ``Literal`` for a choice), its default, and its valid range as
``annotated_types`` metadata (``Annotated[float, Interval(gt=0, le=8)]``); its help is the
``Args:`` entry of the class docstring. :func:`schema_from_signature` turns that signature into
the dataclass that Hydra's ConfigStore, :func:`reid.conf.validate.validate_config` and the
options reference read, so nothing is repeated in a schema, a YAML file or a test. A range
given on a list option (``Annotated[tuple[int, int], Ge(1)]``) holds for each item.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import annotated_types
from omegaconf import MISSING

from reid.conf.ranges import Range

ANNOTATED_ORIGIN = typing.get_origin(typing.Annotated[int, 0])


def range_of(metadata: Iterable[Any]) -> Range | None:
    """The :class:`Range` that ``annotated_types`` bounds (``Ge``, ``Gt``, ``Le``, ``Lt``, ``Interval``) describe."""
    low: Any = None
    high: Any = None
    low_open = high_open = False
    found = False
    for item in metadata:
        for bound in item if isinstance(item, annotated_types.Interval) else (item,):
            if isinstance(bound, annotated_types.Ge):
                low, low_open, found = bound.ge, False, True
            elif isinstance(bound, annotated_types.Gt):
                low, low_open, found = bound.gt, True, True
            elif isinstance(bound, annotated_types.Le):
                high, high_open, found = bound.le, False, True
            elif isinstance(bound, annotated_types.Lt):
                high, high_open, found = bound.lt, True, True
    if not found:
        return None
    return Range(low, high, low_open, high_open)


def split_annotation(annotation: Any) -> tuple[Any, Range | None]:
    """``Annotated[T, bounds...]`` -> ``(T, its Range)``; any other type -> ``(type, None)``."""
    if typing.get_origin(annotation) is ANNOTATED_ORIGIN:
        inner, *metadata = typing.get_args(annotation)
        return inner, range_of(metadata)
    return annotation, None


def keyword_options(target: Callable[..., Any], skip: Iterable[str] = ()) -> list[tuple[str, Any, Any, Range | None]]:
    """``(name, type, default, range)`` of each keyword option of ``target`` (a class: its ``__init__``).

    A parameter without a default has ``inspect.Parameter.empty`` as its default.
    """
    function = target.__init__ if inspect.isclass(target) else target
    hints = typing.get_type_hints(function, include_extras=True)
    skipped = set(skip)
    options = []
    for name, parameter in inspect.signature(target).parameters.items():
        if name in skipped or parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            continue
        kind, valid = split_annotation(hints[name])
        if isinstance(kind, types.UnionType):  # `int | None` as typing.Optional[int], the schemas' one spelling
            kind = typing.Union[typing.get_args(kind)]
        options.append((name, kind, parameter.default, valid))
    return options


def schema_from_signature(
    name: str,
    target: Callable[..., Any],
    *,
    target_path: str | None,
    also_targets: tuple[str, ...] = (),
    partial: bool | None = None,
    skip: Iterable[str] = (),
    replace: dict[str, tuple[Any, Any]] | None = None,
    choices: dict[str, str] | None = None,
) -> type:
    """The schema dataclass of ``target``'s keyword options (see the module docstring).

    Args:
        name: the dataclass's name (in messages and the options reference).
        target: the class or function the config node instantiates.
        target_path: its ``_target_`` in the YAML files; None for options passed on as keywords
            (``data.augment``: :class:`reid.data.transforms.SampleTransform`), which have no ``_target_``.
        also_targets: other dotted paths of the same object (a re-export) that the schema also describes.
        partial: adds ``_partial_`` with this default (the runner supplies the skipped arguments).
        skip: parameters the runner supplies (``num_classes``), not options.
        replace: options whose schema is not their parameter's type: name -> (type, dataclass field),
            e.g. ``net`` (a factory in the signature, a group of options in the config).
        choices: option -> ``module:REGISTRY`` whose names are its valid values (checked when a
            config is validated, so that a registered plug-in counts).
    """
    replaced = replace or {}
    fields: list[tuple[str, Any, Any]] = []
    if target_path is not None:
        fields.append(("_target_", str, dataclasses.field(default=target_path)))
    if partial is not None:
        fields.append(("_partial_", bool, dataclasses.field(default=partial)))
    for option, kind, default, valid in keyword_options(target, skip):
        if option in replaced:
            fields.append((option, *replaced[option]))
            continue
        if default is inspect.Parameter.empty:
            default = MISSING  # mandatory: `???` until a YAML file or an override gives it
        metadata: dict[str, Any] = {}
        if valid is not None:
            metadata["range"] = valid
        if choices and option in choices:
            metadata["choices"] = choices[option]
        if isinstance(default, (list, dict)):
            made = dataclasses.field(default_factory=functools.partial(copy.copy, default), metadata=metadata)
        else:
            made = dataclasses.field(default=default, metadata=metadata)
        fields.append((option, kind, made))
    path = target_path or f"{target.__module__}.{target.__qualname__}"
    namespace: dict[str, Any] = {
        "__doc__": f"The options of :class:`{path}`, from its signature (``Args:`` in its docstring)."
    }
    if target_path is not None:
        namespace["TARGETS"] = (target_path, *also_targets)
    return make_schema(name, fields, namespace=namespace)


def make_schema(
    name: str,
    fields: list[tuple[str, Any, Any]],
    *,
    bases: tuple[type, ...] = (),
    namespace: dict[str, Any] | None = None,
) -> type:
    """``dataclasses.make_dataclass``, the class placed in :mod:`reid.conf.schema` (its repr, its pickles)."""
    schema = dataclasses.make_dataclass(name, fields, bases=bases, namespace=namespace)
    schema.__module__ = "reid.conf.schema"
    return schema
