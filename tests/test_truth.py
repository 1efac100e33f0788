"""The synthetic set's truth (person mask, visibility) on hand-made scenes, and the figures scored against it."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from test_synthetic import BRIGHT, EXACT, NEUTRAL

from reid.data.synthetic import SyntheticParams, generate, render_sample
from reid.data.synthetic.figure import Pose
from reid.data.truth import (
    HIDDEN,
    VISIBLE,
    TruthFormatError,
    crop_visible,
    read_truth,
    region_visibility,
    truth_path,
)
from reid.metrics.attention_health import AttentionHealth, health_table, mask_correlation
from reid.metrics.truth import concordance, mask_auroc, spearman, truth_on_grid
from reid.names import BRANCH_NAMES, PART_NAMES
from reid.pose.regions import image_regions


def _scene(occluder: str | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright figure on black, front view, exact keypoints; ``occluder`` forced when given."""
    pose = Pose(yaw_deg=0.0, gait=0.0, phase=0.5, arm_abduction=(0.1, 0.1), elbow_flex=(0.2, 0.2))
    black = np.zeros((256, 192, 3), np.float32)
    params = SyntheticParams(**{**EXACT.__dict__, "keypoint_drop_prob": 0.0})
    rendered = render_sample(
        BRIGHT, NEUTRAL, (black, black), np.random.default_rng(seed), params, pose=pose, occluder=occluder
    )
    return rendered.image, np.asarray(rendered.keypoints, dtype=float).reshape(18, 3), rendered.truth


