"""Crash-safe training: atomic checkpoints, `ckpt_path=last|auto`, RNG states and the W&B run id across resumes.

A run killed at any moment (SIGKILL included) can be resumed with
``python train.py hydra.run.dir=<its run dir> ckpt_path=last`` and continues as if it had
never stopped:

* :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file next to it and
  renames it into place, so ``last.ckpt`` is always the previous or the new checkpoint, never
  half of one; it loads checkpoints with ``weights_only=True``.
* the training loader saves its sampler state and the trainer's batch count in the checkpoint
  (:class:`reid.data.samplers.ResumableDataLoader`), so the interrupted epoch goes on with the
  batches that were next;
* :class:`RandomStateCheckpoint` saves the global random generators (dropout draws from torch's),
  so the resumed steps draw what the uninterrupted ones would have;
* :func:`wandb_resume_kwargs` keeps one W&B run id per run directory.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from reid.checkpoints import (  # noqa: F401 - re-exported: where resume code looked for them
    CHECKPOINT_DIR,
    PREVIOUS_SUFFIX,
    RESUME_PATTERN,
    CheckpointCorruptError,
    checkpoint_problem,
    find_resume_checkpoint,
    is_complete_checkpoint,
    load_checkpoint,
)
from reid.files import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_run_id"
# ckpt_path values that are not paths
LAST, AUTO = "last", "auto"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints atomically; reads them with ``weights_only=True``.

    Lightning's own writer streams into the target file, so a process killed while writing
    leaves a truncated ``last.ckpt`` and the run cannot resume. Here the checkpoint goes to a
    uniquely named ``.<name>.*.partial`` in the same folder, is flushed and fsynced, then
    ``os.replace``-d over the target (atomic on POSIX and Windows within one file system), and
    the folder is fsynced (:func:`reid.files.atomic_write`).
    Remote (``scheme://``) paths fall back to Lightning's writer.

    Loading always uses ``weights_only=True`` (the project stores plain containers only): a
    checkpoint that would need code to unpickle is refused with
    :class:`reid.checkpoints.CheckpointLoadError` and nothing in it is executed.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Saves ``checkpoint`` to ``path`` via a temporary file and an atomic rename.

        Raises:
            reid.files.DiskFullError: the disk (quota, file-size limit) is full; the previous
                checkpoint is intact and the message says to resume with ``ckpt_path=last``.
        """
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        if target.name.startswith("last") and not target.name.endswith(PREVIOUS_SUFFIX) and target.is_file():
            # the checkpoint being replaced stays as last.prev.ckpt (a hard link: no copy), the
            # fallback should the new one ever be found corrupt
            previous = target.with_name(target.stem + PREVIOUS_SUFFIX)
            link = target.with_name(f".{previous.name}.link")
            link.unlink(missing_ok=True)
            try:
                os.link(target, link)
                os.replace(link, previous)
            except OSError:  # no hard links on this file system: no fallback copy
                link.unlink(missing_ok=True)
        run_dir = target.parent.parent if target.parent.name == CHECKPOINT_DIR else target.parent
        atomic_write(
            target,
            lambda stream: torch.save(checkpoint, stream),
            retry=(
                "resume with ckpt_path=last "
                f"(`python train.py <same overrides> hydra.run.dir={run_dir} ckpt_path=last`)"
            ),
        )

    def load_checkpoint(
        self, path: Any, map_location: Any | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Loads ``path`` with ``weights_only=True`` whatever ``weights_only`` says (see the class doc)."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return load_checkpoint(path)  # on the CPU; Lightning moves the states where they belong


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from, for the ``ckpt_path`` of the config.

    Args:
        ckpt_path: None (start afresh); ``last`` (the newest ``last.ckpt`` of ``output_dir``, an
            error when there is none); ``auto`` (the same, or start afresh when there is none);
            a run directory (its newest ``last.ckpt``); or a checkpoint file.
        output_dir: this run's directory (``paths.output_dir``); re-run a killed run in its own
            directory with ``hydra.run.dir=<run dir>``.

    Raises:
        FileNotFoundError: ``last`` found nothing, or the path does not exist.
    """
    if ckpt_path is None or str(ckpt_path).strip() in ("", "null", "None"):
        return None
    value = str(ckpt_path).strip()
    if value in (LAST, AUTO):
        found = find_resume_checkpoint(output_dir)
        if found is not None:
            log.info("resuming from %s (ckpt_path=%s)", found, value)
            return str(found)
        if value == AUTO:
            log.info("ckpt_path=auto: no checkpoint in %s, starting afresh", Path(output_dir) / CHECKPOINT_DIR)
            return None
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoints/last.ckpt in the run directory {output_dir}; resume a run with "
            "`python train.py hydra.run.dir=<that run's directory> ckpt_path=last` (the directory holding .hydra/ "
            "and checkpoints/), use ckpt_path=auto to start afresh when there is none, or pass a checkpoint file"
        )
    path = Path(value).expanduser()
    if path.is_dir():
        found = find_resume_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"ckpt_path={value}: no checkpoints/last.ckpt in that directory")
        return str(found)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={value}: no such checkpoint (pass a .ckpt file, a run directory, `last` or `auto`)"
        )
    return str(path)


class RandomStateCheckpoint(pl.Callback):
    """Saves the global random generators (torch CPU and CUDA, numpy, Python) in checkpoints and restores them.

    Lightning does not checkpoint them, so a resumed run would draw other dropout masks than
    the uninterrupted run from the resume on. Stored as tensors and plain lists (loadable with
    ``weights_only=True``). Under DDP, rank 0's state is saved and every rank gets it back:
    ranks seeded alike (``seed_everything``) draw alike.
    """

    def state_dict(self) -> dict[str, Any]:
        """The current generator states."""
        numpy_state = np.random.get_state(legacy=False)
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "bit_generator": numpy_state["bit_generator"],
                "key": numpy_state["state"]["key"].tolist(),
                "pos": int(numpy_state["state"]["pos"]),
                "has_gauss": int(numpy_state["has_gauss"]),
                "gauss": float(numpy_state["gauss"]),
            },
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the saved generator states (Lightning calls it while restoring a checkpoint)."""
        torch.set_rng_state(state_dict["torch"])
        saved = state_dict["numpy"]
        np.random.set_state(
            {
                "bit_generator": saved["bit_generator"],
                "state": {"key": np.asarray(saved["key"], dtype=np.uint32), "pos": saved["pos"]},
                "has_gauss": saved["has_gauss"],
                "gauss": saved["gauss"],
            }
        )
        python_state = state_dict["python"]
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state(state_dict["cuda"])


def new_wandb_id() -> str:
    """A fresh W&B-style run id (8 lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def wandb_resume_kwargs(
    output_dir: str | Path, resuming: bool = True, new_id: Callable[[], str] = new_wandb_id
) -> dict[str, Any]:
    """``id`` and ``resume`` for ``WandbLogger``: a resumed run logs into the W&B run it started.

    The id lives in ``<output_dir>/wandb_run_id``, written when a run starts afresh (rank 0
    only). A resumed run (``resuming``) reads it back; when it is missing (a run directory
    from before this file existed) a new id is made and stored.
    """
    path = Path(output_dir) / WANDB_ID_FILE
    if resuming and path.is_file():
        run_id = path.read_text().strip()
        if run_id:
            log.info("resuming W&B run %s (from %s)", run_id, path)
            return {"id": run_id, "resume": "allow"}
    run_id = new_id()
    # Lightning sets rank_zero_only.rank at import; lightning_utilities' typing of the function omits it
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, run_id + "\n")
    return {"id": run_id, "resume": "allow"}


def add_wandb_resume(logger_cfg: Any, output_dir: str | Path, resuming: bool) -> None:
    """Sets ``id`` and ``resume`` on every ``WandbLogger`` entry of the ``logger`` config group.

    An ``id`` set by the user wins. ``logger_cfg`` is the (struct-unlocked) DictConfig group.
    """
    if not logger_cfg:
        return
    for conf in logger_cfg.values():
        target = str(conf.get("_target_", "")) if hasattr(conf, "get") else ""
        if target.endswith("WandbLogger") and not conf.get("id"):
            for key, value in wandb_resume_kwargs(output_dir, resuming).items():
                conf[key] = value
