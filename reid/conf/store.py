"""The schemas in Hydra's ConfigStore (OmegaConf's types), and Hydra's composition errors in one line."""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import field
from typing import Any, Literal, Optional

from omegaconf import MISSING

from reid.conf.messages import (
    _field,
    _missing_option_problem,
    _moved_key_problem,
    _override_value,
    _type_problem,
    _unknown_key_problem,
)
from reid.conf.schema import UNION_ORIGINS, _default, _plain, _schema_at, _type_hints, derived_schemas
from reid.errors import ConfigError

#: the ConfigStore group of the schemas: a YAML file extends one with ``- /schema/<name>@_here_``
SCHEMA_GROUP = "schema"

#: RunConfig's fields that are config groups: open at the top level, each typed by its group's own schema
GROUP_FIELDS = ("data", "model", "trainer", "callbacks", "logger")


def _root_schema(name: str, leave_out: frozenset[str]) -> type:
    """The run config as the root schema of train.yaml or evaluate.yaml: its own keys typed, the groups open."""
    run_config = derived_schemas()["RunConfig"]
    fields: list[tuple[str, Any, Any]] = []
    for item in dataclasses.fields(run_config):
        if item.name in leave_out:
            continue
        if item.name in GROUP_FIELDS:
            fields.append((item.name, Any, field(default=None)))
        else:
            kept = field(default=item.default, default_factory=item.default_factory, metadata=item.metadata)
            fields.append((item.name, _type_hints(run_config)[item.name], kept))
    return dataclasses.make_dataclass(name, fields)


