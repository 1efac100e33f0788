"""Hydra multirun x Lightning DDP: make each sweep job's DDP processes re-run that job only, with its values."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# Command-line flags of a Hydra app that are not overrides and that a DDP child needs too.
_VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# Flags that start a sweep or only print: never passed to the children.
_DROPPED_FLAGS = ("-m", "--multirun", "--cfg", "-c", "--info", "--resolve", "--package", "-p")


def hydra_config() -> DictConfig | None:
    """The running Hydra app's ``hydra`` node, or None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    # typed as the HydraConf schema; at run time it is the DictConfig node built from it
    return cast(DictConfig, HydraConfig.get()) if HydraConfig.initialized() else None


def _kept_flags(argv: list[str]) -> list[str]:
    kept: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in _VALUE_FLAGS:
            if "=" in arg:
                kept.append(arg)
            else:
                kept += argv[i : i + 2]
                i += 1
        i += 1
    return kept


def child_argv(argv: list[str], task_overrides: list[str]) -> list[str]:
    """The command line a DDP child of one sweep job runs: the job's own overrides, as a single run.

    ``argv`` is the parent's ``sys.argv`` (script first); ``task_overrides`` are the job's resolved
    overrides (``HydraConfig.get().overrides.task``: concrete values, e.g. ``model.lambda_intra=0.2``
    and an Optuna trial's sampled values, never the sweep's lists). ``hydra.mode=RUN`` keeps an
    ``hparams_search`` config, which switches Hydra to multirun, from starting a sweep in the child.
    """
    return [argv[0], *_kept_flags(argv[1:]), *task_overrides, "hydra.mode=RUN"]


def prepare_ddp_children(cfg: DictConfig) -> bool:
    """In a multirun job, rewrites what Lightning's DDP launcher will start for ranks 1..N-1.

    Lightning starts each extra process with ``sys.argv`` plus ``hydra.run.dir=<run dir>``: in
    a multirun that re-runs the whole sweep in every child, in new output directories and, under
    an unseeded Optuna sampler, with other values (lightning-hydra-template #393, #639). Here
    ``sys.argv`` becomes this job's own overrides (:func:`child_argv`) and the run directory
    becomes this job's output directory, so every rank trains the same configuration and writes
    into one directory per job. Does nothing outside a multirun, or in a DDP child (its
    ``LOCAL_RANK`` is set by the launcher). Returns True when it rewrote the command.
    """
    hydra = hydra_config()
    if hydra is None or os.environ.get("LOCAL_RANK") not in (None, "0"):
        return False
    if not hydra_mode_is_multirun():
        return False
    overrides = list(hydra.overrides.task)
    sys.argv = child_argv(list(sys.argv), overrides)
    readonly = OmegaConf.is_readonly(hydra)
    OmegaConf.set_readonly(hydra, False)
    with open_dict(hydra):
        hydra.run.dir = str(hydra.runtime.output_dir)
    OmegaConf.set_readonly(hydra, readonly)
    log.info(
        "multirun job %s: DDP processes will run `%s` in %s",
        hydra.job.num,
        " ".join(sys.argv[1:]),
        hydra.runtime.output_dir,
    )
    return True


def rank_summary(cfg: DictConfig) -> dict[str, Any]:
    """The hyper-parameters a sweep varies, as this process sees them (logged by every rank)."""
    return {
        "rank": int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))),
        "lambda_intra": cfg.model.get("lambda_intra"),
        "beta": cfg.data.get("beta"),
        "lr": cfg.model.get("optimizer", {}).get("lr"),
        "seed": cfg.get("seed"),
        "output_dir": str(cfg.paths.output_dir),
    }


# Set by Lightning's DDP launcher in the launching process (for its children to inherit).
_LAUNCHER_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "RANK",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
)


@contextmanager
def isolated_job() -> Iterator[None]:
    """Leaves no distributed state behind a training job, so the next job of a sequential sweep starts clean.

    Lightning's launcher sets ``LOCAL_RANK`` and friends in the launching process and keeps its
    process group: the next multirun job in the same process would take itself for a DDP child
    (and never start its own children) and reuse a dead group. Restores those variables and
    destroys the group on the way out.
    """
    saved = {key: os.environ.get(key) for key in _LAUNCHER_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and hydra_mode_is_multirun():
            dist.destroy_process_group()
        if hydra_mode_is_multirun():
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def hydra_mode_is_multirun() -> bool:
    """True inside a job of a Hydra multirun (in the launching process, not in a DDP child)."""
    hydra = hydra_config()
    return hydra is not None and str(hydra.mode) in ("RunMode.MULTIRUN", "MULTIRUN")


def multirun_group() -> str | None:
    """A name shared by the jobs of one multirun (``<task>/<sweep folder>``), for W&B's run groups."""
    hydra = hydra_config()
    if hydra is None or not hydra_mode_is_multirun():
        return None
    return f"{hydra.job.name}/{os.path.basename(str(hydra.sweep.dir).rstrip('/'))}"
