"""The device path's batches: the loader ships originals, boxes and draws; the crops are cut where the network runs.

Under ``data.pipeline=device`` a loader worker does almost nothing: it reads the decoded original
(uint8, from :class:`reid.data.image_cache.DecodedImages`), its five boxes and the sample's random
draws (:func:`sample_draws`, the same generator calls as :class:`~reid.data.transforms.SampleTransform`
makes). :func:`collate_originals` puts the originals of a batch on one canvas, and
:class:`DeviceCrops`, called from the data module's ``on_after_batch_transfer`` (and by feature
extraction), cuts the five crops of the whole batch on its device and applies the flip, colour
jitter, translation, random erasing and normalisation there (:mod:`reid.data.device_crops`).

Flip, translation and erasing follow the CPU path's draws exactly (same seed, same decision,
same rectangle). Colour jitter draws its factors from the sample's generator after those (the CPU
path draws them from albumentations' own generator), so with jitter on the two paths augment
alike in distribution, not image by image; the device jitter works on unrounded 0-255 values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import numpy as np
import torch
from torch.utils.data import default_collate

from reid.data import device_crops as dc
from reid.data.transforms import SampleTransform

#: where the five crops are cut: ``cpu`` (loader workers, OpenCV) or ``device`` (the training process, batched)
Pipeline = Literal["cpu", "device"]
PIPELINES: tuple[str, ...] = get_args(Pipeline)
#: the batch keys the device path adds, turned into ``whole``/``parts`` by :class:`DeviceCrops`
ORIGINAL_KEYS = ("image", "image_size", "crop_boxes", "draws")
#: the (B, 5, 4) erased rectangles that ``erasing_fill="paste"`` leaves for :func:`paste_occluders` to fill
PASTE_KEY = "erased_paste"
#: ITU-R 601 luma, as OpenCV's RGB2GRAY (the contrast pivot and saturation's grey)
LUMA = (0.299, 0.587, 0.114)


def sample_draws(
    transform: SampleTransform, boxes: np.ndarray, whole_size: tuple[int, int], part_size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """One sample's random draws as tensors (collated per key): what a device-path worker ships.

    The flip, translation and erasing come from :meth:`SampleTransform.draw` (the CPU path's
    generator calls, in its order); the colour jitter factors are drawn after them.
    """
    draws = transform.draw(whole_size)
    erase = np.zeros((5, 4), dtype=np.int64)
    unerased = np.ones(4, dtype=np.float32)
    colour = np.full(3, np.nan, dtype=np.float32)
    if draws.erase is not None:
        erase[0] = draws.erase
        erase[1:], unerased = transform.part_rectangles(draws, boxes, whole_size, part_size)
        if draws.erase_colour is not None:
            colour[:] = draws.erase_colour
    factors, order = transform.draw_jitter()
    return {
        "flip": torch.tensor(draws.flipped),
        "shift": torch.tensor(draws.shift or (0.0, 0.0), dtype=torch.float32),
        "erase": torch.from_numpy(erase),
        "erase_colour": torch.from_numpy(colour),
        "unerased": torch.from_numpy(unerased),
        "jitter": torch.tensor(factors, dtype=torch.float32),
        "jitter_order": torch.tensor(order, dtype=torch.int64),
    }


def collate_originals(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``default_collate``, except that the (H, W, 3) originals of different sizes share one zero canvas.

    Each sample's true size travels in ``image_size``; the crops never read the padding.
    """
    images = [sample["image"] for sample in samples]
    rest = default_collate([{k: v for k, v in sample.items() if k != "image"} for sample in samples])
    height = max(int(image.shape[0]) for image in images)
    width = max(int(image.shape[1]) for image in images)
    canvas = images[0].new_zeros((len(images), height, width, 3))
    for i, image in enumerate(images):
        canvas[i, : image.shape[0], : image.shape[1]] = image
    rest["image"] = canvas
    return rest


# --------------------------------------------------------------------------- colour jitter


