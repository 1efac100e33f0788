"""reid.data.device_crops: the batched tensor crops and transform equal crop_regions + SampleTransform."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from reid.data import device_crops as dc
from reid.data.crops import PART_SIZE, WHOLE_SIZE, crop_regions
from reid.data.synthetic import SyntheticParams, render_sample
from reid.data.synthetic.identities import sample_identity
from reid.data.synthetic.scene import make_camera_styles, render_backdrop
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, SampleTransform
from reid.pose.regions import image_regions

SMALL_WHOLE, SMALL_PART = (192, 96), (48, 96)  # half the paper's sizes: same scale factors' kind, a quarter the work
# OpenCV 5's warpAffine interpolates in floating point: the CPU crop is the exact value rounded to uint8.
# OpenCV 4 quantises source positions to 1/32 pixel: up to 255 * 2 / 64 + 0.5 where neighbours differ by 255.
FLOAT_WARP = int(cv2.__version__.split(".")[0]) >= 5
CROP_TOL = 0.505 if FLOAT_WARP else 9.0
# normalised: the crop's difference plus the per-image means' (the mean of the CPU crop's rounding, ~0.002)
MEAN_TOL = 0.01
# the CPU path rounds the crop, then the translated crop, and rounds the brought-in fill
TRANSLATE_TOL = 1.02 if FLOAT_WARP else 10.0


def scenes(count: int, height: int = 128, width: int = 64, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rendered persons (RGB uint8) with their Eq. 1-2 boxes from the rendered keypoints."""
    rng = np.random.default_rng(seed)
    params = SyntheticParams(height=height, width=width)
    styles = make_camera_styles(3, rng)
    out = []
    for i in range(count):
        style = styles[i % 3]
        backdrop = render_backdrop(style, 2 * height * params.supersample, 3 * width * params.supersample, rng)
        rendered = render_sample(sample_identity(rng), style, backdrop, rng, params)
        keypoints = np.asarray(rendered.keypoints, dtype=float).reshape(18, 3)
        out.append((rendered.image, image_regions(keypoints, width, height, beta=0.1)[0]))
    return out


@pytest.fixture(scope="module")
def persons() -> list[tuple[np.ndarray, np.ndarray]]:
    return scenes(6)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def cpu_path(image, boxes, whole_size, part_size, transform):
    whole, parts = crop_regions(image, boxes, whole_size, part_size)
    return (whole, parts), transform.with_visibility(whole, parts, boxes)[:2]


def crop_error(cpu: tuple[np.ndarray, np.ndarray], whole: torch.Tensor, parts: torch.Tensor) -> float:
    return max(
        float(np.abs(cpu[0] - whole.permute(1, 2, 0).numpy()).max()),
        float(np.abs(cpu[1] - parts.permute(0, 2, 3, 1).numpy()).max()),
    )


def batch(samples):
    images = torch.stack([to_tensor(image) for image, _ in samples])
    boxes = torch.from_numpy(np.stack([b for _, b in samples])).to(torch.float32)
    return images, boxes


def test_the_constants_are_the_cpu_paths():
    assert dc.IMAGENET_MEAN == IMAGENET_MEAN and dc.IMAGENET_STD == IMAGENET_STD
    defaults = dc.crop_regions_batch.__defaults__
    assert defaults is not None and defaults[:2] == (WHOLE_SIZE, PART_SIZE)


@pytest.mark.parametrize("mode", ["mean_subtract", "imagenet", "none"])
def test_crops_and_normalisation_equal_the_cpu_path_at_the_paper_sizes(persons, mode):
    images, boxes = batch(persons)
    whole, parts = dc.crop_regions_batch(images, boxes)  # paper sizes 384x192, 96x192
    norm_whole, norm_parts = dc.sample_transform(whole, parts, mode=mode)
    gain = 1 / (255 * min(IMAGENET_STD)) if mode == "imagenet" else 1 / 255
    transform = SampleTransform(train=False, normalize=mode)
    for i, (image, box) in enumerate(persons):
        cpu, (cpu_whole, cpu_parts) = cpu_path(image, box, WHOLE_SIZE, PART_SIZE, transform)
        assert crop_error(cpu, whole[i], parts[i]) <= CROP_TOL
        torch.testing.assert_close(norm_whole[i], cpu_whole, atol=(CROP_TOL + MEAN_TOL) * gain, rtol=0)
        torch.testing.assert_close(norm_parts[i], cpu_parts, atol=(CROP_TOL + MEAN_TOL) * gain, rtol=0)


