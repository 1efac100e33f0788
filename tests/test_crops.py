"""Tests for reid.data.crops (crop + resize + pad) and reid.data.transforms (consistent augmentation)."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch
import torch.utils.data

from reid.data.crops import box_to_crop_matrix, crop_regions
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, SampleTransform
from reid.pose import strip_regions

DEMO_WHOLE, DEMO_PART = (128, 64), (32, 64)


def noise_image(height: int = 128, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- crops


def test_full_image_box_at_its_own_size_is_the_identity():
    image = noise_image()
    boxes = strip_regions(64, 128, 0.0)  # whole image + quarters of 32 rows
    whole, parts = crop_regions(image, boxes, DEMO_WHOLE, DEMO_PART)
    np.testing.assert_array_equal(whole, image)
    for i in range(4):
        np.testing.assert_array_equal(parts[i], image[32 * i : 32 * (i + 1)])
    np.testing.assert_allclose(box_to_crop_matrix((0, 0, 64, 128), (128, 64)), [[1, 0, 0], [0, 1, 0]])


def test_boxes_leaving_the_image_are_padded_not_clipped():
    image = noise_image()
    # Whole box 3 px left of and 5 px above the image, same size as the output: a pure shift.
    boxes = strip_regions(64, 128, 0.0)
    boxes[0] = (-3, -5, 61, 123)
    boxes[4] = (10, 100, 74, 132)  # lower leg: 10 px off the right edge, 4 px below the bottom
    whole, parts = crop_regions(image, boxes, DEMO_WHOLE, DEMO_PART, pad_value=(1, 2, 3))
    # Output pixel (row r, col c) shows image pixel (r - 5, c - 3).
    assert (whole[:5] == (1, 2, 3)).all() and (whole[:, :3] == (1, 2, 3)).all()
    np.testing.assert_array_equal(whole[5:, 3:], image[:123, :61])
    lower = parts[3]  # shows image rows 100..131, cols 10..73
    np.testing.assert_array_equal(lower[:28, :54], image[100:128, 10:64])
    assert (lower[28:] == (1, 2, 3)).all() and (lower[:, 54:] == (1, 2, 3)).all()


def test_default_pad_value_is_the_image_mean():
    image = noise_image(seed=1)
    boxes = strip_regions(64, 128, 0.0)
    boxes[0] = (-32, 0, 32, 128)
    whole, _ = crop_regions(image, boxes, DEMO_WHOLE, DEMO_PART)
    expected = np.round(image.reshape(-1, 3).mean(axis=0))
    np.testing.assert_array_equal(whole[:, :32].reshape(-1, 3), np.broadcast_to(expected, (128 * 32, 3)))
    np.testing.assert_array_equal(whole[:, 32:], image[:, :32])


def test_resizing_matches_opencv_resize():
    image = noise_image(seed=2)
    boxes = strip_regions(64, 128, 0.0)
    boxes[2] = (0, 10, 64, 26)  # 16 rows -> 32 rows, 64 cols -> 64 cols: 2x vertical up-scaling
    whole, parts = crop_regions(image, boxes, (256, 128), DEMO_PART)
    # Away from the outermost pixels (which blend with the padding where cv2.resize replicates edges).
    reference = cv2.resize(image, (128, 256), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(whole[1:-1, 1:-1].astype(int), reference[1:-1, 1:-1].astype(int), atol=1)
    reference = cv2.resize(image[10:26], (64, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(parts[1][1:-1].astype(int), reference[1:-1].astype(int), atol=1)
    np.testing.assert_array_equal(parts[0], image[:32])  # the untouched boxes still copy exactly


def test_crop_regions_rejects_bad_input():
    image = noise_image()
    boxes = strip_regions(64, 128, 0.0)
    with pytest.raises(ValueError, match="uint8"):
        crop_regions(image.astype(np.float32), boxes)
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        crop_regions(image, boxes[:4])
    flipped = boxes.copy()
    flipped[1, [1, 3]] = flipped[1, [3, 1]]
    with pytest.raises(ValueError, match="y2 > y1"):
        crop_regions(image, flipped)


# --------------------------------------------------------------------------- transforms


def bimodal_image(rng: np.random.Generator) -> np.ndarray:
    """Pixels in 0..39 or 215..255 (mean ~127): no pixel, nor a 2x bilinear blend, sits at the mean."""
    dark = rng.integers(0, 40, (128, 64, 3))
    bright = rng.integers(215, 256, (128, 64, 3))
    return np.where(rng.random((128, 64, 3)) < 0.5, dark, bright).astype(np.uint8)


def quarters_sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A demo-size sample whose parts are exactly the whole crop's quarters (strip boxes, beta = 0)."""
    image = noise_image(seed=seed)
    boxes = strip_regions(64, 128, 0.0)
    whole, parts = crop_regions(image, boxes, DEMO_WHOLE, DEMO_PART)
    return whole, parts, boxes