def _grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) luma of (N, 3, h, w) RGB."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (N, 3, h, w) 0-255 RGB by ``shift`` (N,) turns (HSV, as albumentations' hue jitter)."""
    r, g, b = images.unbind(1)
    top, _ = images.max(dim=1)
    bottom, _ = images.min(dim=1)
    chroma = top - bottom
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(top == r, ((g - b) / safe) % 6, torch.where(top == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    hue = (hue + 6 * shift.view(-1, 1, 1)) % 6
    # HSV back to RGB: each channel k = value - chroma * clamp(min(q, 4 - q), 0, 1), q = (n + hue) mod 6
    out = []
    for n in (5.0, 3.0, 1.0):
        q = (n + hue) % 6
        out.append(top - chroma * torch.clamp(torch.minimum(q, 4 - q), 0, 1))
    return torch.stack(out, dim=1)


def _jitter_op(op: int, crops: list[torch.Tensor], value: torch.Tensor, stacked: bool) -> list[torch.Tensor]:
    """One jitter operation (0 brightness, 1 contrast, 2 saturation, 3 hue) on the five crops of some samples."""
    scale = value.view(-1, 1, 1, 1)
    if op == 0:
        return [torch.clamp(c * scale, 0, 255) for c in crops]
    if op == 1:
        greys = [_grey(c) for c in crops]
        if stacked:  # one pivot: the mean luma of the five crops together, as of one stacked image
            pixels = sum(g.shape[-2] * g.shape[-1] for g in greys)
            pivot = torch.stack([g.sum(dim=(1, 2, 3)) for g in greys]).sum(dim=0).div(pixels).view(-1, 1, 1, 1)
            pivots = [pivot] * len(crops)
        else:
            pivots = [g.mean(dim=(1, 2, 3), keepdim=True) for g in greys]
        return [torch.clamp((c - p) * scale + p, 0, 255) for c, p in zip(crops, pivots, strict=True)]
    if op == 2:
        return [torch.clamp(torch.lerp(_grey(c), c, scale), 0, 255) for c in crops]
    return [torch.clamp(_hue(c, value), 0, 255) for c in crops]


def color_jitter(
    whole: torch.Tensor, parts: torch.Tensor, factors: torch.Tensor, order: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness, contrast, saturation and hue of the five crops, each sample in its own order.

    Args:
        whole: (B, 3, h0, w0) 0-255 float.
        parts: (B, 4, 3, h, w) 0-255 float.
        factors: (B, 4) brightness, contrast and saturation factors (1: unchanged) and the hue
            shift in turns (0: unchanged), as albumentations' ``ColorJitter`` draws them.
        order: (B, 4) the order of the four operations (a permutation of 0..3) per sample.

    The contrast pivot is the mean luma of the five crops together when they have the same width
    (the CPU path jitters them stacked into one image), else of each crop. Values are clipped to
    0-255 after each operation, as on uint8 images, but not rounded. Each operation runs on the
    samples it changes only.
    """
    batch, (h, w) = whole.shape[0], parts.shape[-2:]
    factors = factors.to(device=whole.device, dtype=whole.dtype)
    order = order.to(whole.device)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=whole.device, dtype=whole.dtype)
    changes = factors != identity  # (B, 4): which operations change which sample
    crops = [whole] + [parts[:, i] for i in range(4)]
    stacked = whole.shape[-1] == w
    for step in range(4):
        for op in range(4):
            rows = ((order[:, step] == op) & changes[:, op]).nonzero().flatten()
            if rows.numel() == 0:
                continue
            new = _jitter_op(op, [c.index_select(0, rows) for c in crops], factors[rows, op], stacked)
            crops = [c.index_copy(0, rows, n) for c, n in zip(crops, new, strict=True)]
    return crops[0], torch.stack(crops[1:], dim=1).reshape(batch, 4, 3, h, w)


# --------------------------------------------------------------------------- erasing


def rectangle_mask(rectangles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, height, width) bool: inside each (top, left, bottom, right) row of ``rectangles`` (N, 4)."""
    rows = torch.arange(height, device=rectangles.device).view(1, height, 1)
    cols = torch.arange(width, device=rectangles.device).view(1, 1, width)
    top, left, bottom, right = (rectangles[:, k].view(-1, 1, 1) for k in range(4))
    return ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right))[:, None]


def erase(
    whole: torch.Tensor, parts: torch.Tensor, rectangles: torch.Tensor, colour: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint each sample's rectangles (B, 5, 4) (whole, then parts; empty ones change nothing) in ``colour`` (B, 3)."""
    paint = colour.to(device=whole.device, dtype=whole.dtype).view(whole.shape[0], 3, 1, 1)
    return fill_rectangles(whole, parts, rectangles, paint, paint[:, None])


def fill_rectangles(
    whole: torch.Tensor,
    parts: torch.Tensor,
    rectangles: torch.Tensor,
    whole_fill: torch.Tensor,
    parts_fill: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``whole`` and ``parts`` with each sample's rectangles (B, 5, 4) taken from the fills (broadcast)."""
    batch, (h, w) = whole.shape[0], parts.shape[-2:]
    rectangles = rectangles.to(whole.device)
    whole = torch.where(rectangle_mask(rectangles[:, 0], *whole.shape[-2:]), whole_fill, whole)
    mask = rectangle_mask(rectangles[:, 1:].reshape(-1, 4), h, w).view(batch, 4, 1, h, w)
    return whole, torch.where(mask, parts_fill, parts)


def paste_occluders(batch: dict[str, Any]) -> dict[str, Any]:
    """``erasing_fill="paste"``: fill each sample's erased rectangles with the same place of the batch's previous image.

    The occluder then has the camera's own texture, noise and blur (a solid rectangle is found by
    its flatness, which no real occluder has), as the occluded-ReID augmentations paste other
    people and objects from the training set. Sample b takes from sample b - 1 (the first from the
    last), crop by crop and after normalisation, so both pipelines paste alike and the result is
    a function of the batch alone (exact on resume). A batch of one image pastes itself: no
    change. A batch without :data:`PASTE_KEY` is returned unchanged.
    """
    rectangles = batch.pop(PASTE_KEY, None)
    if rectangles is None or "whole" not in batch:
        return batch
    whole, parts = batch["whole"], batch["parts"]
    batch["whole"], batch["parts"] = fill_rectangles(
        whole, parts, rectangles, whole.roll(1, dims=0), parts.roll(1, dims=0)
    )
    return batch


# --------------------------------------------------------------------------- the batch


@dataclass(frozen=True)
class DeviceCrops:
    """Turns a device-path batch (originals, boxes, draws) into the CPU path's ``whole``/``parts`` batch.

    Args:
        whole_size, part_size: crop sizes (height, width).
        normalize, mean, scale: the normalisation (:class:`~reid.data.transforms.SampleTransform`'s).
        erasing: add the batch's ``part_unerased`` (the share of each part left by random erasing).
        paste: leave the erased rectangles for :func:`paste_occluders` (``erasing_fill="paste"``).
    """

    whole_size: tuple[int, int]
    part_size: tuple[int, int]
    normalize: dc.Normalization = "mean_subtract"
    mean: tuple[float, float, float] | None = None
    scale: float = 1.0 / 255.0
    erasing: bool = False
    paste: bool = False

    @classmethod
    def from_transform(
        cls, transform: SampleTransform, whole_size: tuple[int, int], part_size: tuple[int, int]
    ) -> DeviceCrops:
        """The device twin of ``transform`` for these crop sizes."""
        return cls(
            whole_size=whole_size,
            part_size=part_size,
            normalize=transform.normalize,
            mean=cast("tuple[float, float, float] | None", transform.mean),
            scale=transform.scale,
            erasing=transform.random_erasing > 0,
            paste=transform.random_erasing > 0 and transform.erasing_fill == "paste",
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Cut and augment the crops on the batch's device; returns the batch with ``whole`` and ``parts``.

        A batch without originals (the CPU path's) is returned unchanged.
        """
        if "image" not in batch:
            return batch
        images, sizes, boxes, draws = (batch.pop(key) for key in ORIGINAL_KEYS)
        images = images.permute(0, 3, 1, 2)  # shipped (B, H, W, 3): no copy in the workers
        whole, parts = dc.crop_regions_batch(images, boxes, self.whole_size, self.part_size, sizes=sizes)
        flips = draws["flip"].to(whole.device)
        if bool(flips.any()):
            whole, parts = dc.flip(whole, flips), dc.flip(parts, flips)
        factors = draws["jitter"].to(whole.device)
        if bool((factors != torch.tensor([1.0, 1.0, 1.0, 0.0], device=whole.device)).any()):
            whole, parts = color_jitter(whole, parts, factors, draws["jitter_order"])
        offset, gain = dc.normalization(whole, self.normalize, self.mean, self.scale)
        shifts = draws["shift"].to(whole.device)
        if bool((shifts != 0).any()):
            moves = dc.region_shifts(boxes, self.whole_size, self.part_size, shifts)
            whole, parts = dc.translate(whole, moves[:, 0], offset), dc.translate(parts, moves[:, 1:], offset)
        rectangles = draws["erase"].to(whole.device)
        if self.paste:
            batch[PASTE_KEY] = rectangles
        elif bool((rectangles[:, 0, 2] > rectangles[:, 0, 0]).any()):
            colour = draws["erase_colour"].to(whole.device)
            colour = torch.where(torch.isnan(colour), torch.round(offset), colour)
            whole, parts = erase(whole, parts, rectangles, colour)
        batch["whole"], batch["parts"] = dc.normalize(whole, offset, gain), dc.normalize(parts, offset, gain)
        if self.erasing:
            batch["part_unerased"], batch["part_erased"] = draws["unerased"], draws["erase"][:, 1:]
        return batch


def crop_images(
    images: Sequence[np.ndarray],
    boxes: np.ndarray,
    transform: SampleTransform,
    whole_size: tuple[int, int],
    part_size: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised crops of (H, W, 3) uint8 images of any sizes, cut on ``device`` in one batch (no augmentation)."""
    canvas, sizes = dc.pad_images([torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1) for i in images])
    canvas, sizes = canvas.to(device), sizes.to(device)
    whole, parts = dc.crop_regions_batch(
        canvas, torch.from_numpy(boxes.astype(np.float32)), whole_size, part_size, sizes=sizes
    )
    return dc.sample_transform(whole, parts, mode=transform.normalize, mean=transform.mean, scale=transform.scale)
