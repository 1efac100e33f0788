"""Score a checkpoint: `python evaluate.py ckpt_path=PATH [data=...]` prints R1/R5/R10/R20/mAP, writes metrics.json."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from reid.runner import evaluate, run_cli


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_cli(evaluate, cfg)


if __name__ == "__main__":
    main()