def assert_parts_are_quarters(whole: torch.Tensor, parts: torch.Tensor) -> None:
    for i in range(4):
        torch.testing.assert_close(parts[i], whole[:, 32 * i : 32 * (i + 1)], rtol=0, atol=1e-6)


def test_default_is_per_image_mean_subtraction_shared_by_the_parts():
    whole, parts, _ = quarters_sample()
    whole_t, parts_t = SampleTransform()(whole, parts)
    assert whole_t.shape == (3, 128, 64) and parts_t.shape == (4, 3, 32, 64)
    assert whole_t.dtype == parts_t.dtype == torch.float32
    mean = whole.reshape(-1, 3).astype(np.float64).mean(axis=0)
    torch.testing.assert_close(whole_t.mean(dim=(1, 2)), torch.zeros(3), rtol=0, atol=1e-5)
    # Parts use the whole crop's mean, not their own: pixel (0, 0) of part 2, channel 1.
    assert parts_t[2, 1, 0, 0].item() == pytest.approx((parts[2, 0, 0, 1] - mean[1]) / 255, abs=1e-5)
    assert_parts_are_quarters(whole_t, parts_t)


def test_imagenet_and_fixed_mean_normalisation():
    whole, parts, _ = quarters_sample()
    whole_t, _ = SampleTransform(normalize="imagenet")(whole, parts)
    expected = (whole[3, 4, 2] / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]
    assert whole_t[2, 3, 4].item() == pytest.approx(expected, abs=1e-5)
    whole_t, _ = SampleTransform(mean=(100, 110, 120), scale=1.0)(whole, parts)
    assert whole_t[0, 5, 6].item() == pytest.approx(float(whole[5, 6, 0]) - 100, abs=1e-4)


def test_flip_is_one_decision_for_all_five_crops():
    whole, parts, boxes = quarters_sample()
    plain_w, plain_p = SampleTransform()(whole, parts)
    flipped_w, flipped_p = SampleTransform(hflip=1.0)(whole, parts)
    torch.testing.assert_close(flipped_w, plain_w.flip(-1))
    torch.testing.assert_close(flipped_p, plain_p.flip(-1))
    # Flip twice = identity: flipping the mirrored crops gives the unflipped result back.
    again_w, again_p = SampleTransform(hflip=1.0)(whole[:, ::-1].copy(), parts[:, :, ::-1].copy())
    torch.testing.assert_close(again_w, plain_w)
    torch.testing.assert_close(again_p, plain_p)
    # With p = 0.5 both outcomes occur, and whole and parts always agree.
    transform = SampleTransform(hflip=0.5, seed=7)
    outcomes = []
    for _ in range(16):
        w_t, p_t = transform(whole, parts)
        is_flipped = torch.equal(w_t, flipped_w)
        assert is_flipped or torch.equal(w_t, plain_w)
        assert torch.equal(p_t, flipped_p if is_flipped else plain_p)
        outcomes.append(is_flipped)
    assert 0 < sum(outcomes) < 16


def test_colour_jitter_shares_its_parameters_across_crops():
    whole, parts, _ = quarters_sample(seed=3)
    transform = SampleTransform(
        color_jitter=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, hflip=0.5, seed=11
    )
    plain_w, _ = SampleTransform()(whole, parts)
    changed = 0
    for _ in range(5):
        whole_t, parts_t = transform(whole, parts)
        assert_parts_are_quarters(whole_t, parts_t)
        changed += not torch.allclose(whole_t, plain_w) and not torch.allclose(whole_t, plain_w.flip(-1))
    assert changed == 5


