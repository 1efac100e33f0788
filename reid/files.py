"""Atomic result files: a reader sees the old file or the new one, never part of one (stdlib and reid.errors only).

A write that finds the disk, the quota or the file-size limit full ends in one :class:`DiskFullError`
line naming the file, the file system to free space on and what to do then; the old file stays whole.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from reid.errors import ReidError

#: what a full disk, a full quota and a file-size limit (``ulimit -f``, SIGXFSZ ignored) raise
FULL_ERRNOS = {
    errno.ENOSPC: "no space left",
    getattr(errno, "EDQUOT", 122): "disk quota exceeded",  # not defined on Windows
    errno.EFBIG: "file too large",
}
#: the fix of a failed write when the caller names none
RETRY = "run the command again"


class DiskFullError(ReidError, OSError):
    """A write that ran out of space, quota or file-size limit; the previous file is intact.

    The message names the file, the file system to free space on (or the limit to raise) and
    ``retry``, what to do then; :meth:`with_retry` changes the latter (``evaluate.py`` says to
    run it again, a checkpoint to resume with ``ckpt_path=last``).

    Attributes:
        path: the file that was being written.
        errno: ``ENOSPC``, ``EDQUOT`` or ``EFBIG``.
    """

    def __init__(self, path: str | Path, error_number: int, retry: str = RETRY) -> None:
        self.path = Path(path)
        self.retry = retry
        self.message = _full_message(self.path, error_number, retry)
        super().__init__(self.message)
        self.errno: int = error_number  # always one of FULL_ERRNOS, never OSError's None
        self.filename = str(self.path)

    def __str__(self) -> str:
        return self.message  # OSError's own would be "[Errno 28] None: '<path>'"

    def with_retry(self, retry: str) -> DiskFullError:
        """The same error, with ``retry`` as what to do once space is freed."""
        return DiskFullError(self.path, self.errno, retry)


def device_of(folder: str | Path) -> str:
    """The file system holding ``folder``, as ``df`` names it: ``/dev/vda (mounted on /, 2.1 GiB free)``."""
    folder = Path(folder).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    mount = folder
    while mount != mount.parent and not os.path.ismount(mount):
        mount = mount.parent
    device = None
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                # the last entry of a mount point is the one in effect (later mounts hide earlier ones)
                if len(fields) > 1 and fields[1].replace("\\040", " ") == str(mount):
                    device = fields[0]
    except OSError:  # not Linux: the mount point names it
        pass
    details = [f"mounted on {mount}"] if device else []
    with suppress(OSError):
        details.append(f"{_size(shutil.disk_usage(folder).free)} free")
    name = device or str(mount)
    return f"{name} ({', '.join(details)})" if details else name


def _size(count: float) -> str:
    """``count`` bytes in binary units, as ``df -h`` and ``ulimit`` count them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.0f} B"  # pragma: no cover - the loop returns


def _file_size_limit() -> int | None:
    """This process's ``RLIMIT_FSIZE`` in bytes, None when unlimited (or not POSIX)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _full_message(path: Path, error_number: int, retry: str) -> str:
    where = device_of(path.parent)
    kept = f"the previous {path.name} is intact" if path.exists() else "no partial file is left"
    what = f"{FULL_ERRNOS.get(error_number, os.strerror(error_number))} writing {path} ({kept})"
    limit = _file_size_limit() if error_number == errno.EFBIG else None
    if limit is not None:
        return (
            f"{what}: the file-size limit of this process is {_size(limit)} (`ulimit -f`); raise it "
            f"(`ulimit -f unlimited`) or free space on {where}, then {retry}"
        )
    if error_number == getattr(errno, "EDQUOT", 122):
        return f"{what}: free space within your quota on {where} (or have the quota raised), then {retry}"
    return f"{what}: free space on {where} then {retry}"


@contextmanager
def retry_when_full(retry: str) -> Iterator[None]:
    """Within the block, a :class:`DiskFullError` says ``retry`` is what to do once space is freed."""
    try:
        yield
    except DiskFullError as err:
        raise err.with_retry(retry) from err


def full_disk_error(err: BaseException) -> int | None:
    """The errno when ``err`` or an exception it was raised from is a full disk, quota or file-size limit.

    torch.save reports a failed write as a ``RuntimeError`` raised while handling the ``OSError``.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return current.errno
        stack += [current.__cause__, current.__context__]
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | Path) -> None:
    """Makes a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path, write: Callable[[IO[bytes]], Any], durable: bool = True, *, retry: str = RETRY
) -> Path:
    """Writes ``path`` by calling ``write(handle)`` on a temporary file beside it, then renaming it into place.

    A failure at any point (a full disk, a file-size limit, an exception in ``write``, the
    process being killed) leaves the previous ``path`` untouched and no temporary file behind
    (except after a kill: a ``.<name>.*.partial`` that no reader looks at). The temporary name is
    unique, so concurrent writers never share it. ``durable`` fsyncs the file and its folder.

    Raises:
        DiskFullError: the disk, the quota or the file-size limit was full (one line naming the
            file, the file system and ``retry``, what to do once space is freed).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as err:  # no room even for an empty file (inodes or quota used up)
        if err.errno is not None and err.errno in FULL_ERRNOS:
            raise DiskFullError(target, err.errno, retry) from err
        raise
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are as readable as any
        os.replace(temporary, target)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        full = full_disk_error(err)
        if full is not None:
            raise DiskFullError(target, full, retry) from err
        raise
    if durable:
        fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | Path, text: str, durable: bool = True, *, retry: str = RETRY) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda stream: stream.write(data), durable=durable, retry=retry)


def atomic_write_json(
    path: str | Path, document: Any, durable: bool = True, *, retry: str = RETRY, **dump_options: Any
) -> Path:
    """Writes ``document`` as JSON to ``path`` atomically; the text is made before the file is touched."""
    return atomic_write_text(path, json.dumps(document, **dump_options) + "\n", durable=durable, retry=retry)


def atomic_save_image(image: Any, path: str | Path) -> Path:
    """Saves a PIL image as PNG to ``path`` atomically."""
    return atomic_write(path, lambda stream: image.save(stream, format="PNG"))
