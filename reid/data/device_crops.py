"""Batched tensor twins of :func:`reid.data.crops.crop_regions` and of :class:`~reid.data.transforms.SampleTransform`.

The device-side data path (``data.pipeline=device``): the loader ships only the uint8 original
image, its five boxes and the sample's random draws, and the crops are cut on the device in one
``grid_sample`` call.  Pure torch (no OpenCV, albumentations or torchvision); every function
takes a batch and, where the CPU path draws at random, the draws as tensors, so a batch is
reproducible from the per-sample seeds whichever device runs it (:meth:`SampleTransform.draw`
draws them on the CPU, for both paths).

Conventions, the CPU path's:

* boxes are (x1, y1, x2, y2) in continuous pixel coordinates, pixel i covering [i, i + 1)
  (not inclusive corners): output pixel u of a box of width w samples the source at
  x = x1 + (u + 0.5) (x2 - x1) / w, i.e. ``grid_sample(align_corners=False)`` on the
  image's own pixel grid, the half-pixel shifts of :func:`~reid.data.crops.box_to_crop_matrix`;
* bilinear, with the taps outside the image taking the fill colour (OpenCV's
  ``BORDER_CONSTANT``): the image minus the fill is sampled with zero padding, then the fill is
  added back, so pixels near the border blend with the fill exactly as ``cv2.warpAffine`` does;
* the default fill, ``"mean"``, is the image's channel means rounded to whole numbers
  (``cv2.mean`` given as the border value of a uint8 image, which OpenCV rounds);
* images carry 0-255 values (uint8, or any float dtype holding the same values), RGB.

A batch of originals of different sizes is one zero-padded canvas (B, 3, H, W) plus each
image's true ``sizes`` (B, 2) as (height, width) (:func:`pad_images` builds both from a list):
the taps beyond an image's true size read the fill, never the canvas.

Agreement with the CPU path, measured by tests/test_device_crops.py on rendered persons (0-255
units; after normalisation, times the gain):

* crops against :func:`~reid.data.crops.crop_regions`: at most 0.5 + 2e-3 with OpenCV 5, whose
  ``warpAffine`` interpolates in floating point, so its uint8 crop is this module's value rounded
  (the 2e-3: both sides compute source positions in float32).  OpenCV 4 (4.10 to 4.12
  measured) quantises source positions to 1/32 pixel: up to 4.7 on rendered persons (mean
  0.3), 7 on per-pixel noise, and at most 255 * 2 / 64 + 0.5 in theory;
* normalised (``SampleTransform(train=False)``, all three modes): the crop difference plus the
  shift of the per-image means (their mean of the CPU crop's rounding, ~2e-3), i.e. at most about
  0.51 * gain: 2.0e-3 for ``mean_subtract`` / ``none`` at scale 1/255, 8.8e-3 for ``imagenet``;
* flip: bit-exact, the same crop mirrored; translation: at most 1.0 * gain (OpenCV 5): the CPU
  path rounds the crop to uint8 and then the shifted crop again.  The pixels a translation
  brings in take the normalisation's offset unrounded, so they become exactly 0 as
  SampleTransform's docstring intends; its uint8 ``warpAffine`` rounds that fill (up to 0.5 * gain).

Colour jitter, random erasing and the wiring into the loader and the data module's
``on_after_batch_transfer`` are in :mod:`reid.data.device_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Normalization = Literal["mean_subtract", "imagenet", "none"]
#: ``"mean"`` (each image's rounded channel means), one number, three numbers, or a (B, 3) / (3,) tensor
Fill = str | float | Sequence[float] | torch.Tensor
#: the same constants as reid.data.transforms (kept equal by tests/test_device_crops.py; no cv2 import here)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pad_images(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Put (3, H_i, W_i) images on one zero canvas: ``(canvas (B, 3, max H, max W), sizes (B, 2))``.

    ``sizes`` holds each image's (height, width) as int64, on the images' device.
    """
    if not images:
        raise ValueError("pad_images needs at least one image")
    for image in images:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"each image must be (3, H, W), got {tuple(image.shape)}")
    height = max(int(image.shape[1]) for image in images)
    width = max(int(image.shape[2]) for image in images)
    first = images[0]
    canvas = first.new_zeros((len(images), 3, height, width))
    for i, image in enumerate(images):
        canvas[i, :, : image.shape[1], : image.shape[2]] = image
    sizes = torch.tensor([tuple(image.shape[1:]) for image in images], dtype=torch.int64, device=first.device)
    return canvas, sizes


