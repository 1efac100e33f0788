"""A decoded-image cache: every image of a data set decoded once into one file that readers memory-map.

On disk, one immutable pair per content key ``<set>-<key>`` (``<set>`` hashes the ordered absolute
paths, ``<key>`` also the format version and each file's size and ``st_mtime_ns``, so a changed file
gives a new key): ``.u8``, all images' RGB bytes one after the other, and ``.json``, the manifest
(version, paths, stats, each image's height/width/offset, total byte count). Concurrency:

* a pair is written under unique ``.partial`` names and published with ``os.replace``, data first;
  a reader trusts it only if the manifest matches the paths, the stats and the data file's size;
* an ``flock`` on ``<set>-<key>.lock`` lets one process build a key; the others wait, then find it;
* readers (and the builder, from before publishing) hold a shared ``flock`` on the data file; after
  a build, the set's other keys are removed only if their data file can be locked exclusively.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import operator
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from reid.data.io import read_image
from reid.errors import ConfigError
from reid.files import fsync_dir

FORMAT_VERSION = 1
_logger = logging.getLogger(__name__)


def _digest(document: Any) -> str:
    return hashlib.sha256(json.dumps(document).encode()).hexdigest()[:16]


def _stats(paths: list[str]) -> list[list[int]]:
    """Each file's ``[size, st_mtime_ns]``; a missing file raises the reader's one-line error."""
    stats = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            read_image(path)  # raises FileNotFoundError / CorruptImageError naming the file and the fix
            raise
        stats.append([stat.st_size, stat.st_mtime_ns])
    return stats


def _cache_error(folder: Path, err: OSError) -> ConfigError:
    fix = "make it writable or free space, or set data.image_cache_dir to another folder"
    return ConfigError([f"the image cache folder {folder} cannot be written or locked ({err.strerror or err}): {fix}"])


def _lock_shared(path: Path) -> IO[bytes] | None:
    """The data file, opened and share-locked (no remover deletes it while held); None if absent or unreadable."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (kept open: the lock lives as long as the cache is read)
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
    except OSError:
        return None
    try:
        linked = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except OSError:
        linked = False
    if not linked:  # removed or replaced between open and lock
        handle.close()
        return None
    return handle