def _boxes(keypoints: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The data pipeline's Eq. 1-2 boxes (hidden joints filled from the canonical pose)."""
    return image_regions(keypoints, truth.shape[1], truth.shape[0], beta=0.1)[0]


def test_without_an_occluder_the_truth_is_the_painted_figure():
    image, _, truth = _scene()
    assert not (truth == HIDDEN).any()
    painted = image.sum(axis=2) > 90  # a bright figure on black
    person = truth == VISIBLE
    iou = (painted & person).sum() / (painted | person).sum()
    assert iou > 0.9, iou


def test_a_box_hides_the_legs_and_nothing_above_them():
    _, keypoints, truth = _scene("box")
    hidden_rows = np.nonzero((truth == HIDDEN).any(axis=1))[0]
    assert hidden_rows.size and hidden_rows.min() > truth.shape[0] * 0.5  # a box stands on the floor
    whole, head, upper_body, upper_leg, lower_leg = region_visibility(truth, _boxes(keypoints, truth))
    assert head == 1.0 and upper_body == 1.0
    assert lower_leg < 0.6 and lower_leg < upper_leg <= 1.0 and lower_leg < whole < 1.0


def test_a_pole_hides_a_vertical_band_of_every_part():
    _, keypoints, truth = _scene("pole", seed=3)
    hidden_cols = np.nonzero((truth == HIDDEN).any(axis=0))[0]
    assert hidden_cols.size and hidden_cols.max() - hidden_cols.min() < truth.shape[1] * 0.4
    shares = region_visibility(truth, _boxes(keypoints, truth))
    assert np.all(shares < 1.0) and np.all(shares > 0.3)


def test_region_visibility_counts_pixels_whose_centre_is_inside():
    labels = np.zeros((20, 10), np.uint8)
    labels[2:18, 3:7] = VISIBLE
    labels[12:18, 3:7] = HIDDEN
    boxes = np.array(
        [
            [0, 0, 10, 20],  # all of it: 40 of 64 person pixels visible
            [0, 2, 10, 8],  # visible rows only
            [0, 12, 10, 18],  # hidden rows only
            [0, 10.4, 10, 14.6],  # rows 10..14 (centres 10.5..14.5 inside): 2 visible, 3 hidden
            [-5, -5, 2, 30],  # no person pixel (columns 0..1), partly outside the image
        ]
    )
    shares = region_visibility(labels, boxes)
    assert shares[:4].tolist() == pytest.approx([40 / 64, 1.0, 0.0, 0.4])
    assert math.isnan(shares[4])


def test_crop_visible_follows_the_image_crop():
    labels = np.zeros((20, 10), np.uint8)
    labels[2:18, 3:7] = VISIBLE
    boxes = np.array([[0, 0, 10, 20], [0, 0, 10, 5], [0, 5, 10, 10], [0, 10, 10, 15], [5, 15, 15, 20]], float)
    whole, parts = crop_visible(labels, boxes, (20, 10), (5, 10))
    assert np.array_equal(whole, (labels == VISIBLE).astype(np.float32))  # the identity box
    assert np.array_equal(parts[1], whole[5:10])
    assert parts[3][:, 5:].max() == 0.0  # outside the image: no person


def test_the_generator_writes_a_truth_file_per_image(tmp_path):
    folder = generate(
        tmp_path,
        num_train_ids=2,
        num_test_ids=2,
        images_per_train_id=2,
        images_per_test_id=2,
        num_distractors=1,
        num_junk=1,
        occlusion_prob=1.0,
    )
    images = sorted(folder.glob("*/*.jpg"))
    assert images
    hidden = 0
    for image in images:
        labels = read_truth(truth_path(image), cv2.imread(str(image)).shape[:2])
        assert (labels == VISIBLE).any()
        hidden += int((labels == HIDDEN).any())
    assert hidden > len(images) // 2  # every image has an occluder, most of them over the person
    broken = truth_path(images[0])
    broken.write_bytes(b"not a png")
    with pytest.raises(TruthFormatError, match="not a single-channel 8-bit PNG"):
        read_truth(broken)
    assert truth_path(tmp_path / "query" / "nothing.jpg") is None


# ---------------------------------------------------------------------------- the figures


def _brute_auroc(values: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = values[positive], values[~positive]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_mask_auroc_scores_the_truth_one_a_constant_half_and_the_inverse_zero():
    generator = torch.Generator().manual_seed(0)
    positive = torch.rand(6, 50, generator=generator) < 0.3
    truth = positive.double()
    assert torch.allclose(mask_auroc(truth, positive), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(mask_auroc(torch.full((6, 50), 0.7), positive), torch.full((6,), 0.5, dtype=torch.float64))
    assert torch.allclose(mask_auroc(1 - truth, positive), torch.zeros(6, dtype=torch.float64))
    noisy = (torch.rand(6, 50, generator=generator) * 4).round() / 4  # many ties
    expected = [_brute_auroc(noisy[i].numpy(), positive[i].numpy()) for i in range(6)]
    assert mask_auroc(noisy, positive).tolist() == pytest.approx(expected)
    one_class = mask_auroc(torch.rand(2, 5), torch.tensor([[True] * 5, [False] * 5]))
    assert torch.isnan(one_class).all()


def test_truth_on_grid_takes_cells_that_are_mostly_person():
    coverage = torch.zeros(1, 8, 4)
    coverage[0, :4, :2] = 1.0  # the top-left quarter
    coverage[0, 4:6, 2:] = 1.0  # half of the bottom-right quarter
    grid = truth_on_grid(coverage, (2, 2))
    assert grid.tolist() == [[[True, False], [False, True]]]


def test_spearman_matches_scipy_and_its_planted_answers():
    generator = torch.Generator().manual_seed(1)
    x = (torch.rand(40, generator=generator) * 5).round()  # ties
    y = x + torch.rand(40, generator=generator) * 3
    assert spearman(x, y) == pytest.approx(spearmanr(x.numpy(), y.numpy()).statistic)
    assert spearman(x, x) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, torch.ones(40)))
    with_nan = y.clone()
    with_nan[:5] = math.nan
    assert spearman(x, with_nan) == pytest.approx(spearmanr(x[5:].numpy(), y[5:].numpy()).statistic)


# ---------------------------------------------------------------------------- AttentionHealth against planted truth


def _planted_batch(batch: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Truth fields as the loaders ship them: random person blobs, boxes, shares and confidences."""
    generator = torch.Generator().manual_seed(seed)
    whole = torch.zeros(batch, 32, 16, dtype=torch.uint8)
    parts = torch.zeros(batch, 4, 8, 16, dtype=torch.uint8)
    for i in range(batch):
        top, left = (
            int(torch.randint(0, 16, (1,), generator=generator)),
            int(torch.randint(0, 8, (1,), generator=generator)),
        )
        whole[i, top : top + 12, left : left + 6] = 255
        parts[i, :, 2:6, 4 + i % 4 : 10 + i % 4] = 255
    boxes = torch.tensor([[0.0, 0.0, 16.0, 32.0], [0, 0, 16, 8], [0, 8, 16, 16], [0, 16, 16, 24], [0, 24, 16, 32]])
    return {
        "truth_whole": whole,
        "truth_parts": parts,
        "truth_visible": torch.rand(batch, 5, generator=generator),
        "part_confidence": torch.rand(batch, 4, generator=generator),
        "boxes": boxes.expand(batch, 5, 4).clone(),
    }


def _masks_from(batch: dict[str, torch.Tensor], transform) -> dict[str, list[torch.Tensor]]:
    """Masks at two block sizes per branch, made from the truth by ``transform`` (B, 1, h, w)."""
    out = {}
    coverage = {"global": batch["truth_whole"]}
    coverage.update({part: batch["truth_parts"][:, i] for i, part in enumerate(BRANCH_NAMES[1:])})
    for branch, cover in coverage.items():
        h, w = cover.shape[-2:]
        out[branch] = [
            transform(torch.nn.functional.adaptive_avg_pool2d(cover.float().unsqueeze(1) / 255, (h // f, w // f)))
            for f in (2, 4)
        ]
    return out


@pytest.mark.parametrize(
    ("transform", "expected"), [(lambda m: m, 1.0), (lambda m: 0 * m + 0.5, 0.5), (lambda m: 1 - m, 0.0)]
)
def test_mask_auroc_of_planted_masks(transform, expected):
    batch = _planted_batch()
    health = AttentionHealth()
    health.update(_masks_from(batch, transform), None, truth=batch)
    figures = health.compute()
    for branch in BRANCH_NAMES:
        for block in ("b2", "b3"):
            assert figures["intra"][branch][block]["auroc"] == pytest.approx(expected), (branch, block)
    assert figures["intra_mean"]["auroc"] == pytest.approx(expected)
    assert "mask AUROC" in health_table(figures)


def test_rho_of_planted_part_weights_and_no_truth_no_figures():
    batch = _planted_batch(batch=12)
    masks = _masks_from(batch, lambda m: m)
    for weights, expected in ((batch["truth_visible"][:, 1:], 1.0), (-batch["truth_visible"][:, 1:], -1.0)):
        health = AttentionHealth()
        health.update(masks, weights, truth=batch)
        inter = health.compute()["inter"]
        assert all(inter[part]["rho_visible"] == pytest.approx(expected) for part in PART_NAMES)
        assert all(inter[part]["concordance_visible"] == pytest.approx((1 + expected) / 2) for part in PART_NAMES)
    health = AttentionHealth()
    health.update(masks, batch["part_confidence"], truth=batch)
    figures = health.compute()
    assert figures["inter_mean"]["rho_confidence"] == pytest.approx(1.0)
    constant = AttentionHealth()
    constant.update(masks, torch.full((12, 4), 0.3), truth=batch)
    assert math.isnan(constant.compute()["inter_mean"]["rho_visible"])  # a constant mu follows nothing
    assert constant.compute()["inter_mean"]["concordance_visible"] == pytest.approx(0.5)
    plain = AttentionHealth()
    plain.update(masks, batch["truth_visible"][:, 1:])  # a data set without truth
    figures = plain.compute()
    assert "auroc" not in figures["intra_mean"] and "rho_visible" not in figures["inter"]["head"]
    assert "complementarity" not in figures


def test_complementarity_maps_part_cells_into_the_whole_crop():
    # one image, a mask that varies along the image's height: the global mask and the part masks
    # read the same function of image y (through the boxes), so they correlate perfectly
    height = 32
    rows = torch.arange(height, dtype=torch.float64) + 0.5
    whole = (rows / height).view(1, height, 1).expand(1, height, 8).clone()
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 32.0], [0, 0, 8, 8], [0, 8, 8, 16], [0, 16, 8, 24], [0, 24, 8, 32]]])
    part_rows = (torch.arange(8, dtype=torch.float64) + 0.5).view(1, 8, 1)
    for index in range(4):
        part = ((part_rows + 8 * index) / height).expand(1, 8, 8)
        assert mask_correlation(whole, part, boxes[:, 0], boxes[:, index + 1]).item() == pytest.approx(1.0)
        assert mask_correlation(whole, -part, boxes[:, 0], boxes[:, index + 1]).item() == pytest.approx(-1.0)
    outside = torch.tensor([[100.0, 100.0, 108.0, 108.0]])
    assert math.isnan(mask_correlation(whole, part, boxes[:, 0], outside).item())


def test_the_eval_set_carries_truth_and_confidence_and_the_train_set_does_not(make_cfg):
    from reid.tasks import build_datamodule

    datamodule = build_datamodule(make_cfg())
    sample = datamodule.eval_set[0]
    assert sample["truth_whole"].shape == tuple(datamodule.whole_size) and sample["truth_whole"].dtype == torch.uint8
    assert sample["truth_parts"].shape == (4, *datamodule.part_size)
    assert sample["truth_visible"].shape == (5,) and 0 <= float(sample["truth_visible"][0]) <= 1
    assert sample["part_confidence"].shape == (4,) and sample["boxes"].shape == (5, 4)
    assert not {"truth_whole", "truth_parts", "truth_visible"} & set(datamodule.train_set[0])  # training never sees it


def test_fig7_draws_the_truths_outline_on_every_tile_of_its_row():
    from reid.viz.attention import attention_picture

    image = np.full((32, 16, 3), 60, np.uint8)
    attention = {"global": [torch.rand(1, 1, 8, 4), torch.rand(1, 1, 4, 2), torch.rand(1, 1, 2, 1)]}
    coverage = torch.zeros(32, 16, dtype=torch.uint8)
    coverage[8:24, 4:12] = 255
    plain = np.asarray(attention_picture([image], attention, tile_height=32))
    outlined = np.asarray(attention_picture([image], attention, tile_height=32, outlines=[coverage]))
    changed = np.nonzero((plain != outlined).any(axis=2))
    assert changed[0].size > 0
    assert np.asarray(attention_picture([image], attention, tile_height=32, outlines=[None])).tolist() == plain.tolist()
    columns = {int(x) // (16 + 4) for x in changed[1]}  # image + three global blocks, 16 px tiles with a gap
    assert len(columns) == 4


def test_concordance_scores_ranking_and_leaves_tied_truth_out():
    # nine wholly visible parts (tied at 1) and three hidden ones: a weight that ranks the hidden
    # ones right but orders the visible ones at random has a concordance of 1 (rho falls short)
    truth = torch.tensor([1.0] * 9 + [0.2, 0.5, 0.7])
    detector = torch.tensor([0.93, 0.91, 0.99, 0.95, 0.9, 0.97, 0.92, 0.98, 0.94, 0.1, 0.3, 0.6])
    assert concordance(detector, truth) == pytest.approx(1.0)
    assert spearman(detector, truth) < 0.9
    assert concordance(truth, truth) == pytest.approx(1.0)
    assert concordance(-truth, truth) == pytest.approx(0.0)
    assert concordance(torch.full_like(truth, 0.4), truth) == pytest.approx(0.5)
    swapped = detector.clone()
    swapped[[9, 10]] = swapped[[10, 9]]  # one of the 30 ordered pairs wrong
    assert concordance(swapped, truth) == pytest.approx(1 - 1 / 30)
    assert math.isnan(concordance(detector, torch.ones(12)))  # no pair to order
    chunked = concordance(detector, truth, chunk=5)
    assert chunked == pytest.approx(concordance(detector, truth))
