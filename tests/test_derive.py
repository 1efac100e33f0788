"""Schemas derived from signatures: each option's type, default and range said once, in the code, and enforced."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Annotated, Literal

import pytest
from annotated_types import Ge, Gt, Interval, Lt

from reid.conf.derive import range_of, schema_from_signature
from reid.conf.schema import derived_schemas
from reid.conf.store import _structured
from reid.conf.validate import validate_options
from reid.errors import ConfigError


class Widget:
    """A hand-made class whose options are known.

    Args:
        size: how big.
    """

    def __init__(
        self,
        name: str,
        *,
        size: Annotated[int, Ge(1)] = 3,
        ratio: Annotated[float, Interval(gt=0, lt=1)] = 0.5,
        mode: Literal["fast", "exact"] = "fast",
        sizes: Annotated[tuple[int, int], Gt(0)] = (2, 4),
        scale: Annotated[float | None, Lt(10)] = None,
        factory: object = None,
    ) -> None:
        self.name = name


def _widget_schema() -> type:
    return schema_from_signature(
        "WidgetConfig", Widget, target_path="tests.Widget", skip=("factory",), choices={"mode": "x:Y"}
    )


def test_a_derived_schema_has_the_signatures_options_types_defaults_and_ranges():
    schema = _widget_schema()
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    assert list(fields) == ["_target_", "name", "size", "ratio", "mode", "sizes", "scale"]
    assert fields["_target_"].default == "tests.Widget" and schema.TARGETS == ("tests.Widget",)
    assert fields["name"].default == "???"  # no default in the signature: mandatory
    assert (fields["size"].default, hints["size"]) == (3, int)
    assert hints["mode"] == Literal["fast", "exact"] and fields["mode"].metadata["choices"] == "x:Y"
    assert hints["scale"] == float | None and fields["sizes"].default == (2, 4)
    ratio = fields["ratio"].metadata["range"]
    assert (ratio.low, ratio.high, ratio.low_open, ratio.high_open) == (0, 1, True, True)
    assert fields["size"].metadata["range"].contains(1) and not fields["size"].metadata["range"].contains(0)
    assert not fields["scale"].metadata["range"].contains(10)


def test_a_derived_schema_refuses_what_the_signature_declares_invalid():
    schema = schema_from_signature("WidgetOptions", Widget, target_path=None, skip=("name", "factory"))
    from omegaconf import OmegaConf

    good = OmegaConf.structured(_structured(schema))
    validate_options(good, schema)
    for key, value, words in [
        ("size", 0, "must be >= 1"),
        ("ratio", 1.0, "must be in (0, 1)"),
        ("sizes", [2, 0], "must be > 0"),
        ("mode", "slow", "expected one of 'fast', 'exact'"),
    ]:
        bad = OmegaConf.create({**OmegaConf.to_container(good), key: value})
        with pytest.raises(ConfigError, match=re.escape(words)):
            validate_options(bad, schema)


def test_bounds_without_annotated_types_give_no_range():
    assert range_of(["a help text", 3]) is None
    both = range_of([Ge(0), Lt(2)])
    assert (both.low, both.high, both.low_open, both.high_open) == (0, 2, False, True)


def test_the_run_configs_schemas_come_from_the_classes_they_configure():
    """One declaration: a default in a signature is the schema's default (the hflip drift cannot recur)."""
    import inspect

    from reid.data.transforms import SampleTransform
    from reid.lit.datamodule import ReIDDataModule
    from reid.lit.module import ReIDModule
    from reid.models import AttentionReIDNet

    schemas = derived_schemas()
    for schema, target in [
        (schemas["NetConfig"], AttentionReIDNet),
        (schemas["AugmentConfig"], SampleTransform),
        (schemas["ReIDModuleConfig"], ReIDModule),
        (schemas["ReIDDataConfig"], ReIDDataModule),
    ]:
        parameters = inspect.signature(target).parameters
        for item in dataclasses.fields(schema):
            if item.name in parameters and not dataclasses.is_dataclass(typing.get_type_hints(schema)[item.name]):
                declared = parameters[item.name].default
                if declared is not inspect.Parameter.empty and item.default is not dataclasses.MISSING:
                    assert item.default == declared, f"{schema.__name__}.{item.name}"
    assert dataclasses.fields(schemas["AugmentConfig"])[3].name == "hflip"
    assert {f.name: f.default for f in dataclasses.fields(schemas["AugmentConfig"])}["hflip"] == 0.0
