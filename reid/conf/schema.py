"""The typed schemas of the run config: every option's type, default and valid range (:class:`Range`)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Dict, List, Literal, Optional, Union

from reid.conf.ranges import POSITIVE, PROBABILITY, SEED, UNION_ORIGINS, Range, override_text, ranged

__all__ = ["POSITIVE", "PROBABILITY", "SEED", "UNION_ORIGINS", "Range", "override_text", "ranged"]


@dataclass
class TargetConfig:
    """Any node with a ``_target_`` (optimizer, scheduler, callback, logger): keys must be the target's parameters."""

    KEYS_FROM_TARGET: ClassVar[bool] = True

    _target_: str = "torch.optim.SGD"
    _partial_: bool = False


@dataclass
class PicturesConfig:
    """``eval.pictures``: the pictures written into the run directory (and to W&B during training)."""

    enabled: bool = True
    # ranked lists (Fig. 6): queries shown, chosen at random with `seed`
    num_queries: int = ranged(8, 0)
    # ...or these query numbers
    query_rows: Optional[List[int]] = ranged(None, 0)
    # gallery images shown per ranked list
    topk: int = ranged(10, 1)
    # attention maps (Fig. 7): query images shown
    num_attention: int = ranged(4, 0)
    seed: int = ranged(0, **SEED)


@dataclass
class EvalConfig:
    """``eval``: how query and gallery features are compared and what evaluate.py reports.

    Declared here once: ``conf/eval/default.yaml`` lists only what differs (nothing, today).
    """

    # how query/gallery features are compared
    distance: Literal["euclidean", "cosine"] = "euclidean"
    # the longest rank of the CMC curve
    max_rank: int = ranged(50, 1)
    # CUHK03 classic single-shot: number of gallery samplings averaged
    cuhk03_repeats: int = ranged(10, 1)
    # ... their seed
    cuhk03_seed: int = ranged(0, **SEED)
    # ... or the exact expectation over every sampling
    cuhk03_exact: bool = False
    # query rows per distance chunk (bounds memory for very large galleries)
    chunk_size: int = ranged(1024, 1)
    # where evaluate.py runs the network and ranks: auto (GPU when present) | cpu | cuda | cuda:1 ...
    device: str = "auto"
    # evaluate.py: also score every branch alone (Table 7: global, head, upper body, upper leg, lower leg, part fusion)
    branches: bool = True
    # average each feature with that of the horizontally flipped image
    flip: bool = False
    # k-reciprocal re-ranking (Zhong et al. 2017) of the global + part feature, as an extra result
    rerank: bool = False
    # re-ranking's k1 (its reciprocal neighbourhood)
    rerank_k1: int = ranged(20, 1)
    # re-ranking's k2 (its query expansion)
    rerank_k2: int = ranged(6, 1)
    # re-ranking's weight of the original distance
    rerank_lambda: float = ranged(0.3, 0.0, 1.0)
    # re-ranking holds (Q+G)^2 distances: refuse larger sets instead of running out of memory
    rerank_max_images: int = ranged(40000, 1)
    # write features.pt into the run directory; `python evaluate.py features_path=...` scores it again without the model
    save_features: bool = False
    # evaluate.py: score again with each intra-attention mask flattened over positions (spatial) and over
    # channels (channel), its mean kept: how much retrieval relies on where / which channels the network attends
    attention_knockout: bool = False
    # evaluate.py: also score with part distances weighted by both images' part visibilities and normalised
    # (VPM / PGFA / BPBReID): mu (inter-attention's weights) | keypoints (their joints' mean confidence)
    visibility_matching: Literal["none", "mu", "keypoints"] = "none"
    pictures: PicturesConfig = field(default_factory=PicturesConfig)


