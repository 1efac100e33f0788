"""Helpers for the `python -m reid.<tool>` commands: compose conf/train.yaml outside hydra.main."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """Composes ``conf/<config_name>.yaml`` with Hydra overrides, paths rooted at the working directory.

    ``paths.*`` normally come from Hydra's runtime (only set under ``hydra.main``); here the
    working directory stands in for both the project root and the output folder.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path.cwd())
        cfg.paths.output_dir = str(Path.cwd())
    return cfg
