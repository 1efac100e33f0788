"""Entry points: `reid-train`/`reid-evaluate` (Hydra apps over the packaged configs) and the tools' shared compose."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from reid.schema import compose_error, register_schemas

# ${reid.cwd:}: the working directory, also where Hydra has not set up a job yet (a sweep's folder)
OmegaConf.register_new_resolver("reid.cwd", os.getcwd, replace=True)
# the typed schemas that the YAML files extend (`defaults: [train_schema, ...]`) must be in Hydra's
# ConfigStore before anything composes
register_schemas()

# the configs travel inside the package (package data), so an installed `reid` has them;
# the repository's top-level `conf` is a link to this folder
CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(overrides: Sequence[str], config_name: str | None = "train") -> DictConfig:
    """Composes ``conf/<config_name>.yaml`` with Hydra overrides, paths rooted at the working directory.

    ``config_name=None`` composes only what the overrides add (``+model=intra``: one group).

    ``paths.*`` normally come from Hydra's runtime (only set under ``hydra.main``); here the
    working directory stands in for both the project root and the output folder.
    """
    return compose_configs([overrides], config_name)[0]


def compose_configs(override_lists: Sequence[Sequence[str]], config_name: str | None = "train") -> list[DictConfig]:
    """:func:`compose_config` for each list of overrides, with Hydra set up once (it is the slow part)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import open_dict

    # inside a running Hydra app (a tool composing the model list, say) Hydra is already set up:
    # compose from the packaged configs anyway, then hand the app its own state back
    outer = get_gh_backup() if GlobalHydra.instance().is_initialized() else None
    if outer is not None:
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            configs = [compose(config_name=config_name, overrides=list(overrides)) for overrides in override_lists]
    except HydraException as err:
        raise compose_error(err) from None
    finally:
        if outer is not None:
            restore_gh_from_backup(outer)
    for cfg in configs:
        if "paths" in cfg:
            with open_dict(cfg):
                cfg.paths.root_dir = str(Path.cwd())
                cfg.paths.output_dir = str(Path.cwd())
    return configs


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from reid.runner import run_cli, train

    metrics = run_cli(train, cfg)
    key = str(cfg.get("optimized_metric") or "val/mAP").split("/")[-1]
    return metrics.get(key)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def _evaluate(cfg: DictConfig) -> None:
    from reid.runner import evaluate, run_cli

    run_cli(evaluate, cfg)


def train_main() -> None:
    """``reid-train`` / ``python train.py``: train a model; returns the optimised metric to sweepers."""
    from reid.runner import configure_wandb_env

    check_command_line("train")
    configure_wandb_env()
    _train()


def evaluate_main() -> None:
    """``reid-evaluate`` / ``python evaluate.py``: score a checkpoint or saved features."""
    check_command_line("evaluate")
    _evaluate()


def check_command_line(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Composes the command line's config once before Hydra does: a bad key, value or option is one line.

    Hydra reports a composition error over several lines without the fix; this exits with
    status 2 and one ``error: ...`` line (:func:`reid.schema.compose_error`). A sweep (``-m``) is
    checked with the first value of each swept option. Set ``REID_DEBUG=1`` to see Hydra's own report.
    """
    import os
    import sys

    from hydra._internal.utils import get_args_parser

    from reid.schema import ConfigError

    args, _ = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else list(argv))
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_dir or os.environ.get("REID_DEBUG"):
        return
    try:
        compose_config(_first_of_each_sweep(args.overrides) if args.multirun else args.overrides,
                       args.config_name or config_name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _first_of_each_sweep(overrides: Sequence[str]) -> list[str]:
    """A sweep's first job: ``model=a,b`` -> ``model=a`` (an interval sweep is left to the sweeper)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            first.append(override.input_line)
            continue
        try:
            value = next(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - interval() sweeps cannot be enumerated: the sweeper samples them
            continue
        first.append(f"{override.get_key_element()}={value}")
    return first