@dataclass
class TrainerConfig:
    """``trainer``: conf/trainer/default.yaml's keys, typed; others must be ``pytorch_lightning.Trainer`` parameters."""

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
class RunOptions:
    """The top-level options of train.py / evaluate.py; :data:`RunConfig` adds the ``data`` and ``model`` groups."""

    task_name: str = "train"
    tags: List[str] = field(default_factory=lambda: ["dev"])
    seed: Optional[int] = ranged(42, **SEED)
    ckpt_path: Optional[str] = None
    overwrite: bool = False
    resume_with_changes: bool = False
    final_validation: bool = True
    expect_pretrained: bool = False
    retain_freed_memory: bool = True
    optimized_metric: Optional[str] = "val/mAP"
    paths: PathsConfig = field(default_factory=PathsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: Optional[Dict[str, Optional[TargetConfig]]] = None
    logger: Optional[Dict[str, Optional[TargetConfig]]] = None
    features_path: Optional[str] = None  # evaluate.yaml only
    hydra: Any = None  # present only when composed with return_hydra_config


# ---------------------------------------------------------------------------- derived from the code
# The options of the project's own classes are declared once, in their constructors' signatures
# (type, default, range; help in the docstring's ``Args:``), and their schemas are derived from them
# (:mod:`reid.conf.derive`). Deriving imports the classes (torch, Lightning), so it waits until a
# schema is first asked for: importing this module stays cheap for the tools that never compose a run.

#: the schemas derived from the code, by name (``NetConfig``, ``ReIDModuleConfig``...; see :func:`derived_schemas`)
DERIVED = (
    "PoseConfig",
    "StripsConfig",
    "AugmentConfig",
    "NetConfig",
    "ReIDDataConfig",
    "ImageNetDataConfig",
    "ReIDModuleConfig",
    "ClassificationModuleConfig",
    "RunConfig",
)


@cache
def derived_schemas() -> dict[str, type]:
    """The schemas of the project's classes, derived from their signatures (built once, on first use)."""
    from reid.conf.derive import make_schema, schema_from_signature
    from reid.data.index import keypoint_options
    from reid.data.transforms import SampleTransform
    from reid.lit.datamodule import ReIDDataModule
    from reid.lit.module import ReIDModule
    from reid.models.network import AttentionReIDNet
    from reid.names import RegionMode
    from reid.pose.regions import strip_regions

    pose = schema_from_signature("PoseConfig", keypoint_options, target_path=None)
    strips = schema_from_signature("StripsConfig", strip_regions, target_path=None, skip=("width", "height", "beta"))
    augment = schema_from_signature("AugmentConfig", SampleTransform, target_path=None, skip=("train",))
    net = schema_from_signature(
        "NetConfig",
        AttentionReIDNet,
        target_path="reid.models.AttentionReIDNet",
        also_targets=("reid.models.network.AttentionReIDNet",),
        partial=True,
        skip=("num_classes",),
        # any fusion registered in reid.models.fusion: checked against the registry, not a list kept here
        choices={"fusion": "reid.models.fusion:FUSION_REGISTRY"},
    )
    data = schema_from_signature(
        "ReIDDataConfig",
        ReIDDataModule,
        target_path="reid.lit.datamodule.ReIDDataModule",
        replace={
            "pose": (pose, field(default_factory=pose)),
            "strips": (strips, field(default_factory=strips)),
            "augment": (augment, field(default_factory=augment)),
        },
    )
    # written out rather than derived: conf/data/imagenet.yaml extends data/default.yaml, so its schema is
    # the shared one plus ImageNetDataModule's own keys (a subclass, as OmegaConf needs to type the node)
    imagenet_data = make_schema(
        "ImageNetDataConfig",
        [
            ("_target_", str, field(default="reid.lit.imagenet.ImageNetDataModule")),
            ("name", str, field(default="imagenet")),
            ("regions", RegionMode, field(default="strips")),
            ("framing", Literal["stretch", "center_crop"], field(default="stretch")),
        ],
        bases=(data,),
        namespace={
            "TARGETS": ("reid.lit.imagenet.ImageNetDataModule",),
            "__doc__": "``data`` of ImageNet pre-training.",
        },
    )
    module = schema_from_signature(
        "ReIDModuleConfig",
        ReIDModule,
        target_path="reid.lit.module.ReIDModule",
        skip=("num_classes", "eval_options"),
        replace={
            "net": (net, field(default_factory=net)),
            "optimizer": (TargetConfig, field(default_factory=TargetConfig)),
            "scheduler": (Optional[TargetConfig], field(default=None)),
        },
    )
    classification = make_schema(
        "ClassificationModuleConfig",
        [
            ("_target_", str, field(default="reid.lit.imagenet.ClassificationModule")),
            ("top_k", List[int], field(default_factory=lambda: [1, 5])),
        ],
        bases=(module,),
        namespace={
            "TARGETS": ("reid.lit.imagenet.ClassificationModule",),
            "__doc__": "``model`` of ImageNet pre-training.",
        },
    )
    run = make_schema(
        "RunConfig",
        [
            ("data", Union[data, imagenet_data], field(default_factory=data)),
            ("model", Union[module, classification], field(default_factory=module)),
        ],
        bases=(RunOptions,),
        namespace={"__doc__": "The whole composed config of train.py / evaluate.py (evaluate.yaml has fewer keys)."},
    )
    return {
        "PoseConfig": pose,
        "StripsConfig": strips,
        "AugmentConfig": augment,
        "NetConfig": net,
        "ReIDDataConfig": data,
        "ImageNetDataConfig": imagenet_data,
        "ReIDModuleConfig": module,
        "ClassificationModuleConfig": classification,
        "RunConfig": run,
    }


def __getattr__(name: str) -> type:
    """``from reid.conf.schema import NetConfig``: a derived schema, built on first use."""
    if name in DERIVED:
        return derived_schemas()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _type_hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _default(schema_field: dataclasses.Field) -> Any:
    if schema_field.default is not dataclasses.MISSING:
        return schema_field.default
    if schema_field.default_factory is not dataclasses.MISSING:
        made = schema_field.default_factory()
        return None if dataclasses.is_dataclass(made) else made
    return None


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (OmegaConf stores sequences as lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _schema_at(path: str, root: type | None = None) -> type | None:
    """The schema of the node at ``path`` (``data.pose`` -> PoseConfig), walking ``root`` (the run config)."""
    schema: Any = root or derived_schemas()["RunConfig"]
    for key in path.split(".") if path else []:
        annotation: Any = _type_hints(typing.cast(type, schema)).get(key) if dataclasses.is_dataclass(schema) else None
        options: list[Any] = [a for a in (annotation, *typing.get_args(annotation)) if dataclasses.is_dataclass(a)]
        if not options:
            return None
        schema = options[0]
    return typing.cast(type, schema) if dataclasses.is_dataclass(schema) else None


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