def _decoded(paths: list[str], workers: int) -> Iterator[np.ndarray]:
    """The images in order, decoded a few ahead in a thread pool (never the whole set in memory)."""
    workers = max(1, workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="image-cache") as pool:
        pending: deque[Future[np.ndarray]] = deque()
        for path in paths:
            pending.append(pool.submit(read_image, path))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _remove_stale(folder: Path, stem: str) -> None:
    """Removes the same set's other keys that no process is building or reading (best effort)."""
    set_id = stem.split("-")[0]
    others = {path.name.split(".")[0] for path in folder.glob(f"{set_id}-*")} - {stem}
    for other in others:
        lock_path = folder / f"{other}.lock"
        with contextlib.suppress(OSError), open(lock_path, "ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while someone builds it
            for partial in folder.glob(f"{other}.*.partial"):
                partial.unlink(missing_ok=True)
            data = folder / f"{other}.u8"
            with contextlib.suppress(FileNotFoundError), open(data, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while someone reads it
                data.unlink()
            (folder / f"{other}.json").unlink(missing_ok=True)
            lock_path.unlink()


class DecodedImages:
    """The decoded images of one data set, read through a read-only memmap of the cache's data file.

    Pickles as the file path and the per-image layout; the memmap is reopened on first access.
    """

    def __init__(
        self, path: Path, shapes: np.ndarray, offsets: np.ndarray, nbytes: int, handle: IO[bytes] | None = None
    ) -> None:
        self.path = path
        self.nbytes = nbytes
        self._shapes = shapes
        self._shapes.flags.writeable = False
        self._offsets = offsets
        self._handle = handle
        self._pixels: np.ndarray | None = None

    @classmethod
    def open(
        cls,
        paths: Sequence[str | os.PathLike],
        cache_dir: str | os.PathLike,
        *,
        workers: int = 4,
        log: Callable[[str], None] | None = None,
    ) -> DecodedImages:
        """Opens the cache of ``paths`` in ``cache_dir``, decoding them first if it is absent, stale or damaged.

        Raises:
            FileNotFoundError, CorruptImageError: an image cannot be read (from :func:`read_image`).
            ConfigError: the cache has to be built and ``cache_dir`` cannot be created or written.
        """
        folder = Path(cache_dir).absolute()
        names = [os.path.abspath(os.fspath(path)) for path in paths]
        stats = _stats(names)
        stem = f"{_digest(names)}-{_digest([FORMAT_VERSION, names, stats])}"
        found = cls._load(folder / f"{stem}.u8", folder / f"{stem}.json", names, stats)
        if found is not None:
            return found
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock = open(folder / f"{stem}.lock", "ab")  # noqa: SIM115 (closed by the with below)
        except OSError as err:
            raise _cache_error(folder, err) from err
        with lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            except OSError as err:  # a file system without locks
                raise _cache_error(folder, err) from err
            found = cls._load(folder / f"{stem}.u8", folder / f"{stem}.json", names, stats)  # built meanwhile?
            if found is None:
                start = time.perf_counter()
                found = cls._build(folder, stem, names, stats, workers)
                (log if log is not None else _logger.info)(
                    f"image cache: decoded {len(names)} images ({found.nbytes / 2**20:.1f} MiB) into {found.path} "
                    f"in {time.perf_counter() - start:.1f} s"
                )
        _remove_stale(folder, stem)
        return found

    @classmethod
    def _load(cls, data: Path, manifest: Path, names: list[str], stats: list[list[int]]) -> DecodedImages | None:
        """The published pair if it is whole and describes exactly these files, else None."""
        handle = _lock_shared(data)
        if handle is None:
            return None
        try:
            doc = json.loads(manifest.read_text())
            shapes = np.array(doc["shapes"], dtype=np.int64).reshape(len(names), 2)
            offsets = np.array(doc["offsets"], dtype=np.int64)
            sizes = shapes[:, 0] * shapes[:, 1] * 3
            whole = (
                doc["version"] == FORMAT_VERSION
                and doc["paths"] == names
                and doc["stats"] == stats
                and bool((shapes > 0).all())
                and np.array_equal(offsets, np.cumsum(sizes) - sizes)
                and int(sizes.sum()) == doc["nbytes"] == os.fstat(handle.fileno()).st_size
            )
        except (OSError, ValueError, KeyError, TypeError):
            whole = False
        if not whole:
            handle.close()
            return None
        return cls(data, shapes, offsets, int(doc["nbytes"]), handle)

    @classmethod
    def _build(cls, folder: Path, stem: str, names: list[str], stats: list[list[int]], workers: int) -> DecodedImages:
        """Decodes ``names`` into a new pair and publishes it; the caller holds the key's build lock."""
        temporaries: list[str] = []
        try:
            for partial in folder.glob(f"{stem}.*.partial"):  # left by a builder that was killed
                partial.unlink(missing_ok=True)
            fd, data_tmp = tempfile.mkstemp(prefix=f"{stem}.", suffix=".partial", dir=folder)
            temporaries.append(data_tmp)
            handle: IO[bytes] = os.fdopen(fd, "w+b")
        except OSError as err:
            raise _cache_error(folder, err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # held from before publishing: no remover takes it
            shapes, offsets, nbytes = [], [], 0
            for image in _decoded(names, workers):  # read errors propagate unchanged
                shapes.append(image.shape[:2])
                offsets.append(nbytes)
                try:
                    handle.write(np.ascontiguousarray(image).data)
                except OSError as err:
                    raise _cache_error(folder, err) from err
                nbytes += image.nbytes
            doc = {"version": FORMAT_VERSION, "paths": names, "stats": stats, "nbytes": nbytes}
            doc |= {"shapes": [[int(h), int(w)] for h, w in shapes], "offsets": offsets}
            try:
                handle.flush()
                os.fsync(fd)
                manifest_fd, manifest_tmp = tempfile.mkstemp(prefix=f"{stem}.", suffix=".partial", dir=folder)
                temporaries.append(manifest_tmp)
                with os.fdopen(manifest_fd, "w") as stream:
                    json.dump(doc, stream)
                    stream.flush()
                    os.fsync(stream.fileno())
                mask = os.umask(0)
                os.umask(mask)
                for temporary in temporaries:  # mkstemp makes 0600 files; other users may share the cache
                    os.chmod(temporary, 0o666 & ~mask)
                os.replace(data_tmp, folder / f"{stem}.u8")
                os.replace(manifest_tmp, folder / f"{stem}.json")
                fsync_dir(folder)
            except OSError as err:
                raise _cache_error(folder, err) from err
        except BaseException:
            with contextlib.suppress(OSError):  # flushing what the disk refused fails again
                handle.close()
            for temporary in temporaries:
                Path(temporary).unlink(missing_ok=True)
            raise
        layout = np.array(shapes, dtype=np.int64).reshape(-1, 2)
        return cls(folder / f"{stem}.u8", layout, np.array(offsets, dtype=np.int64), nbytes, handle)

    def _map(self) -> np.ndarray:
        """All pixels as one read-only uint8 vector, the memmap opened (and share-locked) on first use."""
        if self._pixels is None:
            if self._handle is None:  # unpickled: reopen by path
                self._handle = _lock_shared(self.path)
                if self._handle is None or os.fstat(self._handle.fileno()).st_size != self.nbytes:
                    raise FileNotFoundError(
                        f"the image cache file {self.path} was removed or changed since it was opened: run again"
                    )
            if self.nbytes:
                self._pixels = np.asarray(np.memmap(self._handle, dtype=np.uint8, mode="r", shape=(self.nbytes,)))
            else:
                self._pixels = np.zeros(0, dtype=np.uint8)
                self._pixels.flags.writeable = False
        return self._pixels

    def __len__(self) -> int:
        return len(self._shapes)

    def __getitem__(self, i: int) -> np.ndarray:
        """Image ``i`` as an (H, W, 3) uint8 RGB read-only view of the memmap."""
        index = operator.index(i)
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} out of range for {len(self)} cached images")
        height, width = (int(v) for v in self._shapes[index])
        start = int(self._offsets[index])
        return self._map()[start : start + height * width * 3].reshape(height, width, 3)

    @property
    def sizes(self) -> np.ndarray:
        """(N, 2) int64: each image's (height, width), read-only."""
        return self._shapes

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "nbytes": self.nbytes, "_shapes": self._shapes, "_offsets": self._offsets}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _handle=None, _pixels=None)
        self._shapes.flags.writeable = False
