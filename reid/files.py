"""Atomic result files: a reader sees the old file or the new one, never part of one (standard library only)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


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


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], durable: bool = True) -> Path:
    """Writes ``path`` by calling ``write(handle)`` on a temporary file beside it, then renaming it into place.

    A failure at any point (a full disk, a file-size limit, an exception in ``write``, the
    process being killed) leaves the previous ``path`` untouched and no temporary file behind
    (except after a kill: a ``.<name>.*.partial`` that no reader looks at). The temporary name is
    unique, so concurrent writers never share it. ``durable`` fsyncs the file and its folder.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are as readable as any
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda stream: stream.write(data), durable=durable)


def atomic_write_json(path: str | Path, document: Any, durable: bool = True, **dump_options: Any) -> Path:
    """Writes ``document`` as JSON to ``path`` atomically; the text is made before the file is touched."""
    return atomic_write_text(path, json.dumps(document, **dump_options) + "\n", durable=durable)


def atomic_save_image(image: Any, path: str | Path) -> Path:
    """Saves a PIL image as PNG to ``path`` atomically."""
    return atomic_write(path, lambda stream: image.save(stream, format="PNG"))
