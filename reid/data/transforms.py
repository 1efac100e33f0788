"""Per-sample augmentation and normalisation of the five crops, applied consistently, to network tensors.

Paper-faithful default: no augmentation (the paper names none), the resize is done by
:func:`reid.data.crops.crop_regions`, then each image "is normalised by subtracting its channel
means".  Choices where the paper is silent (all keyword options of :class:`SampleTransform`):

* "its channel means" is read as per image: the channel means of the whole-body crop,
  subtracted from all five crops (one mean per sample, so a part keeps its brightness relative
  to the body: dark trousers stay dark).  ``mean=(r, g, b)`` switches to a fixed data-set mean;
  ``normalize="imagenet"`` uses ImageNet mean / std instead.
* Values are then multiplied by ``scale`` (1/255: inputs in about [-1, 1]).
* Inputs are RGB (convert OpenCV's BGR when reading); colour jitter assumes RGB.

Every random decision is drawn once per sample and applied to all five crops:

* horizontal flip (``hflip``): each crop is mirrored; as Eq. 2 regions and strips share one
  x-range, this equals cropping the mirrored image.  No keypoints are flipped here (if a pose
  is ever flipped, :func:`reid.pose.flip_keypoints` also swaps left/right joints);
* colour jitter (``color_jitter``, albumentations ``ColorJitter``) on the five crops stacked
  into one image, so they share the factors and even the contrast pivot (the stack's mean);
  if the widths differ, one ``Compose`` with ``additional_targets`` shares the factors;
* random translation (``pad_crop``) by up to ``translate`` of the crop size, mapped into each
  part through the boxes (needs ``boxes``);
* random erasing (``random_erasing``, Zhong et al. 2020: area 2-40 %, aspect 0.3-3.3) of one
  rectangle of the whole-body crop and of the same image area in each part (needs ``boxes``).
  Erased pixels take the normalisation's zero colour, i.e. become 0 (``erasing_fill="mean"``),
  or one random solid colour per rectangle (``"random"``: an occluding object rather than a
  hole), or the same place of another image of the batch (``"paste"``: an occluder with the
  camera's own texture, noise and blur, pasted once the batch is collated, by
  :func:`reid.data.device_batch.paste_occluders`); translated-in pixels always become 0. The
  share of each part crop left unerased is the self-supervised visibility label of
  ``model.visibility_target=erasing`` (VPM's idea: the augmentation knows what it hid), returned
  by :meth:`SampleTransform.with_visibility`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Annotated, Literal, cast, get_args

import albumentations as A
import cv2
import numpy as np
import torch
import torch.utils.data
from annotated_types import Ge, Gt, Interval

Normalization = Literal["mean_subtract", "imagenet", "none"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
#: a probability in [0, 1]
Probability = Annotated[float, Interval(ge=0, le=1)]
#: what an erased rectangle is filled with: the normalisation's zero colour, a random solid colour,
#: or the same rectangle of another image of the batch
ErasingFill = Literal["mean", "random", "paste"]
ERASING_FILLS: tuple[str, ...] = get_args(ErasingFill)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SampleDraws:
    """One sample's random decisions, in the whole-body crop's pixels (see :meth:`SampleTransform.draw`).

    Attributes:
        flipped: mirror the five crops.
        shift: the whole-body crop's translation (dx, dy) in pixels, or None.
        erase: the erased rectangle (top, left, bottom, right) of the whole-body crop, or None.
        erase_colour: its solid RGB colour (``erasing_fill="random"``); None: the normalisation's offset, rounded.
    """

    flipped: bool
    shift: tuple[float, float] | None
    erase: tuple[int, int, int, int] | None
    erase_colour: tuple[int, int, int] | None


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value}")
    return float(value)


class SampleTransform:
    """Augment and normalise one sample's crops: ``(whole, parts[, boxes]) -> (tensor, tensor)``.

    Args:
        train: False turns every augmentation off (evaluation), whatever the probabilities say,
            so one option set can configure both.
        normalize: ``"mean_subtract"`` (default, paper), ``"imagenet"`` or ``"none"``.
        mean: fixed RGB data-set mean (0-255) for ``mean_subtract``; None: per-image means.
        scale: factor applied after mean subtraction (``mean_subtract`` and ``none``).
        hflip: probability of a horizontal flip.
        color_jitter: probability of colour jitter.
        brightness, contrast, saturation, hue: jitter strengths (albumentations ``ColorJitter``;
            defaults are torchreid's 0.2 / 0.15 / 0 / 0).
        pad_crop: probability of a random translation.
        translate: largest translation, as a fraction of the crop width and height.
        random_erasing: probability of erasing one rectangle.
        erasing_area: range of the erased area as a fraction of the whole-body crop.
        erasing_aspect: range of the erased rectangle's height / width.
        erasing_fill: ``mean`` (the normalisation's zero), ``random`` (a solid colour drawn per
            rectangle) or ``paste`` (the same place of the batch's previous image, filled once the
            batch is collated; see :func:`reid.data.device_batch.paste_occluders`).
        seed: seed of the random decisions; None: fresh entropy.  In DataLoader workers the
            generators are re-seeded from the worker's seed, so workers do not repeat each other.
    """

    def __init__(
        self,
        *,
        train: bool = True,
        normalize: Normalization = "mean_subtract",
        mean: Annotated[tuple[float, float, float] | None, Ge(0)] = None,
        scale: Annotated[float, Gt(0)] = 1.0 / 255.0,
        hflip: Probability = 0.0,
        color_jitter: Probability = 0.0,
        brightness: Annotated[float, Ge(0)] = 0.2,
        contrast: Annotated[float, Ge(0)] = 0.15,
        saturation: Annotated[float, Ge(0)] = 0.0,
        hue: Annotated[float, Interval(ge=0, le=0.5)] = 0.0,
        pad_crop: Probability = 0.0,
        translate: Annotated[float, Interval(ge=0, lt=1)] = 0.125,
        random_erasing: Probability = 0.0,
        erasing_area: Annotated[tuple[float, float], Interval(gt=0, le=1)] = (0.02, 0.4),
        erasing_aspect: Annotated[tuple[float, float], Gt(0)] = (0.3, 3.3),
        erasing_fill: ErasingFill = "mean",
        seed: Annotated[int | None, Interval(ge=0, le=2**32 - 1)] = None,
    ) -> None:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if mean is not None and len(mean) != 3:
            raise ValueError(f"mean must be three RGB values (0-255), got {mean!r}")
        if erasing_fill not in ERASING_FILLS:
            raise ValueError(f"unknown erasing_fill {erasing_fill!r}; choose one of {', '.join(ERASING_FILLS)}")
        if not 0.0 <= translate < 1.0:
            raise ValueError(f"translate is a fraction of the crop size in [0, 1), got {translate}")
        if not 0.0 < erasing_area[0] <= erasing_area[1] < 1.0 or not 0.0 < erasing_aspect[0] <= erasing_aspect[1]:
            raise ValueError(f"bad erasing ranges: area {erasing_area}, aspect {erasing_aspect}")
        self.train = bool(train)
        self.normalize = normalize
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.scale = float(scale)
        on = 1.0 if self.train else 0.0
        self.hflip = on * _check_probability("hflip", hflip)
        self.color_jitter = on * _check_probability("color_jitter", color_jitter)
        self.pad_crop = on * _check_probability("pad_crop", pad_crop)
        self.translate = float(translate)
        self.random_erasing = on * _check_probability("random_erasing", random_erasing)
        self.erasing_area = (float(erasing_area[0]), float(erasing_area[1]))
        self.erasing_aspect = (float(erasing_aspect[0]), float(erasing_aspect[1]))
        self.erasing_fill = erasing_fill
        # the jitter ranges, as albumentations' ColorJitter draws its factors (the device path draws them itself)
        self.jitter_ranges = (
            (max(0.0, 1.0 - brightness), 1.0 + brightness),
            (max(0.0, 1.0 - contrast), 1.0 + contrast),
            (max(0.0, 1.0 - saturation), 1.0 + saturation),
            (-hue, hue),
        )
        self.seed = seed
        self._jitter = A.ColorJitter(brightness, contrast, saturation, hue, p=self.color_jitter)
        self._stacked_jitter = A.Compose([self._jitter], seed=seed)
        self._separate_jitter = A.Compose(
            [self._jitter],
            additional_targets={f"part{i}": "image" for i in range(4)},
            is_check_shapes=False,
            seed=seed,
        )
        self._rng = np.random.default_rng(seed)
        self._seeded_for: tuple[int, int] | None = None
        self._sample_seeded = False

    @property
    def needs_boxes(self) -> bool:
        """Whether calls must pass the sample's boxes (translation or erasing enabled)."""
        return self.pad_crop > 0 or self.random_erasing > 0

    def __repr__(self) -> str:
        names = ("train", "normalize", "mean", "scale", "hflip", "color_jitter", "pad_crop", "translate")
        options = ", ".join(f"{k}={getattr(self, k)!r}" for k in (*names, "random_erasing"))
        return f"SampleTransform({options})"

    # ------------------------------------------------------------------ randomness

    def reseed(self, seed: int) -> None:
        """Seeds the next sample's random decisions (the data set calls it with a per-sample seed).

        Once called, the per-worker re-seeding is off: every sample's augmentation then depends on
        its seed only, not on which worker draws it or on what that worker drew before.
        """
        self._sample_seeded = True
        seed = int(seed) % 2**32
        self._rng = np.random.default_rng(seed)
        if self.color_jitter > 0:  # re-seeding albumentations has a per-sample cost: only when it draws
            self._stacked_jitter.set_random_seed(seed)
            self._separate_jitter.set_random_seed((seed + 1) % 2**32)

    def _reseed_in_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is None or self._sample_seeded:
            return
        key = (os.getpid(), int(info.seed))
        if self._seeded_for == key:
            return
        self._seeded_for = key
        entropy = [int(info.seed), self.seed if self.seed is not None else 0]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        self._rng = np.random.default_rng(seed)
        self._stacked_jitter.set_random_seed(seed)
        self._separate_jitter.set_random_seed(seed + 1)

    # ------------------------------------------------------------------ pieces

    def _offset_and_gain(self, whole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (offset, gain) with output = (pixel - offset) * gain."""
        if self.normalize == "imagenet":
            offset = 255.0 * np.asarray(IMAGENET_MEAN)
            gain = 1.0 / (255.0 * np.asarray(IMAGENET_STD))
        elif self.normalize == "mean_subtract":
            offset = np.asarray(self.mean if self.mean is not None else cv2.mean(whole)[:3])
            gain = np.full(3, self.scale)
        else:
            offset, gain = np.zeros(3), np.full(3, self.scale)
        return offset.astype(np.float32), gain.astype(np.float32)

    @staticmethod
    def _part_mapping(
        boxes: np.ndarray, whole_shape: tuple[int, int], part_shape: tuple[int, int], flipped: bool
    ) -> list[tuple[float, float, float, float]]:
        """For each part: (scale_x, offset_x, scale_y, offset_y) with part_px = whole_px * scale + offset."""
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (5, 4):
            raise ValueError(f"boxes must have shape (5, 4), got {boxes.shape}")
        if flipped:  # mirror about x = 0; the crops were mirrored, so their boxes are too
            boxes = boxes.copy()
            boxes[:, [0, 2]] = -boxes[:, [2, 0]]
        (h0, w0), (h, w) = whole_shape, part_shape
        wx1, wy1, wx2, wy2 = boxes[0]
        mapping = []
        for x1, y1, x2, y2 in boxes[1:]:
            # whole px u -> source X = wx1 + u (wx2 - wx1) / w0 -> part px (X - x1) w / (x2 - x1)
            sx = (wx2 - wx1) / w0 * w / (x2 - x1)
            sy = (wy2 - wy1) / h0 * h / (y2 - y1)
            mapping.append((sx, (wx1 - x1) * w / (x2 - x1), sy, (wy1 - y1) * h / (y2 - y1)))
        return mapping

    def _erase_rectangle(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        for _ in range(10):
            area = self._rng.uniform(*self.erasing_area) * height * width
            aspect = math.exp(self._rng.uniform(math.log(self.erasing_aspect[0]), math.log(self.erasing_aspect[1])))
            eh = int(round(math.sqrt(area * aspect)))
            ew = int(round(math.sqrt(area / aspect)))
            if 0 < eh < height and 0 < ew < width:
                top = int(self._rng.integers(0, height - eh + 1))
                left = int(self._rng.integers(0, width - ew + 1))
                return top, left, top + eh, left + ew
        return None

    @staticmethod
    def _shift(image: np.ndarray, dx: float, dy: float, fill: tuple[float, ...]) -> np.ndarray:
        matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
        return cv2.warpAffine(
            image,
            matrix,
            (image.shape[1], image.shape[0]),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=fill,
        )

    # ------------------------------------------------------------------ draws

    def draw(self, whole_shape: tuple[int, int]) -> SampleDraws:
        """Draws one sample's flip, translation and erasing from the transform's generator.

        The order is fixed (flip, translation, erasing rectangle, erasing colour), so a sample
        seeded by :meth:`reseed` gets the same draws on the CPU path and on the device path
        (:mod:`reid.data.device_batch`). Colour jitter draws from albumentations' own generator.

        Args:
            whole_shape: (height, width) of the whole-body crop.
        """
        self._reseed_in_worker()
        h0, w0 = whole_shape
        flipped = self.hflip > 0 and bool(self._rng.random() < self.hflip)
        shift = None
        if self.pad_crop > 0 and self._rng.random() < self.pad_crop:
            dx = self._rng.uniform(-self.translate, self.translate) * w0
            dy = self._rng.uniform(-self.translate, self.translate) * h0
            shift = (float(dx), float(dy))
        erase, colour = None, None
        if self.random_erasing > 0 and self._rng.random() < self.random_erasing:
            erase = self._erase_rectangle(h0, w0)
            if erase is not None and self.erasing_fill == "random":
                colour = cast("tuple[int, int, int]", tuple(int(c) for c in self._rng.integers(0, 256, 3)))
        return SampleDraws(flipped, shift, erase, colour)

    def draw_jitter(self) -> tuple[tuple[float, float, float, float], tuple[int, int, int, int]]:
        """The device path's colour jitter draws: (brightness, contrast, saturation, hue shift) and their order.

        Drawn from the transform's generator (after :meth:`draw`); unchanged (1, 1, 1, 0) when the
        jitter does not fire. The CPU path never calls it: its jitter draws from albumentations.
        """
        if self.color_jitter <= 0 or self._rng.random() >= self.color_jitter:
            return (1.0, 1.0, 1.0, 0.0), (0, 1, 2, 3)
        b, c, s, h = (float(self._rng.uniform(low, high)) for low, high in self.jitter_ranges)
        order = cast("tuple[int, int, int, int]", tuple(int(k) for k in self._rng.permutation(4)))
        return (b, c, s, h), order

    def part_rectangles(
        self, draws: SampleDraws, boxes: np.ndarray, whole_shape: tuple[int, int], part_shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Where the erased rectangle falls in each part crop, and the share of each part left unerased.

        Returns:
            ``(rectangles, unerased)``: (4, 4) int64 rows (top, left, bottom, right) in part-crop
            pixels (empty when top == bottom or left == right), and (4,) float32 shares.
        """
        rectangles = np.zeros((4, 4), dtype=np.int64)
        unerased = np.ones(4, dtype=np.float32)
        if draws.erase is None:
            return rectangles, unerased
        top, left, bottom, right = draws.erase
        h, w = part_shape
        for i, (sx, ox, sy, oy) in enumerate(self._part_mapping(boxes, whole_shape, part_shape, draws.flipped)):
            # Round the mapped edges so that equal-scale crops erase exactly the same pixels.
            r0 = min(max(int(round(top * sy + oy)), 0), h)
            r1 = min(max(int(round(bottom * sy + oy)), 0), h)
            c0 = min(max(int(round(left * sx + ox)), 0), w)
            c1 = min(max(int(round(right * sx + ox)), 0), w)
            rectangles[i] = (r0, c0, r1, c1)
            unerased[i] = 1.0 - (r1 - r0) * (c1 - c0) / (h * w)
        return rectangles, unerased

    # ------------------------------------------------------------------ call

    def __call__(
        self, whole: np.ndarray, parts: np.ndarray, boxes: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one sample: ``(whole, parts)`` tensors (see :meth:`with_visibility`)."""
        whole_t, parts_t, _ = self.with_visibility(whole, parts, boxes)
        return whole_t, parts_t

    def with_visibility(
        self, whole: np.ndarray, parts: np.ndarray, boxes: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transform one sample, and say how much of each part crop the erasing left (see :meth:`with_erasing`)."""
        whole_t, parts_t, unerased, _ = self.with_erasing(whole, parts, boxes)
        return whole_t, parts_t, unerased

    def with_erasing(
        self, whole: np.ndarray, parts: np.ndarray, boxes: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transform one sample, and say where the erasing fell in each part crop and how much it left.

        Args:
            whole: (h0, w0, 3) uint8 RGB whole-body crop.
            parts: (4, h, w, 3) uint8 RGB part crops.
            boxes: (5, 4) boxes the crops were cut from; required when translation or erasing is on.

        Returns:
            ``(whole, parts, unerased, rectangles)``: float32 tensors of shapes (3, h0, w0),
            (4, 3, h, w) and (4,), the share of each part crop's pixels that no erased rectangle
            covers (1 when nothing was erased), and the (5, 4) int64 erased rectangle of each crop,
            whole-body first (top, left, bottom, right; all 0 when nothing was erased): the parts'
            are the dense label of ``model.visibility_target=erasing_map``. With
            ``erasing_fill="paste"`` the rectangles are left unpainted here: the batch fills them
            (:func:`reid.data.device_batch.paste_occluders`).
        """
        if whole.ndim != 3 or whole.shape[2] != 3 or whole.dtype != np.uint8:
            raise ValueError(f"whole must be an (h, w, 3) uint8 array, got {whole.dtype} {whole.shape}")
        if parts.ndim != 4 or parts.shape[0] != 4 or parts.shape[3] != 3 or parts.dtype != np.uint8:
            raise ValueError(f"parts must be a (4, h, w, 3) uint8 array, got {parts.dtype} {parts.shape}")
        if boxes is None and self.needs_boxes:
            raise ValueError(
                "SampleTransform with pad_crop or random_erasing needs the sample's boxes: "
                "call transform(whole, parts, boxes)"
            )
        self._reseed_in_worker()
        h0, w0 = whole.shape[:2]
        h, w = parts.shape[1:3]
        draws = self.draw((h0, w0))

        if w == w0:
            # One tall image: flip and jitter touch all five crops identically.
            stacked = np.concatenate([whole, parts.reshape(4 * h, w, 3)], axis=0)
            if draws.flipped:
                stacked = cv2.flip(stacked, 1)
            if self.color_jitter > 0:
                stacked = self._stacked_jitter(image=stacked)["image"]
            crops = [stacked[:h0]] + [stacked[h0 + i * h : h0 + (i + 1) * h] for i in range(4)]
        else:
            crops = [whole] + [parts[i] for i in range(4)]
            if draws.flipped:
                crops = [cv2.flip(c, 1) for c in crops]
            if self.color_jitter > 0:
                out = self._separate_jitter(image=crops[0], **{f"part{i}": crops[i + 1] for i in range(4)})
                crops = [out["image"]] + [out[f"part{i}"] for i in range(4)]

        offset, gain = self._offset_and_gain(crops[0])
        fill = tuple(float(v) for v in offset)
        if draws.shift is not None:
            assert boxes is not None  # checked on entry: pad_crop > 0 needs boxes
            dx, dy = draws.shift
            crops[0] = self._shift(crops[0], dx, dy, fill)
            for i, (sx, _, sy, _) in enumerate(self._part_mapping(boxes, (h0, w0), (h, w), draws.flipped)):
                crops[i + 1] = self._shift(crops[i + 1], dx * sx, dy * sy, fill)
        unerased = np.ones(4, dtype=np.float32)
        rectangles = np.zeros((5, 4), dtype=np.int64)
        if draws.erase is not None:
            assert boxes is not None  # checked on entry: random_erasing > 0 needs boxes
            rectangles[0] = draws.erase
            rectangles[1:], unerased = self.part_rectangles(draws, boxes, (h0, w0), (h, w))
            if self.erasing_fill != "paste":
                colour = np.round(fill) if draws.erase_colour is None else np.asarray(draws.erase_colour)
                crops = [np.array(c, copy=True) for c in crops]
                for i, (r0, c0, r1, c1) in enumerate(rectangles):
                    crops[i][r0:r1, c0:c1] = colour

        # Reorder to CHW while still uint8 (a quarter of the bytes), then normalise in place.
        offset_t = torch.from_numpy(offset).view(3, 1, 1)
        gain_t = torch.from_numpy(gain).view(3, 1, 1)
        whole_t = torch.from_numpy(np.ascontiguousarray(crops[0].transpose(2, 0, 1))).to(torch.float32)
        parts_t = torch.from_numpy(np.ascontiguousarray(np.stack(crops[1:]).transpose(0, 3, 1, 2))).to(torch.float32)
        whole_t, parts_t = whole_t.sub_(offset_t).mul_(gain_t), parts_t.sub_(offset_t).mul_(gain_t)
        return whole_t, parts_t, torch.from_numpy(unerased), torch.from_numpy(rectangles)