def _inside(images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: the pixels of each canvas that belong to its image."""
    rows = torch.arange(images.shape[2], device=images.device)
    cols = torch.arange(images.shape[3], device=images.device)
    sizes = sizes.to(images.device)
    inside = (rows[None, :, None] < sizes[:, 0, None, None]) & (cols[None, None, :] < sizes[:, 1, None, None])
    return inside[:, None]


def image_means(images: torch.Tensor, sizes: torch.Tensor | None = None, *, rounded: bool = True) -> torch.Tensor:
    """(B, 3) float32 channel means of each image over its true size; ``rounded``: to whole numbers.

    uint8 images are summed in int64 and rounded half to even in integers, exactly as OpenCV rounds
    ``cv2.mean`` when it is a uint8 image's border value.
    """
    if sizes is not None:
        images = torch.where(_inside(images, sizes), images, images.new_zeros(()))
        count = (sizes[:, 0] * sizes[:, 1]).to(images.device)
    else:
        count = torch.full((images.shape[0],), images.shape[2] * images.shape[3], device=images.device)
    if images.dtype == torch.uint8:
        total = images.sum(dim=(2, 3), dtype=torch.int64)
        count = count.to(torch.int64)[:, None]
        if not rounded:
            return total.to(torch.float32) / count.to(torch.float32)
        quotient = torch.div(total, count, rounding_mode="floor")
        twice_rest = 2 * (total - quotient * count)
        up = (twice_rest > count) | ((twice_rest == count) & (quotient % 2 == 1))
        return (quotient + up.to(torch.int64)).to(torch.float32)
    means = images.to(torch.float32).sum(dim=(2, 3)) / count.to(torch.float32)[:, None]
    return torch.round(means) if rounded else means


def fill_values(images: torch.Tensor, fill: Fill, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The (B, 3) float32 fill colour of each image (see :data:`Fill`)."""
    batch = images.shape[0]
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill must be 'mean', a number, 3 numbers or a tensor, got {fill!r}")
        return image_means(images, sizes)
    values = torch.as_tensor(fill, dtype=torch.float32, device=images.device)
    if values.ndim == 0:
        values = values.expand(3)
    if values.shape not in ((3,), (batch, 3)):
        raise ValueError(f"fill must be one number, 3 numbers or (B, 3), got shape {tuple(values.shape)}")
    return values.expand(batch, 3)


def _box_grid(boxes: torch.Tensor, size: tuple[int, int], canvas: tuple[int, int]) -> torch.Tensor:
    """(B, K * h * w, 2) grid_sample coordinates of boxes (B, K, 4) resized to ``size`` (h, w)."""
    (h, w), (height, width) = size, canvas
    boxes = boxes.to(torch.float32)
    u = (torch.arange(w, device=boxes.device, dtype=torch.float32) + 0.5) / w
    v = (torch.arange(h, device=boxes.device, dtype=torch.float32) + 0.5) / h
    x1, y1, x2, y2 = boxes.unbind(-1)
    # source x (continuous) = x1 + u (x2 - x1); align_corners=False normalises it as 2 x / W - 1
    gx = (2.0 / width) * (x1[..., None] + u * (x2 - x1)[..., None]) - 1.0  # (B, K, w)
    gy = (2.0 / height) * (y1[..., None] + v * (y2 - y1)[..., None]) - 1.0  # (B, K, h)
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)
    return grid.reshape(boxes.shape[0], -1, 2)