def _omegaconf_type(annotation: Any) -> Any:
    """The nearest type OmegaConf can check (Literal -> str, a Union -> Any, dataclasses widened too)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        # an optimiser, scheduler...: its keys are its target's parameters (validate_config checks them)
        return Any if getattr(annotation, "KEYS_FROM_TARGET", False) else _structured(typing.cast(type, annotation))
    if origin is Literal:
        return str if all(isinstance(a, str) for a in args) else Any
    if origin in UNION_ORIGINS:
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and not dataclasses.is_dataclass(options[0]):
            inner = _omegaconf_type(options[0])
            return Any if inner is Any else Optional[inner]
        return Any
    if origin in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        inner = _omegaconf_type(items[0]) if items and len(set(items)) == 1 else Any
        return list[inner]  # type: ignore[valid-type]
    if origin is dict:
        return dict[str, _omegaconf_type(args[1]) if len(args) == 2 else Any]  # type: ignore[misc]
    if annotation in (int, float, bool, str):
        return annotation
    return Any


def _structured(schema: type, values: bool = True) -> type:
    """``schema`` as OmegaConf types it (one class per schema and ``values``: OmegaConf compares classes)."""
    return _structured_class(schema, values)


@functools.cache
def _structured_class(schema: type, values: bool) -> type:
    """``schema`` as OmegaConf types it: widened field types (see above), no class variables.

    With ``values``, the fields keep their defaults: an option that no YAML file sets takes the
    schema's default, which is the class's own. Without, every value is ``???``: merged after
    the values, such a schema only types the node (a subclass's: ``data/imagenet.yaml``).
    """
    hints = _type_hints(schema)
    fields: list[tuple[str, Any, Any]] = []
    for item in dataclasses.fields(schema):
        kind = _omegaconf_type(hints[item.name])
        default = _default(item)
        if not values:
            fields.append((item.name, kind, field(default=MISSING)))
        elif kind is Any:
            fields.append((item.name, kind, field(default=None)))
        elif dataclasses.is_dataclass(kind):
            fields.append((item.name, kind, field(default_factory=typing.cast(Any, kind))))
        elif isinstance(default, (list, tuple, dict)):
            fields.append((item.name, kind, field(default_factory=functools.partial(_plain, default))))
        else:
            fields.append((item.name, kind, field(default=default)))
    # a subclass stays one (OmegaConf then lets it type a node its base typed: data=imagenet)
    bases = tuple(_structured(base) for base in schema.__bases__ if dataclasses.is_dataclass(base))
    return dataclasses.make_dataclass(schema.__name__, fields, bases=bases)


@functools.cache
def register_schemas() -> None:
    """Registers the run config's schemas with Hydra's ConfigStore, once (before anything composes a run config)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, schema in registered().items():
        store.store(group=SCHEMA_GROUP, name=name, node=_structured(schema, values=name not in EXTENSIONS))


@functools.cache
def registered() -> dict[str, type]:
    """ConfigStore name -> schema (``conf/train.yaml``: ``- /schema/train@_here_``)."""
    schemas = derived_schemas()
    return {
        # the top levels of train.yaml (no saved features) and evaluate.yaml; `hydra` is Hydra's own
        "train": _root_schema("TrainRunConfig", frozenset({"features_path", "hydra"})),
        "evaluate": _root_schema("EvaluateRunConfig", frozenset({"hydra"})),
        "reid_data": schemas["ReIDDataConfig"],
        "imagenet_data": schemas["ImageNetDataConfig"],
        "reid_module": schemas["ReIDModuleConfig"],
    }


#: schemas merged after the values they type (a subclass of an earlier schema): registered without values
EXTENSIONS = frozenset({"imagenet_data"})

#: a composed config's name -> its schema, for the configs that are not run configs (the tools')
ROOT_SCHEMAS: dict[str, type] = {}


def register_tool(group: str, name: str, options_type: type) -> None:
    """Registers a tool's options dataclass as the config ``<group>/<name>`` (composed by :mod:`reid.conf.tool`)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=group, name=name, node=_structured(options_type), package="_global_")
    ROOT_SCHEMAS[f"{group}/{name}"] = options_type


def compose_error(err: Exception, root: type | None = None) -> ConfigError:
    """Hydra's composition error (a misspelt key, a wrong type, an unknown option) as one line with a fix.

    Hydra reports the file and the full key over several lines; this adds what was expected and
    the likely key, in the words of :func:`validate_config`.
    """
    from hydra.errors import MissingConfigException

    message = str(err)
    cause = err.__cause__ if err.__cause__ is not None else err
    where = re.match(r"In '([^']+)'", message)
    in_file = f" in {where[1]}.yaml" if where and not where[1].startswith(SCHEMA_GROUP + "/") else ""
    if isinstance(err, MissingConfigException):
        return ConfigError([_missing_option_problem(message)])
    full_key = getattr(cause, "full_key", None) or _field(r"full_key: (\S+)", message)
    object_type = _field(r"object_type=(\w+)", message) or getattr(
        getattr(cause, "object_type", None), "__name__", None
    )
    schema = _schema_named(object_type or "", root)
    if schema is None and full_key:
        schema = _schema_at(full_key.rpartition(".")[0], root)
    if not full_key:
        return ConfigError([" ".join(message.split())])
    parent, _, key = full_key.rpartition(".")
    text = f"{message}\n{cause}"
    if "not in" in text or "Could not override" in text:
        written = _field(r"Could not override '([^']+)'", message) or full_key
        moved = _moved_key_problem(written)
        if moved:
            return ConfigError([moved.replace(f"'{written}'", f"'{written}'{in_file}", 1)])
        known = [f.name for f in dataclasses.fields(schema)] if schema else []
        problem = _unknown_key_problem(full_key, key, parent, known) if known else f"unknown config key '{full_key}'"
        return ConfigError([problem.replace(f"'{full_key}'", f"'{full_key}'{in_file}", 1)])
    override = re.search(r"override (\S+=.*)$", message, re.MULTILINE)
    value: Any = _override_value(override[1]) if override else _field(r"Value '([^']*)'", text)
    item = re.match(r"(.*)\[\d+\]$", full_key)  # an item of a list: report the list option
    if item:
        full_key = item[1]
        parent, _, key = full_key.rpartition(".")
        schema = _schema_at(parent, root)
    if schema is not None and key in {f.name for f in dataclasses.fields(schema)}:
        schema_field = next(f for f in dataclasses.fields(schema) if f.name == key)
        problem = _type_problem(full_key, value, _type_hints(schema)[key], _default(schema_field))
    else:
        problem = f"config key '{full_key}': {_field(r'^(.*)$', str(cause)) or 'wrong value'} (got {value!r})"
    return ConfigError([problem.replace(f"'{full_key}'", f"'{full_key}'{in_file}", 1)])


def _schema_named(name: str, root: type | None) -> type | None:
    """The schema class called ``name``: a tool's own options, or one of the run config's schemas."""
    tools = {schema.__name__: schema for schema in ROOT_SCHEMAS.values()}
    if name in tools or root in ROOT_SCHEMAS.values():
        return tools.get(name)
    return _all_schemas().get(name)


@functools.cache
def _all_schemas() -> dict[str, type]:
    """Every schema of the run config, by class name (nested ones included)."""
    found: dict[str, type] = {}
    pending: list[Any] = [derived_schemas()["RunConfig"], *registered().values()]
    while pending:
        schema = pending.pop()
        if schema.__name__ in found:
            continue
        found[schema.__name__] = schema
        for annotation in _type_hints(schema).values():
            for inner in (annotation, *typing.get_args(annotation)):
                if dataclasses.is_dataclass(inner):
                    pending.append(inner)
    return found
