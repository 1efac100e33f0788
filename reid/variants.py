"""The ablation models: `conf/model/*.yaml` is their one list, and code and tests read it from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from omegaconf import DictConfig, OmegaConf

from reid.conf import CONF_DIR, compose_configs
from reid.errors import ReidError

if TYPE_CHECKING:
    from reid.models import AttentionReIDNet

MODEL_GROUP_DIR = CONF_DIR / "model"
#: the base every model file extends (not a model of its own)
BASE_MODEL = "default"
# Hydra's instantiation keys: not options of the network
_HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


class UnknownVariantError(ReidError, ValueError):
    """A model name that is not a file of ``conf/model/``."""


@dataclass(frozen=True)
class ModelVariant:
    """One ``conf/model/<name>.yaml``, composed: the crops it is fed and its network's options.

    Attributes:
        name: the config option (``model=<name>``).
        description: the file's first comment line (what the model is, which table it belongs to).
        regions: ``pose`` (Eq. 1-2 crops) or ``strips``.
        net: keyword options of :class:`reid.models.AttentionReIDNet` (``num_classes`` excepted).
    """

    name: str
    description: str
    regions: str
    net: Mapping[str, Any]

    @property
    def rank(self) -> tuple[int, int, bool, str]:
        """Table 6's row order, from what the model is: strips first, then more fusion, then intra-attention."""
        from reid.models.fusion import FUSION_REGISTRY

        fusions = list(FUSION_REGISTRY)
        fusion = str(self.net.get("fusion", "concat"))
        fusion_rank = fusions.index(fusion) if fusion in fusions else len(fusions)
        return (int(self.regions != "strips"), fusion_rank, bool(self.net.get("intra_attention")), self.name)


def model_names() -> tuple[str, ...]:
    """The names of ``conf/model/*.yaml`` (the base file excepted), in Table 6's order."""
    return tuple(variant.name for variant in model_variants())


@lru_cache(maxsize=1)
def model_variants() -> tuple[ModelVariant, ...]:
    """Every model of ``conf/model/``, composed by Hydra as ``model=<name>`` would, in Table 6's order."""
    names = sorted(path.stem for path in MODEL_GROUP_DIR.glob("*.yaml") if path.stem != BASE_MODEL)
    configs = compose_configs([[f"+model={name}"] for name in names], config_name=None)
    return tuple(
        sorted(
            (_variant(name, cfg) for name, cfg in zip(names, configs, strict=True)), key=lambda variant: variant.rank
        )
    )


def model_variant(name: str) -> ModelVariant:
    """The model ``name`` of ``conf/model/``.

    Raises:
        UnknownVariantError: no such file; the message lists the models there are.
    """
    for variant in model_variants():
        if variant.name == name:
            return variant
    raise UnknownVariantError(
        f"unknown model {name!r} (fix: one of {', '.join(model_names())}, the files of {MODEL_GROUP_DIR})"
    )


def build_variant(name: str, num_classes: int, **overrides: Any) -> AttentionReIDNet:
    """The network of model ``name`` (a file of ``conf/model/``), with extra keyword options."""
    from reid.models import AttentionReIDNet

    return AttentionReIDNet(num_classes, **{**model_variant(name).net, **overrides})


def _variant(name: str, cfg: DictConfig) -> ModelVariant:
    net = cast(dict[str, Any], OmegaConf.to_container(cfg.model.net, resolve=True))  # YAML keys are strings
    assert isinstance(net, dict)
    return ModelVariant(
        name=name,
        description=_first_comment(name),
        regions=str(cfg.model.regions),
        net={key: value for key, value in net.items() if key not in _HYDRA_KEYS},
    )


def _first_comment(name: str) -> str:
    for line in (MODEL_GROUP_DIR / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
