"""Shared test set-up: quiet offline W&B in a temp dir, a tiny Hydra config factory."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from omegaconf import DictConfig, open_dict

from reid.conf import compose_config

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")

# The smallest synthetic set and network that still exercise every code path.
TINY_OVERRIDES = [
    "data.options.num_train_ids=6",
    "data.options.num_test_ids=4",
    "data.options.images_per_train_id=4",
    "data.options.images_per_test_id=4",
    "data.options.num_distractors=3",
    "data.options.num_junk=2",
    "data.whole_size=[64,32]",
    "data.part_size=[16,32]",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "model.net.width=0.25",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
    "logger=none",
]


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (scripts/ is not a package), registered under ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def flat_metrics(metrics: dict, prefix: str = "") -> dict:
    """A metrics.json as one flat dict (``attention/intra/global/b2/saturated``...), for pytest.approx."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Tiny models on 2 cores: OpenMP threads waiting on each other cost far more than they bring.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _offline_wandb(tmp_path_factory: pytest.TempPathFactory) -> None:
    wandb_home = tmp_path_factory.mktemp("wandb")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        os.environ[var] = str(wandb_home)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder per test session, so the tiny synthetic set is generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(tmp_path: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """Composes `conf/<config_name>.yaml` with the tiny overrides plus the given ones."""

    def _make(*overrides: str, config_name: str = "train", tiny: bool = True) -> DictConfig:
        cfg = compose_config((TINY_OVERRIDES if tiny else []) + list(overrides), config_name)
        with open_dict(cfg):
            cfg.paths.root_dir = str(ROOT)
            cfg.paths.work_dir = str(ROOT)
            cfg.paths.output_dir = str(tmp_path / "out")
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.data_dir = str(data_dir)
        return cfg

    return _make


def train_tiny(out: Path, data_dir: Path, overrides: list[str]) -> tuple[Path, object, DictConfig]:
    """A tiny model trained one epoch into ``out``: its checkpoint, data module (as evaluate.py builds it), config."""
    import reid.tasks as runner

    cfg = compose_config([*TINY_OVERRIDES, *overrides, "trainer.max_epochs=1", "callbacks=model_checkpoint"])
    with open_dict(cfg):  # as the make_cfg fixture sets them (session scope cannot use it)
        cfg.paths.root_dir = cfg.paths.work_dir = str(ROOT)
        cfg.paths.output_dir = str(out / "run")
        cfg.paths.log_dir = str(out / "logs")
        cfg.paths.data_dir = str(data_dir)
    runner.train(cfg)
    return out / "run" / "checkpoints" / "last.ckpt", runner.build_datamodule(cfg), cfg


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, object, DictConfig]:
    """A tiny intra_inter checkpoint and its data module (built as evaluate.py builds it)."""
    return train_tiny(tmp_path_factory.mktemp("extractor"), data_dir, ["model=intra_inter", "data.beta=0.15"])
