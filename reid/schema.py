"""Typed schemas of the run config and `validate_config`: a wrong type or misspelt key -> one line naming the key.

Hydra only refuses a misspelt key given on the command line without ``+``; a typo in a YAML file
(an experiment config, ``data.pose.min_conff``) is merged silently and either ignored (options
read from a mapping) or fails at instantiation with a long traceback. :func:`validate_config`
checks the composed config against the dataclasses below before anything is built and raises
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
Adding an option to one of the project's classes means adding it to its schema here:
``tests/test_schema.py`` compares them with the constructors' signatures.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, Union

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationValidationError

from reid.errors import ReidError

# typing.Union[a, b] and a | b (PEP 604)
UNION_ORIGINS = (Union, types.UnionType)
# Hydra's instantiation keys, allowed in every node that has a _target_.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
MAX_LISTED_KEYS = 12


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric option (each item, for a list): ``low``/``high`` bounds, ``also`` exceptions."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[Any, ...] = ()

    def contains(self, value: float) -> bool:
        """Whether ``value`` is valid; NaN and infinities never are (``1e400`` reads as inf), even unbounded."""
        if value in self.also:
            return True
        if isinstance(value, float) and not math.isfinite(value):  # an int is finite (and may not fit a float)
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        """``[0, 1)``, ``>= 1``, ``> 0``... as in the error messages."""
        if self.low is not None and self.high is not None:
            text = f"{'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        else:
            text = f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return text + "".join(f" or {override_text(a)}" for a in self.also)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def ranged(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    also: tuple[Any, ...] = (),
) -> Any:
    """A schema field with a default and a valid range (checked by :func:`validate_config`)."""
    metadata = {"range": Range(low, high, low_open, high_open, also)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


PROBABILITY = {"low": 0.0, "high": 1.0}
POSITIVE = {"low": 0.0, "low_open": True}
# what numpy, torch and Lightning take as a seed (an unsigned 32-bit integer)
SEED = {"low": 0, "high": 2**32 - 1}


class ConfigError(ReidError, ValueError):
    """A composed config with an unknown key or a value of the wrong type; the message names the key and a fix.

    Attributes:
        problems: every problem found, one line each (the message joins them with ``; ``).
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


# ============================================================================ schemas
# Defaults are the shipped ones; they serve as the example in a fix hint.


@dataclass
class PoseConfig:
    """``data.pose``: where keypoints come from and when they are trusted."""

    source: Literal["openpose_json", "pose_transfer_csv", "strips"] = "openpose_json"
    path: Optional[Union[str, List[str]]] = None
    min_conf: float = ranged(0.1, **PROBABILITY)
    min_joints: int = ranged(6, 0, 18)
    max_outside: Optional[float] = ranged(0.25, 0.0)


@dataclass
class StripsConfig:
    """``data.strips``: the fixed strips of the baseline and of the fallback."""

    layout: Literal["equal", "canonical"] = "equal"


@dataclass
class AugmentConfig:
    """``data.augment``: keyword options of :class:`reid.data.transforms.SampleTransform`."""

    normalize: Literal["mean_subtract", "imagenet", "none"] = "mean_subtract"
    mean: Optional[Tuple[float, float, float]] = ranged(None, 0.0)
    scale: float = ranged(1.0 / 255.0, **POSITIVE)
    hflip: float = ranged(0.5, **PROBABILITY)
    color_jitter: float = ranged(0.0, **PROBABILITY)
    brightness: float = ranged(0.2, 0.0)
    contrast: float = ranged(0.15, 0.0)
    saturation: float = ranged(0.0, 0.0)
    hue: float = ranged(0.0, 0.0, 0.5)
    pad_crop: float = ranged(0.0, **PROBABILITY)
    translate: float = ranged(0.125, 0.0, 1.0, high_open=True)
    random_erasing: float = ranged(0.0, **PROBABILITY)
    erasing_area: Tuple[float, float] = ranged((0.02, 0.4), 0.0, 1.0, low_open=True)
    erasing_aspect: Tuple[float, float] = ranged((0.3, 3.3), **POSITIVE)
    erasing_fill: Literal["mean", "random"] = "mean"
    seed: Optional[int] = ranged(None, **SEED)