def test_colour_jitter_shares_its_parameters_when_widths_differ():
    # Uniform crops of one colour must stay one colour: every crop gets the same factors.
    whole = np.full((16, 8, 3), (180, 90, 40), dtype=np.uint8)
    parts = np.full((4, 4, 6, 3), (180, 90, 40), dtype=np.uint8)
    transform = SampleTransform(
        normalize="none", scale=1.0, color_jitter=1.0, brightness=0.4, saturation=0.4, hue=0.2, seed=12
    )
    for _ in range(4):
        whole_t, parts_t = transform(whole, parts)
        colour = whole_t[:, 0, 0]
        assert not torch.equal(colour, torch.tensor([180.0, 90.0, 40.0]))
        assert torch.equal(whole_t, colour.view(3, 1, 1).expand(3, 16, 8))
        assert torch.equal(parts_t, colour.view(1, 3, 1, 1).expand(4, 3, 4, 6))


def test_random_erasing_erases_the_same_area_in_whole_and_parts():
    # Pixel values far from the mean (~127), so only erased pixels sit at the mean.
    rng = np.random.default_rng(4)
    image = bimodal_image(rng)
    boxes = strip_regions(64, 128, 0.0)
    whole, parts = crop_regions(image, boxes, DEMO_WHOLE, DEMO_PART)
    transform = SampleTransform(random_erasing=1.0, hflip=0.5, seed=5)
    for _ in range(5):
        whole_t, parts_t = transform(whole, parts, boxes)
        erased_whole = (whole_t.abs() < 0.01).all(dim=0)
        erased_parts = (parts_t.abs() < 0.01).all(dim=1)
        assert 0.02 * 128 * 64 * 0.9 <= erased_whole.sum() <= 0.4 * 128 * 64 * 1.1
        for i in range(4):
            assert torch.equal(erased_parts[i], erased_whole[32 * i : 32 * (i + 1)])
    with pytest.raises(ValueError, match="needs the sample's boxes"):
        transform(whole, parts)


@pytest.mark.parametrize("fill", ["mean", "random"])
def test_random_erasing_reports_the_share_of_each_part_it_left(fill):
    rng = np.random.default_rng(4)
    image = bimodal_image(rng)
    boxes = strip_regions(64, 128, 0.0)
    whole, parts = crop_regions(image, boxes, DEMO_WHOLE, DEMO_PART)
    plain_w, plain_p = SampleTransform()(whole, parts, boxes)
    transform = SampleTransform(random_erasing=1.0, erasing_fill=fill, seed=5)
    colours = set()
    for _ in range(6):
        whole_t, parts_t, unerased = transform.with_visibility(whole, parts, boxes)
        changed = (parts_t != plain_p).any(dim=1)  # (4, h, w): the erased pixels
        pixels = changed.flatten(1).float().mean(dim=1)
        # a bimodal pixel may equal its fill by chance, so the changed share can only fall short a little
        assert torch.all(pixels <= 1 - unerased + 1e-6) and torch.all(pixels >= 1 - unerased - 0.02)
        erased = (whole_t != plain_w).any(dim=0)
        if erased.any():
            colours.add(bool(whole_t[:, erased].abs().max() < 0.01))  # the normalisation's zero (to rounding)
            assert float(whole_t[:, erased].std(dim=1).max()) < 1e-5  # one solid colour per rectangle
    assert colours == {fill == "mean"}
    assert torch.equal(SampleTransform()(whole, parts, boxes)[0], plain_w)
    with pytest.raises(ValueError, match="erasing_fill"):
        SampleTransform(erasing_fill="noise")


