"""Checkpoint files: integrity (zip CRCs), the newest intact one of a run folder, safe loading (``weights_only``)."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import torch

from reid.errors import ReidError
from reid.names import CHECKPOINT_CONFIG_KEY
from reid.trusted import check_stored_config

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
# last.ckpt, the last.prev.ckpt it replaced (and last-v1.ckpt... should a version counter ever be switched on)
RESUME_PATTERN = "last*.ckpt"
PREVIOUS_SUFFIX = ".prev.ckpt"
# where checkpoints keep the resolved run config (plain containers): evaluate, export and
# ReIDModule.load_from_checkpoint rebuild the network from it
CONFIG_KEY = CHECKPOINT_CONFIG_KEY


class CheckpointLoadError(ReidError, RuntimeError):
    """A checkpoint that cannot be loaded safely."""


def checkpoint_problem(path: str | Path) -> str | None:
    """What is wrong with the checkpoint file ``path`` (None: a whole, intact archive).

    A checkpoint is a zip archive (``torch.save``): a truncated file has no central directory,
    and every member carries a CRC-32, so bytes changed anywhere inside are found (this reads
    the whole file: about a second per 500 MB).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist()):
                return "not a torch checkpoint (no data.pkl in the archive)"
            damaged = archive.testzip()
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    except zipfile.BadZipFile:
        return "truncated or not a zip archive (no central directory at its end)"
    except (zipfile.LargeZipFile, RuntimeError, ValueError, EOFError) as err:
        return f"damaged ({err})"
    if damaged is not None:
        return f"corrupt (CRC mismatch in {damaged})"
    return None


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a whole, intact ``torch.save`` archive (see :func:`checkpoint_problem`)."""
    return checkpoint_problem(path) is None


def find_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest intact checkpoint of a run directory to resume from, or None when it has none.

    ``last.ckpt`` is rewritten at every epoch end and every ``every_n_train_steps`` steps
    (``conf/callbacks/model_checkpoint.yaml``), and the one it replaced stays as
    ``last.prev.ckpt``. A truncated or corrupt file is skipped with a warning naming the damage,
    and the next newest ``last*.ckpt``, then any other checkpoint (the best by validation mAP),
    is taken: resuming from an older checkpoint trains the lost steps again.

    Raises:
        CheckpointCorruptError: the folder holds checkpoints, but none of them is intact.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return None

    def newest_first(paths: Any) -> list[Path]:
        return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)

    lasts = newest_first(folder.glob(RESUME_PATTERN))
    lasts = [p for p in lasts if not p.name.endswith(PREVIOUS_SUFFIX)] + [
        p for p in lasts if p.name.endswith(PREVIOUS_SUFFIX)
    ]
    others = newest_first(p for p in folder.glob("*.ckpt") if p not in lasts)
    damaged: list[str] = []
    for candidate in lasts + others:
        problem = checkpoint_problem(candidate)
        if problem is None:
            if damaged:
                log.warning("resuming from the older %s instead", candidate.name)
            return candidate
        damaged.append(f"{candidate.name} is {problem}")
        log.warning("skipping checkpoint %s: %s", candidate, problem)
    if damaged:
        raise CheckpointCorruptError(
            f"no intact checkpoint to resume from in {folder}: {'; '.join(damaged)}; start the run afresh "
            "in a new folder (or pass ckpt_path=<an intact .ckpt>)"
        )
    return None


class CheckpointCorruptError(ReidError, FileNotFoundError):
    """A run folder's checkpoints are all truncated or corrupt (a FileNotFoundError: nothing usable found)."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint safely: one that needs code to unpickle, or whose stored config names code, is refused.

    ``path`` is a checkpoint file or a run folder (its newest intact checkpoint). The archive's
    CRCs are checked first: a truncated or corrupt file is named as such.
    """
    path = Path(path)
    if path.is_dir():
        found = find_resume_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in the run folder {path} (looked in {path / 'checkpoints'})")
        log.info("using %s (the newest intact checkpoint of %s)", found, path)
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass ckpt_path=<run dir>/checkpoints/last.ckpt)")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointLoadError(
            f"checkpoint {path} is {problem}: it cannot be used; take another one (its run folder's "
            "last.prev.ckpt or best_*.ckpt) or train again"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError or RuntimeError depending on the payload
        raise CheckpointLoadError(
            f"refusing to load {path}: it is not a plain weights checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); only load checkpoints you trust, re-saved as weights"
        ) from None
    if isinstance(checkpoint, dict):
        # plain data can still name code for Hydra to run: refused here, before anyone builds from it
        check_stored_config(checkpoint.get(CONFIG_KEY), str(path))
    return checkpoint
