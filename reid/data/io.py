"""Image reading: any file a data set ships -> (H, W, 3) uint8 RGB, or one clear error naming the file."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from PIL import Image, UnidentifiedImageError

from reid.errors import ReidError

BAD_IMAGE_FIX = "re-extract or delete it, or set data.on_bad_sample=skip"

#: How thoroughly a data module checks its images at set-up (``data.verify_images``): ``decode``
#: decodes every image once, so a truncated or garbled pixel stream is found before training;
#: ``header`` reads only the header (fast; a bad pixel stream then fails mid-epoch).
VerifyMode = Literal["decode", "header"]
VERIFY_MODES: tuple[str, ...] = get_args(VerifyMode)

# Modes Pillow hands back for 16-bit grayscale PNG/TIFF files.
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class CorruptImageError(ReidError, ValueError):
    """An image file that is empty, truncated, undecodable or in an unsupported pixel format."""


def _check_exists(path: Path) -> None:
    if not path.is_file():
        if path.is_symlink():  # listed in the data set's folder, so an unreadable image, not a missing one
            raise CorruptImageError(f"image {path} is {_broken_link(path)}: {BAD_IMAGE_FIX}")
        raise FileNotFoundError(f"image {path} does not exist: re-extract the data set or fix the record's path")
    if path.stat().st_size == 0:
        raise CorruptImageError(f"image {path} is empty (0 bytes): {BAD_IMAGE_FIX}")


def _broken_link(path: Path) -> str:
    """What is wrong with the symbolic link ``path`` that leads to no file, in words."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"a symbolic link loop that never reaches a file ({path.name} -> {os.readlink(path)} -> ...)"
        return f"a symbolic link to {os.readlink(path)}, which does not exist"
    return f"a symbolic link to {os.readlink(path)}, which is not a file"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image as an (H, W, 3) uint8 RGB array, whatever its stored format.

    Conversions: grayscale and palette images become RGB; an alpha channel is dropped (the
    stored colour is kept; ReID crops carry no meaningful transparency); 16-bit images keep
    their high byte (``value // 256``, which is also what Pillow does for 16-bit RGB PNGs).
    EXIF orientation is ignored, as in the reference ReID loaders.

    Args:
        path: the image file.

    Returns:
        A writable C-contiguous array of shape (H, W, 3), dtype uint8, channels in RGB order.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptImageError: the file is empty, truncated, not an image, or in an unsupported
            pixel format; the message names the file and the fix.
    """
    path = Path(path)
    _check_exists(path)
    try:
        with Image.open(path) as image:
            image.load()  # decodes now, so a truncated file fails here and not later
            return _to_rgb8(image, path)
    except CorruptImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow reports truncated/garbled data as OSError (UnidentifiedImageError is one too).
        raise CorruptImageError(f"image {path} cannot be decoded ({err}): {BAD_IMAGE_FIX}") from err


def _to_rgb8(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise CorruptImageError(
                f"image {path} has 32-bit integer pixels outside the 16-bit range: convert it to 8-bit RGB "
                "or delete it, or set data.on_bad_sample=skip"
            )
        gray = (values >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        raise CorruptImageError(
            f"image {path} has floating-point pixels (mode F), which have no agreed 8-bit scale: "
            "convert it to 8-bit RGB or delete it, or set data.on_bad_sample=skip"
        )
    # L, 1, P, PA, LA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV: Pillow's conversion drops alpha.
    return np.array(image.convert("RGB"), dtype=np.uint8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Reads only the header of an image and returns its ``(width, height)``.

    Used at set-up to compute regions without decoding every pixel. A truncated pixel stream
    is not detected here (only a missing, empty or unrecognisable header); :func:`read_image`
    catches the rest.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptImageError: the file is empty or its header is not an image's.
    """
    path = Path(path)
    _check_exists(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"image {path} has no readable image header ({err}): {BAD_IMAGE_FIX}") from err
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"image {path} has zero size ({width}x{height}): {BAD_IMAGE_FIX}")
    return int(width), int(height)


def verify_image(path: str | os.PathLike) -> tuple[int, int]:
    """Decodes an image fully, exactly as :func:`read_image` will, and returns its ``(width, height)``.

    Used at set-up (``data.verify_images=decode``) so that a file whose header is fine but whose
    pixel stream is truncated or garbled is found before training, not in a loader worker mid-epoch.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptImageError: :func:`read_image` cannot read it, or it has no pixels.
    """
    height, width = read_image(path).shape[:2]
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"image {path} has zero size ({width}x{height}): {BAD_IMAGE_FIX}")
    return int(width), int(height)