@dataclass
class ReIDDataConfig:
    """``data`` for :class:`reid.lit.datamodule.ReIDDataModule`."""

    TARGETS: ClassVar[tuple[str, ...]] = ("reid.lit.datamodule.ReIDDataModule",)

    _target_: str = "reid.lit.datamodule.ReIDDataModule"
    name: str = "synthetic"
    root: str = "data"
    options: Dict[str, Any] = field(default_factory=dict)
    whole_size: Tuple[int, int] = ranged((384, 192), 16)
    part_size: Tuple[int, int] = ranged((96, 192), 8)
    regions: Literal["pose", "strips"] = "pose"
    # overlap of neighbouring regions as a fraction of the body height (paper: 1/10; Table 11: up to 1/6)
    beta: float = ranged(0.1, 0.0, 0.5)
    pose: PoseConfig = field(default_factory=PoseConfig)
    strips: StripsConfig = field(default_factory=StripsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_size: int = ranged(32, 1)
    eval_batch_size: int = ranged(128, 1)
    num_workers: int = ranged(2, 0)
    pin_memory: bool = False
    on_bad_sample: Literal["error", "skip"] = "error"
    verify_images: Literal["decode", "header"] = "decode"
    sampler: Literal["random", "identity"] = "random"
    num_instances: int = ranged(4, 1)
    sampler_seed: Optional[int] = ranged(None, **SEED)
    test_sets: List[str] = field(default_factory=list)


@dataclass
class ImageNetDataConfig(ReIDDataConfig):
    """``data`` for :class:`reid.lit.imagenet.ImageNetDataModule` (the shared data keys plus ``framing``)."""

    TARGETS: ClassVar[tuple[str, ...]] = ("reid.lit.imagenet.ImageNetDataModule",)

    _target_: str = "reid.lit.imagenet.ImageNetDataModule"
    name: str = "imagenet"
    regions: Literal["pose", "strips"] = "strips"
    framing: Literal["stretch", "center_crop"] = "stretch"


@dataclass
class NetConfig:
    """``model.net`` for :class:`reid.models.AttentionReIDNet` (``num_classes`` comes from the data set)."""

    TARGETS: ClassVar[tuple[str, ...]] = ("reid.models.AttentionReIDNet", "reid.models.network.AttentionReIDNet")

    _target_: str = "reid.models.AttentionReIDNet"
    _partial_: bool = True
    intra_attention: bool = False
    decompose: bool = True
    residual: bool = True
    # any fusion registered in reid.models.fusion (checked against the registry, not a list kept here)
    fusion: str = field(default="concat", metadata={"choices": "reid.models.fusion:FUSION_REGISTRY"})
    width: float = ranged(1.0, 0.0, 8.0, low_open=True)
    global_dim: int = ranged(256, 1)
    part_dim: int = ranged(128, 1)
    dropout: float = ranged(0.5, 0.0, 1.0, high_open=True)
    group_parts: bool = True
    fusion_dim: Optional[int] = ranged(None, 1)
    units_per_stage: Tuple[int, int, int, int] = ranged((3, 3, 3, 3), 1)
    stage_strides: Tuple[int, int, int] = ranged((2, 2, 1), 1)
    part_pool_stride: Tuple[int, int] = ranged((1, 2), 1)
    attention_pools: Tuple[int, int, int] = ranged((2, 1, 1), 1)
    attention_bottleneck_ratio: float = ranged(0.25, 0.0, 1.0, low_open=True)
    attention_spatial_kernel: int = ranged(3, 1)
    attention_channel_reduction: int = ranged(16, 1)
    attention_upsample: Literal["bilinear", "nearest"] = "bilinear"
    attention_norm: Literal["standardize", "batch", "none"] = "standardize"
    inter_norm: Literal["none", "l2", "l2_batch"] = "l2"
    inter_weight: Literal["residual", "gate"] = "residual"
    inter_source: Literal["feature", "map"] = "feature"
    reduce_bn: bool = True
    reduce_relu: bool = True
    zero_init_residual: bool = False
    classifier_std: float = ranged(0.001, **POSITIVE)


@dataclass
class TargetConfig:
    """Any node with a ``_target_`` (optimizer, scheduler, callback, logger): keys must be the target's parameters."""

    KEYS_FROM_TARGET: ClassVar[bool] = True

    _target_: str = "torch.optim.SGD"
    _partial_: bool = False


@dataclass
class ReIDModuleConfig:
    """``model`` for :class:`reid.lit.module.ReIDModule` (``num_classes``, ``eval_options`` come from the runner)."""

    TARGETS: ClassVar[tuple[str, ...]] = ("reid.lit.module.ReIDModule",)

    _target_: str = "reid.lit.module.ReIDModule"
    net: NetConfig = field(default_factory=NetConfig)
    regions: Literal["pose", "strips"] = "pose"
    lambda_intra: float = ranged(0.5, 0.0)
    label_smoothing: float = ranged(0.0, 0.0, 1.0, high_open=True)
    fused_label_smoothing: Optional[float] = ranged(None, 0.0, 1.0, high_open=True)
    visibility_loss: float = ranged(0.0, 0.0)
    visibility_target: Literal["keypoints", "erasing", "both"] = "keypoints"
    channels_last: bool = True
    pretrained: Optional[str] = None
    compile: bool = False
    compile_options: Dict[str, Any] = field(default_factory=dict)
    optimizer: TargetConfig = field(default_factory=TargetConfig)
    scheduler: Optional[TargetConfig] = None


@dataclass
class ClassificationModuleConfig(ReIDModuleConfig):
    """``model`` for :class:`reid.lit.imagenet.ClassificationModule` (ImageNet pre-training)."""

    TARGETS: ClassVar[tuple[str, ...]] = ("reid.lit.imagenet.ClassificationModule",)

    _target_: str = "reid.lit.imagenet.ClassificationModule"
    top_k: List[int] = field(default_factory=lambda: [1, 5])


@dataclass
class PicturesConfig:
    """``eval.pictures``: the pictures written after validation."""

    enabled: bool = True
    num_queries: int = ranged(8, 0)
    query_rows: Optional[List[int]] = ranged(None, 0)
    topk: int = ranged(10, 1)
    num_attention: int = ranged(4, 0)
    seed: int = ranged(0, **SEED)


@dataclass
class EvalConfig:
    """``eval``: how query and gallery features are compared and what evaluate.py reports."""

    distance: Literal["euclidean", "cosine"] = "euclidean"
    max_rank: int = ranged(50, 1)
    cuhk03_repeats: int = ranged(10, 1)
    cuhk03_seed: int = ranged(0, **SEED)
    cuhk03_exact: bool = False
    chunk_size: int = ranged(1024, 1)
    device: str = "auto"
    branches: bool = True
    flip: bool = False
    rerank: bool = False
    rerank_k1: int = ranged(20, 1)
    rerank_k2: int = ranged(6, 1)
    rerank_lambda: float = ranged(0.3, 0.0, 1.0)
    rerank_max_images: int = ranged(40000, 1)
    save_features: bool = False
    attention_knockout: bool = False
    visibility_matching: Literal["none", "mu", "keypoints"] = "none"
    pictures: PicturesConfig = field(default_factory=PicturesConfig)


@dataclass
class TrainerConfig:
    """``trainer``: the keys of conf/trainer/default.yaml typed; others must be ``pytorch_lightning.Trainer`` parameters."""

    TARGETS: ClassVar[tuple[str, ...]] = ("pytorch_lightning.Trainer", "pytorch_lightning.trainer.Trainer")
    KEYS_FROM_TARGET: ClassVar[bool] = True

    _target_: str = "pytorch_lightning.Trainer"
    default_root_dir: Optional[str] = None
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = ranged(1, 1)
    precision: Union[str, int] = "32-true"
    # -1: no limit (Lightning); 0 would write the metrics of untrained weights as a result
    max_epochs: Optional[int] = ranged(100, 1, also=(-1,))
    check_val_every_n_epoch: Optional[int] = ranged(10, 1)
    log_every_n_steps: Optional[int] = ranged(10, 1)
    deterministic: Union[bool, str, None] = False
    benchmark: Optional[bool] = False
    num_sanity_val_steps: Optional[int] = ranged(0, -1)
    enable_model_summary: Optional[bool] = True
    enable_progress_bar: Optional[bool] = True
    fast_dev_run: Union[bool, int] = ranged(False, 0)
    limit_train_batches: Union[int, float, None] = ranged(1.0, 0.0, low_open=True)
    limit_val_batches: Union[int, float, None] = ranged(1.0, 0.0)
    gradient_clip_val: Union[int, float, None] = ranged(None, 0.0)


@dataclass
class PathsConfig:
    """``paths``: where data, logs and outputs live."""

    root_dir: str = "."
    data_dir: str = "data"
    log_dir: str = "outputs"
    output_dir: str = "outputs"
    work_dir: str = "."


@dataclass
class RunConfig:
    """The whole composed config of train.py / evaluate.py (a key may be absent: evaluate.yaml has fewer)."""

    task_name: str = "train"
    tags: List[str] = field(default_factory=lambda: ["dev"])
    seed: Optional[int] = ranged(42, **SEED)
    ckpt_path: Optional[str] = None
    overwrite: bool = False
    resume_with_changes: bool = False
    final_validation: bool = True
    expect_pretrained: bool = False
    optimized_metric: Optional[str] = "val/mAP"
    paths: PathsConfig = field(default_factory=PathsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: Union[ReIDDataConfig, ImageNetDataConfig] = field(default_factory=ReIDDataConfig)
    model: Union[ReIDModuleConfig, ClassificationModuleConfig] = field(default_factory=ReIDModuleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: Optional[Dict[str, Optional[TargetConfig]]] = None
    logger: Optional[Dict[str, Optional[TargetConfig]]] = None
    features_path: Optional[str] = None  # evaluate.yaml only
    hydra: Any = None  # present only when composed with return_hydra_config


# ============================================================================ validation


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
    _check(cfg, RunConfig, "", findings, example=None)
    _check_optimizer(cfg, findings)
    if findings.items:
        raise ConfigError(findings.messages())


def _child(node: DictConfig | ListConfig, key: Any, path: str, findings: _Findings) -> Any:
    """``_read(node, key)``, noting in ``findings`` when the value is ``${another.key}``."""
    if isinstance(node, (DictConfig, ListConfig)) and OmegaConf.is_interpolation(node, key):
        match = _REFERENCE.match(str(node._get_node(key)._value()))
        if match:
            findings.references[path] = match[1]
    return _read(node, key)


def _read(node: DictConfig | ListConfig, key: Any) -> Any:
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


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


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
        options = [a for a in args if a is not type(None)]
        schemas = [a for a in options if dataclasses.is_dataclass(a)]
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
        if value is None:
            findings.add(path, _type_problem(path, value, expected, example))
        elif not isinstance(value, (DictConfig, dict)):
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


@lru_cache(maxsize=None)
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


@lru_cache(maxsize=None)
def _type_hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _default(schema_field: dataclasses.Field) -> Any:
    if schema_field.default is not dataclasses.MISSING:
        return schema_field.default
    if schema_field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        made = schema_field.default_factory()  # type: ignore[misc]
        return None if dataclasses.is_dataclass(made) else made
    return None


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


def override_text(example: Any) -> str:
    """A value in Hydra override syntax (``[384,192]``, ``null``, ``true``, ``{a:1}``)."""
    if example is None:
        return "null"
    if isinstance(example, bool):
        return str(example).lower()
    if isinstance(example, (list, tuple)):
        return "[" + ",".join(override_text(v) for v in example) + "]"
    if isinstance(example, dict):
        return "{" + ",".join(f"{k}:{override_text(v)}" for k, v in example.items()) + "}"
    return str(example)


# ============================================================================ Hydra's ConfigStore
# The schemas above are registered with Hydra as structured configs, so that a misspelt key or a
# value of the wrong kind, in any YAML file or override, fails when Hydra composes the config
# (naming the file and the full key). OmegaConf's types are simpler than Python's (no Literal, no
# Union but Optional, tuples of any length): each schema is registered as a copy with its types
# widened to what OmegaConf checks, and validate_config then checks the exact types, choices and
# ranges. The trainer, callbacks, loggers, optimiser and scheduler stay open mappings: their keys
# are the parameters of their ``_target_``, checked by validate_config.

#: the ConfigStore group of the schemas: a YAML file extends one with ``- /schema/<name>@_here_``
SCHEMA_GROUP = "schema"


#: RunConfig's fields that are config groups: open at the top level, each typed by its group's own schema
GROUP_FIELDS = ("data", "model", "trainer", "callbacks", "logger")


def _root_schema(name: str, leave_out: frozenset[str]) -> type:
    """:class:`RunConfig` as the root schema of train.yaml or evaluate.yaml: its own keys typed, the groups open."""
    fields: list[tuple[str, Any, Any]] = []
    for item in dataclasses.fields(RunConfig):
        if item.name in leave_out:
            continue
        if item.name in GROUP_FIELDS:
            fields.append((item.name, Any, field(default=None)))
        else:
            kept = field(default=item.default, default_factory=item.default_factory, metadata=item.metadata)  # type: ignore[call-overload]
            fields.append((item.name, _type_hints(RunConfig)[item.name], kept))
    return dataclasses.make_dataclass(name, fields)


#: the top levels of train.yaml (no saved features) and evaluate.yaml; `hydra` is Hydra's own
TrainRunConfig = _root_schema("TrainRunConfig", frozenset({"features_path", "hydra"}))
EvaluateRunConfig = _root_schema("EvaluateRunConfig", frozenset({"hydra"}))


def _omegaconf_type(annotation: Any) -> Any:
    """The nearest type OmegaConf can check (Literal -> str, a Union -> Any, dataclasses widened too)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        # an optimiser, scheduler...: its keys are its target's parameters (validate_config checks them)
        return Any if getattr(annotation, "KEYS_FROM_TARGET", False) else _structured(annotation)
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
        return List[inner]  # type: ignore[valid-type]
    if origin is dict:
        return Dict[str, _omegaconf_type(args[1]) if len(args) == 2 else Any]  # type: ignore[misc]
    if annotation in (int, float, bool, str):
        return annotation
    return Any


def _structured(schema: type, values: bool = True) -> type:
    """``schema`` as OmegaConf types it (one class per schema and ``values``: OmegaConf compares classes)."""
    return _structured_class(schema, values)


@lru_cache(maxsize=None)
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
        if kind is Any:
            fields.append((item.name, kind, field(default=None)))
        elif not values:
            fields.append((item.name, kind, field(default=MISSING)))
        elif dataclasses.is_dataclass(kind):
            fields.append((item.name, kind, field(default_factory=kind)))
        elif isinstance(default, (list, tuple, dict)):
            fields.append((item.name, kind, field(default_factory=lambda d=default: _plain(d))))
        else:
            fields.append((item.name, kind, field(default=default)))
    # a subclass stays one (OmegaConf then lets it type a node its base typed: data=imagenet)
    bases = tuple(_structured(base) for base in schema.__bases__ if dataclasses.is_dataclass(base))
    return dataclasses.make_dataclass(schema.__name__, fields, bases=bases)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (OmegaConf stores sequences as lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def register_schemas() -> None:
    """Registers the schemas with Hydra's ConfigStore (idempotent; done when reid.conf is imported)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, schema in REGISTERED.items():
        store.store(group=SCHEMA_GROUP, name=name, node=_structured(schema, values=name not in EXTENSIONS))


#: ConfigStore name -> schema (``conf/train.yaml``: ``- /schema/train@_here_``)
REGISTERED: dict[str, type] = {
    "train": TrainRunConfig,
    "evaluate": EvaluateRunConfig,
    "reid_data": ReIDDataConfig,
    "imagenet_data": ImageNetDataConfig,
    "reid_module": ReIDModuleConfig,
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
    _SCHEMAS_BY_NAME[options_type.__name__] = options_type


def validate_options(cfg: DictConfig, options_type: type) -> None:
    """Checks a composed tool config against its options dataclass (choices, ranges, exact types).

    Raises:
        ConfigError: one line per problem, as :func:`validate_config`.
    """
    findings = _Findings()
    _check_node(cfg, options_type, "", findings)
    if findings.items:
        raise ConfigError(findings.messages())


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
    schema = _SCHEMAS_BY_NAME.get(object_type or "")
    if schema is None and full_key:
        schema = _schema_at(full_key.rpartition(".")[0], root or RunConfig)
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
        schema = _schema_at(parent, root or RunConfig)
    if schema is not None and key in {f.name for f in dataclasses.fields(schema)}:
        schema_field = next(f for f in dataclasses.fields(schema) if f.name == key)
        problem = _type_problem(full_key, value, _type_hints(schema)[key], _default(schema_field))
    else:
        problem = f"config key '{full_key}': {_field(r'^(.*)$', str(cause)) or 'wrong value'} (got {value!r})"
    return ConfigError([problem.replace(f"'{full_key}'", f"'{full_key}'{in_file}", 1)])


def _override_value(override: str) -> Any:
    """The value of ``key=value`` as Hydra parses it (``true`` -> True, ``[1,a]`` -> [1, 'a'])."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).value()
    except Exception:  # noqa: BLE001 - shown as written when Hydra's parser cannot read it either
        return override.split("=", 1)[1]


def _schema_at(path: str, root: type | None = None) -> type | None:
    """The schema of the node at ``path`` (``data.pose`` -> PoseConfig), walking ``root`` (:class:`RunConfig`)."""
    schema: Any = root or RunConfig
    for key in path.split(".") if path else []:
        annotation = _type_hints(schema).get(key) if dataclasses.is_dataclass(schema) else None
        options = [a for a in (annotation, *typing.get_args(annotation)) if dataclasses.is_dataclass(a)]
        if not options:
            return None
        schema = options[0]
    return schema if dataclasses.is_dataclass(schema) else None


_NO_DEFAULT = object()


def schema_default(path: str) -> Any:
    """The schema's default of the option at ``path`` (``model.net.group_parts`` -> True); a sentinel when none.

    A config stored by an older version may lack an option that the schema now spells out;
    with this default the option was what the code used anyway (:func:`reid.rundir.config_changes`).
    """
    parent, _, key = path.rpartition(".")
    schema = _schema_at(parent)
    fields = {f.name: f for f in dataclasses.fields(schema)} if schema is not None else {}
    if key not in fields:
        return _NO_DEFAULT
    return _plain(_default(fields[key]))


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


def _all_schemas() -> dict[str, type]:
    found: dict[str, type] = {}
    pending: list[type] = [RunConfig, *REGISTERED.values()]
    while pending:
        schema = pending.pop()
        if schema.__name__ in found:
            continue
        found[schema.__name__] = schema
        for annotation in _type_hints(schema).values():
            for inner in (annotation, *typing.get_args(annotation)):
                if dataclasses.is_dataclass(inner):
                    pending.append(inner)  # type: ignore[arg-type]
    return found


_SCHEMAS_BY_NAME = _all_schemas()