def test_a_fixed_mean_normalises_like_the_cpu_path(persons):
    images, boxes = batch(persons[:2])
    whole, parts = dc.crop_regions_batch(images, boxes, SMALL_WHOLE, SMALL_PART)
    norm_whole, _ = dc.sample_transform(whole, parts, mean=(100.0, 110.0, 120.0), scale=0.02)
    transform = SampleTransform(train=False, mean=(100.0, 110.0, 120.0), scale=0.02)
    _, (cpu_whole, _) = cpu_path(*persons[0], SMALL_WHOLE, SMALL_PART, transform)
    torch.testing.assert_close(norm_whole[0], cpu_whole, atol=CROP_TOL * 0.02 + 1e-5, rtol=0)


def test_boxes_outside_the_image_and_extreme_scales_match(persons):
    rng = np.random.default_rng(1)
    shifted = []
    for image, boxes in persons:
        moved = boxes.copy()
        moved[:, [0, 2]] += rng.uniform(-40, 40)
        moved[:, [1, 3]] += rng.uniform(-70, 70)
        shifted.append((image, moved))
    tiny = persons[0][1].copy()
    tiny[1:] = [(20, 30, 21, 30.5), (0, 0, 2, 1), (63, 127, 64, 128), (-1, -1, 0.5, 0.25)]  # x100 to x200 up
    huge = persons[1][1].copy()
    huge[0] = (-500, -900, 600, 1000)  # 1100 px wide onto 96: x0.09, mostly padding
    cases = [(shifted, SMALL_WHOLE, SMALL_PART), ([(persons[0][0], tiny), (persons[1][0], huge)], (8, 4), (96, 192))]
    for samples, whole_size, part_size in cases:
        images, boxes = batch(samples)
        whole, parts = dc.crop_regions_batch(images, boxes, whole_size, part_size)
        for i, (image, box) in enumerate(samples):
            cpu = crop_regions(image, box, whole_size, part_size)
            assert crop_error(cpu, whole[i], parts[i]) <= CROP_TOL


def test_crop_boxes_pads_with_the_rounded_mean_or_a_given_colour():
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    boxes = np.array([[-30, 0, 30, 40]] * 5, dtype=np.float64)  # left half outside, one source px per output px
    images = to_tensor(image)[None]
    crops = dc.crop_boxes(images, torch.from_numpy(boxes)[None], (40, 60))
    assert crops.shape == (1, 5, 3, 40, 60)
    expected = np.round(image.reshape(-1, 3).mean(axis=0))
    torch.testing.assert_close(
        crops[0, 0, :, :, :30], torch.from_numpy(expected).float()[:, None, None].expand(3, 40, 30)
    )
    torch.testing.assert_close(crops[0, 0, :, :, 30:], to_tensor(image).float(), atol=1e-3, rtol=0)  # exact copy
    cpu_whole, _ = crop_regions(image, boxes, (40, 60), (40, 60), pad_value=(1, 2, 3))
    given = dc.crop_boxes(images, torch.from_numpy(boxes)[None], (40, 60), fill=(1.0, 2.0, 3.0))
    assert np.abs(cpu_whole - given[0, 0].permute(1, 2, 0).numpy()).max() <= CROP_TOL
    for tie in (0, 1):  # a channel mean of exactly k + 0.5 rounds to even, like OpenCV's border value
        flat = np.full((1, 2, 3), 4 + tie, dtype=np.uint8)
        flat[0, 0] += 1
        assert dc.image_means(to_tensor(flat)[None])[0, 0] == (4 if tie == 0 else 6)


def test_a_batch_mixing_image_sizes_crops_each_image_with_its_own_padding():
    samples = [scenes(1, 128, 64, seed=2)[0], scenes(1, 160, 80, seed=3)[0], scenes(1, 96, 48, seed=4)[0]]
    rng = np.random.default_rng(5)
    for _, boxes in samples:  # push every box over the right and bottom edges, where the canvas is padded
        boxes[:, [0, 2]] += rng.uniform(10, 30)
        boxes[:, [1, 3]] += rng.uniform(10, 40)
    canvas, sizes = dc.pad_images([to_tensor(image) for image, _ in samples])
    assert canvas.shape == (3, 3, 160, 80) and sizes.tolist() == [[128, 64], [160, 80], [96, 48]]
    boxes = torch.from_numpy(np.stack([b for _, b in samples])).float()
    whole, parts = dc.crop_regions_batch(canvas, boxes, SMALL_WHOLE, SMALL_PART, sizes=sizes)
    for i, (image, box) in enumerate(samples):
        cpu = crop_regions(image, box, SMALL_WHOLE, SMALL_PART)
        assert crop_error(cpu, whole[i], parts[i]) <= CROP_TOL
        assert dc.image_means(canvas[i : i + 1], sizes[i : i + 1]).tolist()[0] == list(
            np.round(image.reshape(-1, 3).mean(axis=0))
        )