def _sample(
    images: torch.Tensor, grid: torch.Tensor, fill: torch.Tensor, sizes: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """Bilinear samples (B, 3, P) of images at grid (B, P, 2), with the fill outside each image's true size."""
    offset = fill.to(dtype)[:, :, None, None]
    shifted = images.to(dtype) - offset
    if sizes is not None:
        shifted = torch.where(_inside(images, sizes), shifted, shifted.new_zeros(()))
    out = F.grid_sample(
        shifted, grid.to(dtype)[:, None], mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (B, 3, 1, P)
    return out[:, :, 0] + offset[..., 0]


def _check(images: torch.Tensor, boxes: torch.Tensor, count: int | None) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    expected = f"({images.shape[0]}, {count if count else 'K'}, 4)"
    if boxes.ndim != 3 or boxes.shape[0] != images.shape[0] or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be {expected} (x1, y1, x2, y2 per image), got {tuple(boxes.shape)}")
    if count is not None and boxes.shape[1] != count:
        raise ValueError(f"boxes must be {expected}: whole body then the four parts, got {tuple(boxes.shape)}")


def crop_boxes(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    fill: Fill = "mean",
    *,
    sizes: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Cut K boxes out of each image, each resized to ``size``: (B, K, 3, h, w) of ``dtype``, 0-255 values.

    Args:
        images: (B, 3, H, W) uint8 or float canvas, any memory format.
        boxes: (B, K, 4) (x1, y1, x2, y2) in pixels of each image, pixel i covering [i, i + 1).
        size: (height, width) of every crop.
        fill: colour of the pixels outside the image (:data:`Fill`).
        sizes: (B, 2) true (height, width) of each image on the canvas; None: the whole canvas.
        dtype: floating dtype of the computation and output; float32 is the measured one (in
            float16 / bfloat16 the sampling positions are rounded too: grid_sample takes the
            grid in the images' dtype).
    """
    _check(images, boxes, None)
    grid = _box_grid(boxes.to(images.device), size, (images.shape[2], images.shape[3]))
    out = _sample(images, grid, fill_values(images, fill, sizes), sizes, dtype)
    return out.view(images.shape[0], 3, boxes.shape[1], *size).transpose(1, 2).contiguous()


def crop_regions_batch(
    images: torch.Tensor,
    boxes: torch.Tensor,
    whole_size: tuple[int, int] = (384, 192),
    part_size: tuple[int, int] = (96, 192),
    fill: Fill = "mean",
    *,
    sizes: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batched :func:`~reid.data.crops.crop_regions`, in one ``grid_sample`` call.

    Args:
        images: (B, 3, H, W) uint8 or float canvas (see :func:`pad_images`).
        boxes: (B, 5, 4): whole body, then the four parts.
        whole_size: (height, width) of the whole-body crop (default: the paper's 384x192).
        part_size: (height, width) of each part crop (default 96x192).
        fill: colour of the pixels outside the image (:data:`Fill`).
        sizes: (B, 2) true (height, width) of each image on the canvas; None: the whole canvas.
        dtype: floating dtype of the computation and output.

    Returns:
        ``(whole, parts)``: (B, 3, h0, w0) and (B, 4, 3, h, w) of ``dtype`` with 0-255 values.
    """
    _check(images, boxes, 5)
    boxes = boxes.to(images.device)
    canvas = (images.shape[2], images.shape[3])
    grid = torch.cat([_box_grid(boxes[:, :1], whole_size, canvas), _box_grid(boxes[:, 1:], part_size, canvas)], 1)
    out = _sample(images, grid, fill_values(images, fill, sizes), sizes, dtype)
    batch, split = images.shape[0], whole_size[0] * whole_size[1]
    whole = out[:, :, :split].reshape(batch, 3, *whole_size)
    parts = out[:, :, split:].reshape(batch, 3, 4, *part_size).transpose(1, 2).contiguous()
    return whole, parts


# --------------------------------------------------------------------------- SampleTransform's pieces


def flip(crops: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror (horizontally) the crops (B, ..., w) of the samples whose ``flips`` (B,) bool is set."""
    if flips.shape != (crops.shape[0],):
        raise ValueError(f"flips must be ({crops.shape[0]},) bool, got {tuple(flips.shape)}")
    mask = flips.to(device=crops.device, dtype=torch.bool).view(-1, *([1] * (crops.ndim - 1)))
    return torch.where(mask, crops.flip(-1), crops)


def translate(crops: torch.Tensor, shifts: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Shift crops by (dx, dy) pixels, bilinear, bringing in ``fill``: output (x, y) shows input (x - dx, y - dy).

    SampleTransform's ``warpAffine`` translation, batched.  Crops that do not move are returned
    unchanged (no resampling).

    Args:
        crops: (B, 3, h, w) or (B, K, 3, h, w) float.
        shifts: (B, 2) or (B, K, 2) offsets (dx, dy) in pixels of each crop, fractional allowed.
        fill: (B, 3) colour brought in (SampleTransform: the normalisation's offset).
    """
    if crops.ndim not in (4, 5) or crops.shape[-3] != 3 or shifts.shape != (*crops.shape[:-3], 2):
        raise ValueError(f"crops (B, [K,] 3, h, w) and shifts (B, [K,] 2), got {tuple(crops.shape)}, {shifts.shape}")
    h, w = crops.shape[-2:]
    flat = crops.reshape(-1, 3, h, w)
    moves = shifts.to(device=crops.device, dtype=torch.float32).reshape(-1, 2)
    colour = fill.to(device=crops.device, dtype=crops.dtype)
    if crops.ndim == 5:
        colour = colour[:, None].expand(-1, crops.shape[1], 3)
    colour = colour.reshape(-1, 3, 1, 1)
    u = torch.arange(w, device=crops.device, dtype=torch.float32) + 0.5
    v = torch.arange(h, device=crops.device, dtype=torch.float32) + 0.5
    gx = (2.0 / w) * (u - moves[:, :1]) - 1.0  # (N, w)
    gy = (2.0 / h) * (v - moves[:, 1:]) - 1.0  # (N, h)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1).to(crops.dtype)
    rows = (moves != 0).any(dim=1).nonzero().flatten()  # resample only the crops that move
    if rows.numel() == 0:
        return crops
    paint = colour.index_select(0, rows)
    shifted = F.grid_sample(
        flat.index_select(0, rows) - paint, grid.index_select(0, rows), mode="bilinear", align_corners=False
    )
    return flat.index_copy(0, rows, shifted + paint).reshape(crops.shape)


def region_shifts(
    boxes: torch.Tensor, whole_size: tuple[int, int], part_size: tuple[int, int], shift: torch.Tensor
) -> torch.Tensor:
    """(B, 5, 2) per-crop shifts for a whole-crop shift (B, 2): the whole's, then each part's through the boxes.

    SampleTransform's part mapping: one whole-crop pixel is (x2 - x1) / w0 source pixels, i.e.
    (x2 - x1) / w0 * w / (px2 - px1) part pixels (a flip mirrors the boxes but not these scales).
    """
    boxes = boxes.to(device=shift.device, dtype=torch.float32)
    span = boxes[..., 2:] - boxes[..., :2]  # (B, 5, 2) box widths and heights
    whole_px = span[:, :1] / torch.tensor([whole_size[1], whole_size[0]], device=shift.device, dtype=torch.float32)
    part_px = span[:, 1:] / torch.tensor([part_size[1], part_size[0]], device=shift.device, dtype=torch.float32)
    scales = torch.cat([torch.ones_like(whole_px), whole_px / part_px], dim=1)
    return shift.to(torch.float32)[:, None, :] * scales


def normalization(
    whole: torch.Tensor,
    mode: Normalization = "mean_subtract",
    mean: Sequence[float] | None = None,
    scale: float = 1.0 / 255.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(offset, gain)`` (B, 3) with normalised = (pixel - offset) * gain, as SampleTransform.

    ``mean_subtract``: the whole-body crop's channel means (or the fixed ``mean``), gain ``scale``;
    ``imagenet``: 255 * ImageNet mean and 1 / (255 * std); ``none``: 0 and ``scale``.
    """
    batch, device = whole.shape[0], whole.device
    if mode == "imagenet":
        offset = 255.0 * torch.tensor(IMAGENET_MEAN, device=device)
        gain = 1.0 / (255.0 * torch.tensor(IMAGENET_STD, device=device))
    elif mode == "mean_subtract":
        if mean is None:
            return whole.to(torch.float32).mean(dim=(2, 3)), torch.full((batch, 3), scale, device=device)
        offset = torch.tensor([float(v) for v in mean], device=device)
        gain = torch.full((3,), scale, device=device)
    elif mode == "none":
        offset, gain = torch.zeros(3, device=device), torch.full((3,), scale, device=device)
    else:
        raise ValueError(f"unknown normalize {mode!r}; choose one of mean_subtract, imagenet, none")
    return offset.expand(batch, 3), gain.expand(batch, 3)


def normalize(crops: torch.Tensor, offset: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """(crops - offset) * gain for crops (B, 3, h, w) or (B, K, 3, h, w) and per-sample (B, 3) offset and gain."""
    shape = (crops.shape[0], *([1] * (crops.ndim - 4)), 3, 1, 1)
    gain = gain.to(crops.dtype).view(shape)
    return torch.addcmul(-offset.to(crops.dtype).view(shape) * gain, crops, gain)  # one pass over the crops


def sample_transform(
    whole: torch.Tensor,
    parts: torch.Tensor,
    boxes: torch.Tensor | None = None,
    *,
    flips: torch.Tensor | None = None,
    shifts: torch.Tensor | None = None,
    mode: Normalization = "mean_subtract",
    mean: Sequence[float] | None = None,
    scale: float = 1.0 / 255.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SampleTransform's flip, translation and normalisation, batched, in its order, for the given draws.

    Args:
        whole: (B, 3, h0, w0) whole-body crops, 0-255 (:func:`crop_regions_batch`).
        parts: (B, 4, 3, h, w) part crops, 0-255.
        boxes: (B, 5, 4) boxes the crops were cut from; needed with ``shifts``.
        flips: (B,) bool, the samples to mirror; None: none.
        shifts: (B, 2) (dx, dy) translation of the whole-body crop in its pixels (0 where it did not
            fire), mapped into the parts by :func:`region_shifts`; None: none.
        mode: the normalisation (:func:`normalization`).
        mean: fixed RGB mean (0-255) for ``mean_subtract``; None: each whole-body crop's means.
        scale: the gain of ``mean_subtract`` and ``none``.
    """
    if flips is not None:
        whole, parts = flip(whole, flips), flip(parts, flips)
    offset, gain = normalization(whole, mode, mean, scale)
    if shifts is not None:
        if boxes is None:
            raise ValueError("a translation needs the boxes the crops were cut from")
        whole_size, part_size = (whole.shape[-2], whole.shape[-1]), (parts.shape[-2], parts.shape[-1])
        moves = region_shifts(boxes, whole_size, part_size, shifts.to(whole.device))
        whole, parts = translate(whole, moves[:, 0], offset), translate(parts, moves[:, 1:], offset)
    return normalize(whole, offset, gain), normalize(parts, offset, gain)
