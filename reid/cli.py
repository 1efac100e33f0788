"""Entry points: `reid-train` / `reid-evaluate`, Hydra apps over the packaged configs (`reid/conf`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from reid.conf import compose_config
from reid.conf.store import register_schemas


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from reid.tasks import run_cli, train

    metrics = run_cli(train, cfg)
    key = str(cfg.get("optimized_metric") or "val/mAP").split("/")[-1]
    return metrics.get(key)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def _evaluate(cfg: DictConfig) -> None:
    from reid.tasks import evaluate, run_cli

    run_cli(evaluate, cfg)


def train_main() -> None:
    """``reid-train`` / ``python train.py``: train a model; returns the optimised metric to sweepers."""
    from reid.tasks import configure_wandb_env

    register_schemas()
    check_command_line("train")
    configure_wandb_env()
    _train()


def evaluate_main() -> None:
    """``reid-evaluate`` / ``python evaluate.py``: score a checkpoint or saved features."""
    register_schemas()
    check_command_line("evaluate")
    _evaluate()


def check_command_line(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Composes the command line's config once before Hydra does: a bad key, value or option is one line.

    Hydra reports a composition error over several lines without the fix; this exits with
    status 2 and one ``error: ...`` line (:func:`reid.conf.store.compose_error`). A sweep (``-m``) is
    checked with the first value of each swept option. Set ``REID_DEBUG=1`` to see Hydra's own report.
    """
    import sys

    from hydra._internal.utils import get_args_parser

    from reid.errors import ConfigError

    args, _ = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else list(argv))
    if (
        args.help
        or args.hydra_help
        or args.info
        or args.shell_completion
        or args.config_dir
        or os.environ.get("REID_DEBUG")
    ):
        return
    try:
        compose_config(
            _first_of_each_sweep(args.overrides) if args.multirun else args.overrides, args.config_name or config_name
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _first_of_each_sweep(overrides: Sequence[str]) -> list[str]:
    """A sweep's first job: ``model=a,b`` -> ``model=a`` (an interval sweep is left to the sweeper)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            assert override.input_line is not None  # parse_overrides records each override's line
            first.append(override.input_line)
            continue
        try:
            value = next(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - interval() sweeps cannot be enumerated: the sweeper samples them
            continue
        first.append(f"{override.get_key_element()}={value}")
    return first