@pytest.mark.parametrize(("hflip", "pad_crop", "seed"), [(1.0, 0.0, 3), (0.0, 1.0, 11), (1.0, 1.0, 2024)])
def test_a_flip_and_a_translation_equal_sample_transforms_own_at_the_same_draws(persons, hflip, pad_crop, seed):
    transform = SampleTransform(train=True, hflip=hflip, pad_crop=pad_crop, translate=0.125, seed=0)
    draws = []
    for i in range(len(persons)):
        transform.reseed(seed + i)
        drawn = transform.draw(SMALL_WHOLE)
        draws.append((drawn.flipped, drawn.shift or (0.0, 0.0)))
    for flipped, (dx, dy) in draws:  # forced to fire (or not to)
        assert flipped == (hflip == 1.0) and (dx != 0.0 and dy != 0.0) == (pad_crop == 1.0)
    images, boxes = batch(persons)
    whole, parts = dc.crop_regions_batch(images, boxes, SMALL_WHOLE, SMALL_PART)
    flips = torch.tensor([flipped for flipped, _ in draws])
    shifts = torch.tensor([shift for _, shift in draws])
    out_whole, out_parts = dc.sample_transform(whole, parts, boxes, flips=flips, shifts=shifts)
    tolerance = (TRANSLATE_TOL if pad_crop else CROP_TOL + MEAN_TOL) / 255
    for i, (image, box) in enumerate(persons):
        cpu = crop_regions(image, box, SMALL_WHOLE, SMALL_PART)
        transform.reseed(seed + i)  # SampleTransform draws from default_rng(seed + i) now
        cpu_whole, cpu_parts, _ = transform.with_visibility(*cpu, box)
        torch.testing.assert_close(out_whole[i], cpu_whole, atol=tolerance, rtol=0)
        torch.testing.assert_close(out_parts[i], cpu_parts, atol=tolerance, rtol=0)
    torch.testing.assert_close(dc.flip(whole, flips)[flips], whole[flips].flip(-1), atol=0, rtol=0)
    torch.testing.assert_close(dc.flip(whole, flips)[~flips], whole[~flips], atol=0, rtol=0)


def test_translation_by_whole_pixels_moves_the_crop_and_brings_in_the_fill():
    crops = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    fill = torch.tensor([[-1.0, -2.0, -3.0], [7.0, 8.0, 9.0]])
    moved = dc.translate(crops, torch.tensor([[2.0, -1.0], [0.0, 0.0]]), fill)
    torch.testing.assert_close(moved[0, :, :3, 2:], crops[0, :, 1:, :3])
    torch.testing.assert_close(moved[0, :, :, :2], fill[0][:, None, None].expand(3, 4, 2))
    torch.testing.assert_close(moved[0, :, 3], fill[0][:, None].expand(3, 5))
    assert torch.equal(moved[1], crops[1])  # no shift: untouched, not resampled
    per_crop = dc.translate(crops[:, None].expand(2, 2, 3, 4, 5), torch.tensor([[[2.0, -1.0]] * 2] * 2), fill)
    torch.testing.assert_close(per_crop[0, 1], moved[0])


def test_float_input_and_channels_last_give_the_same_results(persons):
    images, boxes = batch(persons[:3])
    flips, shifts = torch.tensor([True, False, True]), torch.tensor([[3.5, -2.25], [0.0, 0.0], [-7.0, 4.0]])

    def run(images: torch.Tensor, channels_last: bool = False) -> list[torch.Tensor]:
        whole, parts = dc.crop_regions_batch(images, boxes, SMALL_WHOLE, SMALL_PART)
        if channels_last:
            whole = whole.contiguous(memory_format=torch.channels_last)
            parts = torch.stack([p.contiguous(memory_format=torch.channels_last) for p in parts.unbind(1)], 1)
        return [whole, parts, *dc.sample_transform(whole, parts, boxes, flips=flips, shifts=shifts)]

    reference = run(images)
    assert all(t.dtype == torch.float32 for t in reference)
    for other in (run(images.float()), run(images.contiguous(memory_format=torch.channels_last), channels_last=True)):
        for expected, got in zip(reference, other, strict=True):
            torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)


def test_bad_shapes_are_refused():
    images = torch.zeros(2, 3, 8, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="boxes"):
        dc.crop_regions_batch(images, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        dc.crop_boxes(images[:, :1], torch.zeros(2, 5, 4), (4, 2))
    with pytest.raises(ValueError, match="fill"):
        dc.crop_boxes(images, torch.zeros(2, 5, 4), (4, 2), fill=(1.0, 2.0))
    with pytest.raises(ValueError, match="flips"):
        dc.flip(torch.zeros(2, 3, 4, 4), torch.tensor([True]))