def test_random_erasing_maps_through_asymmetric_boxes_under_flip():
    rng = np.random.default_rng(6)
    image = bimodal_image(rng)
    boxes = strip_regions(64, 128, 0.0)
    boxes[2] = (0, 32, 32, 64)  # part 1: the left half of image rows 32..63, stretched 2x horizontally
    whole, parts = crop_regions(image, boxes, DEMO_WHOLE, DEMO_PART)
    plain_w, _ = SampleTransform()(whole, parts, boxes)
    transform = SampleTransform(random_erasing=1.0, erasing_area=(0.1, 0.3), hflip=0.5, seed=8)
    seen_flip = set()
    for _ in range(8):
        whole_t, parts_t = transform(whole, parts, boxes)
        flipped = bool((whole_t == plain_w.flip(-1)).float().mean() > 0.5)  # at most 30 % is erased
        seen_flip.add(flipped)
        erased_whole = (whole_t.abs() < 0.01).all(dim=0)
        erased_part = (parts_t[1].abs() < 0.01).all(dim=0)
        # Image columns 0..31 sit at whole columns 0..31, or 32..63 once mirrored; each spans 2 part columns.
        columns = slice(32, 64) if flipped else slice(0, 32)
        assert torch.equal(erased_part, erased_whole[32:64, columns].repeat_interleave(2, dim=1))
    assert seen_flip == {True, False}


def test_translation_moves_whole_and_parts_by_the_same_image_distance():
    # Part 1's box covers image rows 32..96 at half the vertical resolution of the whole crop.
    image = np.full((128, 64, 3), 40, dtype=np.uint8)
    image[56:72, 24:40] = 240  # a 16x16 marker: whole rows 56..71, part-1 rows 12..19
    boxes = strip_regions(64, 128, 0.0)
    boxes[2] = (0, 32, 64, 96)
    whole, parts = crop_regions(image, boxes, DEMO_WHOLE, DEMO_PART)

    def centroid(channel: torch.Tensor) -> np.ndarray:
        weights = (channel - 0.1).clamp(min=0).numpy()  # the marker only, not background or padding
        rows, cols = np.indices(weights.shape)
        return np.array([(weights * rows).sum(), (weights * cols).sum()]) / weights.sum()

    before_w, before_p = SampleTransform()(whole, parts, boxes)
    base_w, base_p = centroid(before_w[0]), centroid(before_p[1, 0])
    transform = SampleTransform(pad_crop=1.0, translate=0.1, seed=2)
    for _ in range(4):
        whole_t, parts_t = transform(whole, parts, boxes)
        shift_w = centroid(whole_t[0]) - base_w
        shift_p = centroid(parts_t[1, 0]) - base_p
        assert np.abs(shift_w).max() > 0.5
        # Rows: half as many part pixels per image pixel; columns: same scale.
        np.testing.assert_allclose(shift_p, shift_w * [0.5, 1.0], atol=0.15)


def test_eval_mode_turns_augmentation_off():
    whole, parts, boxes = quarters_sample()
    plain = SampleTransform()(whole, parts)
    evaluation = SampleTransform(train=False, hflip=1.0, color_jitter=1.0, pad_crop=1.0, random_erasing=1.0)
    assert not evaluation.needs_boxes
    result = evaluation(whole, parts)  # no boxes needed
    assert torch.equal(result[0], plain[0]) and torch.equal(result[1], plain[1])


def test_transform_pickles_and_keeps_its_state():
    whole, parts, boxes = quarters_sample()
    transform = SampleTransform(hflip=0.5, color_jitter=0.5, random_erasing=0.5, pad_crop=0.5, seed=1)
    copy = pickle.loads(pickle.dumps(transform))
    for _ in range(3):
        a, b = transform(whole, parts, boxes), copy(whole, parts, boxes)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


class _RepeatedSample(torch.utils.data.Dataset):
    def __init__(self, transform: SampleTransform) -> None:
        self.transform = transform
        self.whole, self.parts, self.boxes = quarters_sample()

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> torch.Tensor:
        whole_t, _ = self.transform(self.whole, self.parts, self.boxes)
        return whole_t[0, 0, 0]  # pixel changes with flip and erasing


def test_dataloader_workers_draw_different_augmentations():
    dataset = _RepeatedSample(SampleTransform(hflip=0.5, random_erasing=0.5, seed=3))
    loader = torch.utils.data.DataLoader(dataset, batch_size=12, num_workers=2, multiprocessing_context="fork")
    first, second = list(loader)  # worker 0 makes batch 0, worker 1 batch 1
    assert not torch.equal(first, second)
