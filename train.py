"""Train a ReID model: `python train.py [model=intra_inter] [data=synthetic] [key=value ...]`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from reid.runner import configure_wandb_env, run_cli, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimised metric for sweepers."""
    metrics = run_cli(train, cfg)
    key = str(cfg.get("optimized_metric") or "val/mAP").split("/")[-1]
    return metrics.get(key)


if __name__ == "__main__":
    configure_wandb_env()
    main()
