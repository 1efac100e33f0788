"""One run, one folder: a lock while the run lives, finished runs kept, a resume's config compared with the stored one.

Over 400 lines on purpose: the lock, the provenance and the resume comparison act together in
one Hydra callback, and their order at run start is what makes a refused run change nothing.

:class:`RunDirGuard` is a Hydra callback (``conf/hydra/default.yaml``). It acts in
``on_run_start``, before Hydra writes ``.hydra/config.yaml`` and opens the log in the run folder,
so a refused run changes nothing there:

* the folder is locked (``.lock``, an ``flock`` that the system releases when the process ends,
  even by SIGKILL); a second process that finds the lock held stops with one line;
* a folder holding a run's results (``metrics.json`` or checkpoints) is not started afresh
  again: resume it (``ckpt_path=last``), pick another folder, or say ``overwrite=true``;
* a resume (``ckpt_path`` set) compares the new config with the stored one: a change to the
  network or to what it is fed (:data:`ARCHITECTURE_KEYS`) is refused, naming the keys; any other
  change is refused unless ``resume_with_changes=true``, and then logged. A record that cannot be
  read (not YAML, not a run config) is refused too: the resume could not be compared.

The guard cannot be skipped: Hydra turns an exception in a callback into a warning and runs on,
so every failure in it (a ``.lock`` that is a folder, a full disk, a bug) stops the run with one
``error:`` line and status 2 instead (set ``REID_DEBUG=1`` for the traceback).

A run's record survives a full disk: before a resume, the stored ``.hydra`` record is copied
into ``.hydra/history/<n>/`` (written to a hidden folder, fsynced, then renamed), and only then
may Hydra replace it; a failure at any byte stops the run with the old record untouched.

``overwrite=true`` replaces only after set-up: the guard moves the old results
(:data:`REPLACED`: metrics, checkpoints, logger folders, the ``.hydra`` record) into
``.replaced/`` in the run folder; the train task deletes them once its data set, model and
trainer are built (:func:`commit_replaced_results`), and evaluate's when it finished. A run
that fails before that gets them back at its exit, its own files in their place removed
(``train.log`` keeps its lines: the log is the folder's history). After a SIGKILL in between,
``.replaced/`` holds the old results and the next run started in the folder puts them back
before anything else, so they are never lost; the moves are renames, each step named by the
folder's name (``.replaced.partial``: being moved, ``.replaced.discard``: being deleted), so a
kill at any point is recovered the same way.

DDP processes other than the first (``LOCAL_RANK``/``RANK``/``SLURM_PROCID`` non-zero) share the
first one's folder and skip all of this. Multirun sweep folders are locked the same way.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any, NoReturn, cast

from omegaconf import DictConfig, OmegaConf

try:  # POSIX; elsewhere folders are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback

from reid.conf.schema import schema_default
from reid.errors import ReidError, one_line
from reid.files import atomic_write, fsync_dir
from reid.names import PROVENANCE_FILE

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
HISTORY_DIR = "history"
RECORD_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
# what overwrite=true replaces: a run's results and its record (train.log stays: the folder's history)
REPLACED = ("metrics.json", PROVENANCE_FILE, "checkpoints", "csv", "tensorboard", "pictures", "wandb_run_id") + tuple(
    f".hydra/{name}" for name in RECORD_FILES
)
# the old results while a replacing run sets up; the suffixes name a move in progress (see the module doc)
REPLACED_DIR = ".replaced"
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
# folders whose old results this process set aside (overwrite=true) and has not yet replaced
_pending_replacements: set[str] = set()


class RunFolderError(ReidError, RuntimeError):
    """The run folder cannot be used for this run (in use, finished, or resumed with another config)."""


def _refuse(message: str) -> NoReturn:
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _stop(err: Exception, folder: Path | None, key: str = "hydra.run.dir") -> NoReturn:
    """Ends the run with one line for any failure in the guard: Hydra would make it a warning and run on."""
    where = str(folder) if folder is not None else key
    if os.environ.get("REID_DEBUG"):
        traceback.print_exception(err)
    if isinstance(err, ReidError):  # the message names the file and the fix
        _refuse(str(err))
    if isinstance(err, OSError):
        detail = err.strerror or str(err)
        if err.filename:
            detail += f": {err.filename}"
        _refuse(
            f"cannot prepare the run folder {where} ({detail}); nothing was started: free some disk space or fix "
            f"the folder's permissions, or give this run another {key}"
        )
    _refuse(
        f"the check of the run folder {where} failed ({type(err).__name__}: {err}); nothing was started: give "
        f"this run another {key}, or report the bug (REID_DEBUG=1 shows the traceback)"
    )


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
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise RunFolderError(
            f"the run folder's lock {path} is not a file, so the folder cannot be locked: remove it "
            f"(`rm -r {path}`) if no run uses {folder}, then start again"
        )
    handle = open(path, "a+")  # noqa: SIM115 - kept open in _held_locks: the lock lives as long as the handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            handle.close()
            raise  # not "held by another process" (e.g. no locks on this file system): the guard reports it
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderError(
            f"the run folder {folder} is in use by {holder}; give this run its own folder "
            "(leave hydra.run.dir at its default, or pass another one)"
        ) from None
    _held_locks[str(folder)] = handle  # held even if naming the holder fails (a full disk)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()


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
    architecture: list[str] = []
    other: list[str] = []
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
    """Copies the stored ``.hydra`` record into ``.hydra/history/<n>/`` before a resume replaces it.

    The copy is whole and on disk when this returns, or absent: the files are written and fsynced
    in a hidden folder that is then renamed into place. A failure (a full disk) raises
    :class:`RunFolderError` with the record untouched, before Hydra may replace it.
    """
    record = folder / ".hydra"
    files = [record / name for name in RECORD_FILES if (record / name).is_file()]
    if not files:
        return None
    history = record / HISTORY_DIR
    try:
        history.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name) for p in history.iterdir() if p.is_dir() and p.name.isdigit()]
        target = history / f"{max(numbers, default=-1) + 1:03d}"
        partial = history / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # a copy that a killed run left unfinished
        try:
            partial.mkdir()
            for file in files:
                data = file.read_bytes()

                def write(stream: IO[bytes], data: bytes = data) -> int:
                    return stream.write(data)

                atomic_write(partial / file.name, write)
            os.rename(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        fsync_dir(history)
        fsync_dir(record)
    except OSError as err:
        what = (
            f"could not keep a copy of the run's record {record / 'config.yaml'} in {history} before this resume "
            "replaces it, so nothing was started and the record is unchanged"
        )
        if isinstance(err, ReidError):  # reid.files' disk-full error names the file system and the fix
            raise RunFolderError(f"{what}: {err}") from None
        raise RunFolderError(
            f"{what} ({err.strerror or err}): free some disk space (or fix the folder's permissions) and resume again"
        ) from None
    return target


def _read_record(path: Path) -> DictConfig:
    """The run config stored at ``path``; :class:`RunFolderError` if it cannot be one (damaged, cut short)."""
    try:
        stored = OmegaConf.load(path)
        whole = isinstance(stored, DictConfig) and all(
            isinstance(stored.get(key), DictConfig) for key in ("data", "model", "trainer")
        )
        reason = "" if whole else "it is not a run's config: data, model or trainer is missing"
    except Exception as err:  # not YAML, not UTF-8, not a file: to the user all the same
        reason = one_line(str(err))[:160] or type(err).__name__
    if not reason:
        return cast(DictConfig, stored)  # `whole` checked that it is one
    history = path.parent / HISTORY_DIR
    copies = sorted(
        (p for p in history.glob("[0-9]*") if p.name.isdigit() and (p / path.name).is_file()), key=lambda p: int(p.name)
    )
    restore = (
        f"restore it from {copies[-1] / path.name} (the record as it was before the last resume) or a backup"
        if copies
        else "restore it from a backup"
    )
    raise RunFolderError(
        f"the run's record {path} cannot be read ({reason}), so this resume cannot be compared with the run: "
        f"{restore}, delete it to resume without comparing the settings, or start a new run with another "
        "hydra.run.dir"
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _replaced(folder: Path, suffix: str = "") -> Path:
    return folder / f"{REPLACED_DIR}{suffix}"


def set_aside_results(folder: str | Path) -> Path:
    """Moves the previous run's results and record (:data:`REPLACED`) into ``<folder>/.replaced/`` (``overwrite=true``).

    They stay there until :func:`commit_replaced_results` deletes them (the new run's set-up
    passed) or :func:`restore_replaced_results` puts them back; a replacement this process has
    not committed when it exits is put back then.
    """
    folder = Path(folder).resolve()
    partial = _replaced(folder, ".partial")
    _pending_replacements.add(str(folder))  # from the first move on, a failure puts back what was moved
    _restore_at_exit_once()
    (partial / ".hydra").mkdir(parents=True, exist_ok=True)
    fsync_dir(folder)
    for name in REPLACED:
        source = folder / name
        if source.exists() or source.is_symlink():
            os.rename(source, partial / name)
    for changed in (partial / ".hydra", partial, folder / ".hydra"):
        fsync_dir(changed)
    # complete: from here on what stands under these names is the new run's, until it commits
    os.rename(partial, _replaced(folder))
    fsync_dir(folder)
    return _replaced(folder)


def restore_replaced_results(folder: str | Path) -> bool:
    """Puts back results that an ``overwrite=true`` run set aside and never replaced; False if there were none.

    Whatever stands under their names was written by that run before its set-up passed: it is
    removed. Each step can be interrupted and done again (see the module doc).
    """
    folder = Path(folder).resolve()
    aside, partial, discard = _replaced(folder), _replaced(folder, ".partial"), _replaced(folder, ".discard")
    if discard.exists():
        shutil.rmtree(discard)  # a commit that a kill cut short: the new run had passed its set-up
    restored = False
    if aside.exists():
        for name in REPLACED:
            _remove(folder / name)
        os.rename(aside, partial)  # from here on only moves back remain
        fsync_dir(folder)
    if partial.exists():
        for name in REPLACED:
            kept = partial / name
            if kept.exists() or kept.is_symlink():
                _remove(folder / name)
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                os.rename(kept, folder / name)
        for changed in (folder / ".hydra", folder):
            if changed.is_dir():
                fsync_dir(changed)
        shutil.rmtree(partial)
        restored = True
    _pending_replacements.discard(str(folder))
    return restored


def commit_replaced_results(folder: str | Path) -> bool:
    """Deletes the results that ``overwrite=true`` set aside in ``folder``: call once the new run's set-up passed.

    A no-op (False) where this process set nothing aside: no ``overwrite``, a DDP process other
    than the first, a task called without Hydra.
    """
    folder = Path(folder).resolve()
    if str(folder) not in _pending_replacements:
        return False
    discard = _replaced(folder, ".discard")
    os.rename(_replaced(folder), discard)  # the point of no return: after a kill the new run's files stand
    fsync_dir(folder)
    _pending_replacements.discard(str(folder))
    shutil.rmtree(discard, ignore_errors=True)  # what is left, the next run in the folder removes
    log.warning("overwrite=true: removed the previous run's results from %s", folder)
    return True


def _restore_pending() -> None:
    for name in sorted(_pending_replacements):
        try:
            if restore_replaced_results(Path(name)):
                log.warning(
                    "overwrite=true: the run stopped before its set-up passed; the previous results are back in %s",
                    name,
                )
        except Exception as err:  # at exit: one line, and the results stay where the next run finds them
            print(
                f"error: could not put back the previous results set aside in {_replaced(Path(name))} ({err}); "
                f"they are kept there, and the next run started in {name} puts them back",
                file=sys.stderr,
                flush=True,
            )


_exit_hook: list[bool] = []


def _restore_at_exit_once() -> None:
    if not _exit_hook:
        atexit.register(_restore_pending)
        _exit_hook.append(True)


def check_run_folder(folder: str | Path, task_cfg: DictConfig) -> None:
    """Locks ``folder`` and checks that ``task_cfg`` may run in it (see the module doc); raises RunFolderError."""
    folder = Path(folder).resolve()
    lock_folder(folder)
    # the lock is ours, so whoever set results aside and did not replace them is gone
    if restore_replaced_results(folder):
        print(
            f"warning: put back the previous results in {folder}, which an overwrite=true run stopped before its "
            f"set-up passed had set aside in {REPLACED_DIR}/",
            file=sys.stderr,
            flush=True,
        )
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
            set_aside_results(folder)
        return
    if not (stored_path.exists() or stored_path.is_symlink()):
        return  # a checkpoint from elsewhere, or a folder without a record: nothing to compare
    stored = _read_record(stored_path)
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
    """Hydra callback: see the module doc. ``hydra.callbacks.run_dir_guard`` in ``conf/hydra/default.yaml``.

    Every failure in it ends the run with one ``error:`` line (status 2): an exception would
    reach Hydra, which makes it a warning and starts the run unguarded.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Locks and checks the run folder before Hydra writes anything into it."""
        if not _is_first_process():
            return
        folder: Path | None = None
        try:
            folder = Path(str(config.hydra.run.dir)).resolve()
            task_cfg = OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"])
            check_run_folder(folder, task_cfg)
        except Exception as err:
            _stop(err, folder)

    def on_run_end(self, config: DictConfig, job_return: JobReturn | None = None, **kwargs: Any) -> None:
        """Replaces the results set aside by ``overwrite=true`` if the task finished, else puts them back.

        The train task replaces them earlier, once its set-up passed; a task ended by an error
        line (SystemExit) never gets here: they are put back at the process's exit.
        """
        if not _pending_replacements:
            return
        folder: Path | None = None
        try:
            folder = Path(str(config.hydra.run.dir)).resolve()
            if job_return is not None and job_return.status == JobStatus.COMPLETED:
                commit_replaced_results(folder)
            else:
                restore_replaced_results(folder)
        except Exception as err:
            _stop(err, folder)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Locks the sweep folder; a folder holding a sweep's results is not reused without ``overwrite=true``."""
        if not _is_first_process():
            return
        folder: Path | None = None
        try:
            folder = Path(str(config.hydra.sweep.dir)).resolve()
            lock_folder(folder)
            finished = [p for p in folder.glob("*") if p.is_dir() and has_results(p)] if folder.is_dir() else []
        except Exception as err:
            _stop(err, folder, "hydra.sweep.dir")
        if finished and not config.get("overwrite", False):
            _refuse(
                f"the sweep folder {folder} already holds results ({len(finished)} jobs with metrics.json or "
                "checkpoints): give the sweep another hydra.sweep.dir, or pass overwrite=true"
            )
