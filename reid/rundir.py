"""One run, one folder: a lock while the run lives, finished runs kept, a resume's config compared with the stored one.

:class:`RunDirGuard` is a Hydra callback (``conf/hydra/default.yaml``). It acts in
``on_run_start``, before Hydra writes ``.hydra/config.yaml`` and opens the log in the run folder,
so a refused run changes nothing there:

* the folder is locked (``.lock``, an ``flock`` that the system releases when the process ends,
  even by SIGKILL); a second process that finds the lock held stops with one line;
* a folder holding a run's results (``metrics.json`` or checkpoints) is not started afresh
  again: resume it (``ckpt_path=last``), pick another folder, or say ``overwrite=true``;
* a resume (``ckpt_path`` set) compares the new config with the stored one: a change to the
  network or to what it is fed (:data:`ARCHITECTURE_KEYS`) is refused, naming the keys; any other
  change is refused unless ``resume_with_changes=true``, and then logged. The stored record is
  kept in ``.hydra/history/`` before Hydra writes the new one.

DDP processes other than the first (``LOCAL_RANK``/``RANK``/``SLURM_PROCID`` non-zero) share the
first one's folder and skip all of this. Multirun sweep folders are locked the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

try:  # POSIX; elsewhere folders are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from hydra.experimental.callback import Callback

from reid.errors import ReidError
from reid.schema import schema_default

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
HISTORY_DIR = "history"
# a change to these between a run and its resume changes the network or what it is fed: refused
ARCHITECTURE_KEYS = (
    "model._target_",
    "model.net",
    "model.regions",
    "data._target_",
    "data.name",
    "data.options",
    "data.whole_size",
    "data.part_size",
    "data.regions",
)
# keys that may differ between a run and its resume without being a change of the run
RESUME_KEYS = ("ckpt_path", "resume_with_changes", "overwrite", "paths", "hydra")

# held for the life of the process (closing the file would release the lock)
_held_locks: dict[str, Any] = {}


class RunFolderError(ReidError, RuntimeError):
    """The run folder cannot be used for this run (in use, finished, or resumed with another config)."""


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _is_first_process() -> bool:
    """False in DDP / SLURM processes other than the first: they share the first one's folder."""
    return all(os.environ.get(name) in (None, "", "0") for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


def lock_folder(folder: str | Path) -> None:
    """Locks ``folder`` for this process (re-entrant); raises :class:`RunFolderError` if another process holds it."""
    folder = Path(folder).resolve()
    if str(folder) in _held_locks or fcntl is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderError(
            f"the run folder {folder} is in use by {holder}; give this run its own folder "
            "(leave hydra.run.dir at its default, or pass another one)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    _held_locks[str(folder)] = handle


def release_folder(folder: str | Path) -> None:
    """Releases a lock taken by :func:`lock_folder` (tests; a process's locks go when it ends)."""
    handle = _held_locks.pop(str(Path(folder).resolve()), None)
    if handle is not None:
        handle.close()


def has_results(folder: Path) -> bool:
    """Whether ``folder`` holds a run's results: ``metrics.json`` or a checkpoint."""
    return (folder / "metrics.json").is_file() or any((folder / "checkpoints").glob("*.ckpt"))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_changes(stored: DictConfig, new: DictConfig) -> tuple[list[str], list[str]]:
    """``(architecture changes, other changes)`` between a stored run config and a new one, as ``key: old -> new``.

    Values are compared as written (interpolations unresolved): both come from the same config
    files, so what differs is what the command lines changed.
    """
    old_flat = _flat(OmegaConf.to_container(stored, resolve=False))
    new_flat = _flat(OmegaConf.to_container(new, resolve=False))
    architecture, other = [], []
    for key in sorted(set(old_flat) | set(new_flat)):
        if _under(key, RESUME_KEYS):
            continue
        old, value = old_flat.get(key, "<absent>"), new_flat.get(key, "<absent>")
        if old == "<absent>" and value == schema_default(key):
            continue  # an option a newer config spells out, at the value the run had by default
        if old != value:
            (architecture if _under(key, ARCHITECTURE_KEYS) else other).append(f"{key}: {old} -> {value}")
    return architecture, other


def _keep_history(folder: Path) -> Path | None:
    """Copies the stored ``.hydra`` record into ``.hydra/history/<n>/`` before a resume replaces it."""
    record = folder / ".hydra"
    files = [record / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml") if (record / name).is_file()]
    if not files:
        return None
    history = record / HISTORY_DIR
    number = len([p for p in history.glob("*") if p.is_dir()]) if history.is_dir() else 0
    target = history / f"{number:03d}"
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy2(file, target / file.name)
    return target


def check_run_folder(folder: Path, task_cfg: DictConfig) -> None:
    """Locks ``folder`` and checks that ``task_cfg`` may run in it (see the module doc); raises RunFolderError."""
    lock_folder(folder)
    stored_path = folder / ".hydra" / "config.yaml"
    # evaluate.py's ckpt_path names the checkpoint to score, not a run to resume
    resuming = task_cfg.get("ckpt_path") not in (None, "", "null") and task_cfg.get("task_name") != "evaluate"
    if not resuming:
        if has_results(folder):
            if not task_cfg.get("overwrite", False):
                raise RunFolderError(
                    f"{folder} already holds a run's results (metrics.json or checkpoints): resume it with "
                    "ckpt_path=last, give this run another hydra.run.dir, or pass overwrite=true to replace them"
                )
            for name in ("metrics.json", "checkpoints", "csv", "tensorboard", "pictures", "wandb_run_id"):
                target = folder / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            log.warning("overwrite=true: removed the previous run's results from %s", folder)
        return
    if not stored_path.is_file():
        return  # a checkpoint from elsewhere, or a folder without a record: nothing to compare
    stored = OmegaConf.load(stored_path)
    architecture, other = config_changes(stored, task_cfg)
    if architecture:
        raise RunFolderError(
            f"cannot resume the run in {folder} with another network or input: {'; '.join(architecture)} "
            "(resume with the run's own settings, or start a new run)"
        )
    if other and not task_cfg.get("resume_with_changes", False):
        raise RunFolderError(
            f"resuming the run in {folder} with changed settings: {'; '.join(other)}; pass "
            "resume_with_changes=true if that is intended (the changes are then logged and the old record kept)"
        )
    kept = _keep_history(folder)
    if other:
        # logging is not configured yet (Hydra does it next): the message also goes to stderr
        message = f"resuming with changed settings (resume_with_changes=true): {'; '.join(other)}; old record in {kept}"
        print(f"warning: {message}", file=sys.stderr, flush=True)
        with open(folder / "resume_changes.log", "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


class RunDirGuard(Callback):
    """Hydra callback: see the module doc. ``hydra.callbacks.run_dir_guard`` in ``conf/hydra/default.yaml``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Locks and checks the run folder before Hydra writes anything into it."""
        if not _is_first_process():
            return
        folder = Path(str(config.hydra.run.dir)).resolve()
        task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            check_run_folder(folder, task_cfg)
        except RunFolderError as err:
            _refuse(str(err))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Locks the sweep folder; a folder holding a sweep's results is not reused without ``overwrite=true``."""
        if not _is_first_process():
            return
        folder = Path(str(config.hydra.sweep.dir)).resolve()
        try:
            lock_folder(folder)
        except RunFolderError as err:
            _refuse(str(err))
        finished = [p for p in folder.glob("*") if p.is_dir() and has_results(p)] if folder.is_dir() else []
        if finished and not config.get("overwrite", False):
            _refuse(
                f"the sweep folder {folder} already holds results ({len(finished)} jobs with metrics.json or "
                "checkpoints): give the sweep another hydra.sweep.dir, or pass overwrite=true"
            )
