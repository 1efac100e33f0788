"""The tasks the console scripts run on a composed config: train and evaluate.

With the tools, they are the only users of Hydra.
"""

from reid.tasks.common import (
    RunInterrupted,
    build_datamodule,
    build_model,
    build_test_sets,
    configure_wandb_env,
    run_cli,
    write_metrics,
)
from reid.tasks.evaluate import condition_config, evaluate, knockout_scores, use_stored_input_config
from reid.tasks.train import train, warn_if_pretraining_missing

__all__ = [
    "RunInterrupted",
    "build_datamodule",
    "build_model",
    "build_test_sets",
    "condition_config",
    "configure_wandb_env",
    "evaluate",
    "knockout_scores",
    "run_cli",
    "train",
    "use_stored_input_config",
    "warn_if_pretraining_missing",
    "write_metrics",
]
