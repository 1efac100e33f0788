"""data.pipeline=device: the loader's originals + draws, cut and augmented in one batch, equal the CPU path's crops."""

from __future__ import annotations

import albumentations.augmentations.pixel.functional as AF
import cv2
import numpy as np
import pytest
import torch

from reid.data.crop_dataset import CropDataset
from reid.data.device_batch import PASTE_KEY, collate_originals, color_jitter, paste_occluders, rectangle_mask
from reid.data.records import Record
from reid.data.transforms import SampleTransform
from tests.test_device_crops import CROP_TOL, MEAN_TOL, SMALL_PART, SMALL_WHOLE, TRANSLATE_TOL, scenes

AUGMENT = {"hflip": 0.5, "pad_crop": 0.5, "random_erasing": 0.6}


@pytest.fixture(scope="module")
def persons(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Record], np.ndarray]:
    """Rendered persons written as PNG files (two sizes), their records and Eq. 1-2 boxes."""
    folder = tmp_path_factory.mktemp("persons")
    records, boxes = [], []
    for size, seed in (((128, 64), 0), ((160, 72), 1)):
        for i, (image, box) in enumerate(scenes(4, *size, seed=seed)):
            path = folder / f"{seed}_{i}.png"
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            records.append(Record(str(path), i, seed))
            boxes.append(box)
    return records, np.stack(boxes).astype(np.float32)


def both_paths(persons, fill: str = "mean", **augment) -> tuple[dict, dict]:
    """One batch of every person through the CPU path and through the device path, same sample seeds."""
    records, boxes = persons
    batches = []
    for pipeline in ("cpu", "device"):
        transform = SampleTransform(train=True, erasing_fill=fill, **augment)
        dataset = CropDataset(records, boxes, transform, SMALL_WHOLE, SMALL_PART, pipeline=pipeline)
        samples = [dataset[(i, 1000 + i)] for i in range(len(records))]
        batch = (dataset.collate or torch.utils.data.default_collate)(samples)
        batches.append(dataset.device_crops(batch))
    return batches[0], batches[1]


@pytest.mark.parametrize("fill", ["mean", "random"])
def test_the_device_path_cuts_and_augments_as_the_cpu_path_does(persons, fill):
    cpu, device = both_paths(persons, fill, **AUGMENT)
    flips = shifts = erased = 0
    for i in range(len(persons[0])):
        transform = SampleTransform(train=True, erasing_fill=fill, **AUGMENT)
        transform.reseed(1000 + i)
        d = transform.draw(SMALL_WHOLE)
        flips, shifts, erased = flips + d.flipped, shifts + (d.shift is not None), erased + (d.erase is not None)
    assert flips and shifts and erased and flips < 8 and shifts < 8
    gain = 1 / 255
    tolerance = (TRANSLATE_TOL + 0.01) * gain if shifts else (CROP_TOL + MEAN_TOL) * gain
    assert (device["whole"] - cpu["whole"]).abs().max() <= tolerance
    assert (device["parts"] - cpu["parts"]).abs().max() <= tolerance
    torch.testing.assert_close(device["part_unerased"], cpu["part_unerased"], rtol=0, atol=0)
    assert torch.equal(device["part_erased"], cpu["part_erased"])
    erased = cpu["part_erased"]
    area = (erased[..., 2] - erased[..., 0]) * (erased[..., 3] - erased[..., 1])
    torch.testing.assert_close(cpu["part_unerased"], 1 - area / (SMALL_PART[0] * SMALL_PART[1]))
    for key in ("pid", "camid", "index", "is_query"):
        assert torch.equal(torch.as_tensor(device[key]), torch.as_tensor(cpu[key]))


def test_paste_fills_each_rectangle_from_the_previous_image_alike_on_both_paths(persons):
    cpu, device = both_paths(persons, "paste", random_erasing=0.6)
    rectangles = cpu[PASTE_KEY].clone()
    assert torch.equal(rectangles, device[PASTE_KEY]) and torch.equal(rectangles[:, 1:], cpu["part_erased"])
    erased = rectangles[:, 0, 2] > rectangles[:, 0, 0]
    assert 0 < int(erased.sum()) < len(persons[0])
    before = {key: cpu[key].clone() for key in ("whole", "parts")}
    cpu, device = paste_occluders(cpu), paste_occluders(device)
    assert PASTE_KEY not in cpu and PASTE_KEY not in device
    assert (device["whole"] - cpu["whole"]).abs().max() <= (CROP_TOL + MEAN_TOL) / 255
    assert (device["parts"] - cpu["parts"]).abs().max() <= (CROP_TOL + MEAN_TOL) / 255
    inside = rectangle_mask(rectangles[:, 0], *SMALL_WHOLE).expand_as(before["whole"])
    previous = before["whole"].roll(1, dims=0)
    assert torch.equal(cpu["whole"][inside], previous[inside])  # the previous image's pixels, place for place
    assert torch.equal(cpu["whole"][~inside], before["whole"][~inside])  # the rest untouched
    parts_inside = rectangle_mask(rectangles[:, 1:].reshape(-1, 4), *SMALL_PART).view(-1, 4, 1, *SMALL_PART)
    parts_inside = parts_inside.expand_as(before["parts"])
    assert torch.equal(cpu["parts"][parts_inside], before["parts"].roll(1, dims=0)[parts_inside])
    assert torch.equal(cpu["parts"][~parts_inside], before["parts"][~parts_inside])
    assert not torch.equal(cpu["whole"], before["whole"])


def test_without_augmentation_the_paths_agree_within_the_crop_tolerance(persons):
    cpu, device = both_paths(persons)
    assert (device["whole"] - cpu["whole"]).abs().max() <= (CROP_TOL + MEAN_TOL) / 255
    assert (device["parts"] - cpu["parts"]).abs().max() <= (CROP_TOL + MEAN_TOL) / 255
    assert "part_unerased" not in device


def test_the_draws_are_the_sample_seeds_and_ship_as_small_tensors(persons):
    records, boxes = persons
    transform = SampleTransform(train=True, color_jitter=1.0, **AUGMENT)
    dataset = CropDataset(records, boxes, transform, SMALL_WHOLE, SMALL_PART, pipeline="device")
    first, again, other = dataset[(3, 7)], dataset[(3, 7)], dataset[(3, 8)]
    for key in first["draws"]:
        torch.testing.assert_close(first["draws"][key], again["draws"][key], rtol=0, atol=0, equal_nan=True)
    assert not torch.equal(first["draws"]["jitter"], other["draws"]["jitter"])
    assert first["image"].dtype == torch.uint8 and tuple(first["image"].shape) == (128, 64, 3)
    assert "whole" not in first and "parts" not in first


def test_originals_of_different_sizes_share_one_canvas_and_keep_their_sizes(persons):
    records, boxes = persons
    dataset = CropDataset(records, boxes, SampleTransform(train=False), SMALL_WHOLE, SMALL_PART, pipeline="device")
    batch = collate_originals([dataset[3], dataset[5]])
    assert tuple(batch["image"].shape) == (2, 160, 72, 3)
    assert batch["image_size"].tolist() == [[128, 64], [160, 72]]
    assert not batch["image"][0, 128:].any() and not batch["image"][0, :, 64:].any()


def albumentations_jitter(image: np.ndarray, factors, order) -> np.ndarray:
    ops = [
        AF.adjust_brightness_torchvision,
        AF.adjust_contrast_torchvision,
        AF.adjust_saturation_torchvision,
        AF.adjust_hue_torchvision,
    ]
    for k in order:
        image = ops[k](image, factors[k])
    return image


@pytest.mark.parametrize(
    ("factors", "tolerance"),
    [
        ((1.2, 1.0, 1.0, 0.0), 1.0),
        ((1.0, 0.8, 1.0, 0.0), 1.0),
        ((1.0, 1.0, 1.4, 0.0), 1.0),
        ((0.85, 1.15, 0.7, 0.0), 3.0),
    ],
)
def test_colour_jitter_equals_albumentations_for_the_same_factors(persons, factors, tolerance):
    """Within the CPU path's uint8 rounding (up to 1 per operation; hue: see the next test)."""
    image = scenes(1, 128, 64, seed=3)[0][0]
    whole = image[:96]
    parts = np.stack([image[96 + 8 * i : 104 + 8 * i] for i in range(4)])  # same width: jittered stacked
    stacked = np.concatenate([whole, parts.reshape(-1, 64, 3)])
    order = (2, 0, 3, 1)
    expected = albumentations_jitter(stacked, factors, order).astype(np.float32)
    w, p = color_jitter(
        torch.from_numpy(whole).permute(2, 0, 1)[None].float(),
        torch.from_numpy(parts).permute(0, 3, 1, 2)[None].float(),
        torch.tensor([factors]),
        torch.tensor([order]),
    )
    got = torch.cat([w[0], p[0].permute(1, 0, 2, 3).reshape(3, -1, 64)], dim=1).permute(1, 2, 0).numpy()
    assert np.abs(got - expected).max() <= tolerance
    if factors != (1.0, 1.0, 1.0, 0.0):
        assert np.abs(got - stacked).max() > 5  # the jitter did something


def test_hue_rotation_equals_opencvs_within_its_two_degree_steps():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    expected = AF.adjust_hue_torchvision(image, 0.1).astype(np.float32)
    from reid.data.device_batch import _hue

    got = _hue(torch.from_numpy(image).permute(2, 0, 1)[None].float(), torch.tensor([0.1]))
    error = np.abs(got[0].permute(1, 2, 0).numpy() - expected)
    assert error.mean() < 3.0 and np.percentile(error, 99) < 12
    assert np.abs(expected - image).mean() > 10  # the hue moved


def test_each_ddp_rank_draws_its_own_augmentation_and_the_cpu_path_the_same(persons):
    """The draws come from the sampler's per-sample seeds, whose stream is (seed, epoch, rank)."""
    from reid.data.samplers import ShuffleSampler

    records, boxes = persons
    draws = {}
    for rank in (0, 1):
        sampler = ShuffleSampler(len(records), seed=5, num_replicas=2, rank=rank).with_sample_seeds()
        keys = list(sampler)
        dataset = CropDataset(
            records, boxes, SampleTransform(train=True, **AUGMENT), SMALL_WHOLE, SMALL_PART, pipeline="device"
        )
        draws[rank] = [dataset[key]["draws"] for key in keys]
        cpu = SampleTransform(train=True, **AUGMENT)
        for (_index, seed), drawn in zip(keys, draws[rank], strict=True):
            cpu.reseed(seed)
            expected = cpu.draw(SMALL_WHOLE)
            assert bool(drawn["flip"]) == expected.flipped
            assert tuple(drawn["erase"][0].tolist()) == (expected.erase or (0, 0, 0, 0))
    seeds = [torch.cat([d["shift"], d["erase"][0].float()]) for d in draws[0]]
    others = [torch.cat([d["shift"], d["erase"][0].float()]) for d in draws[1]]
    assert not any(torch.equal(a, b) for a, b in zip(seeds, others, strict=True) if a.abs().sum() > 0)


def test_the_extractor_and_evaluate_score_alike_on_both_paths(trained, make_cfg):
    """FeatureExtractor(pipeline=device) and evaluate.py with data.pipeline=device: the CPU path's results."""
    from conftest import TINY_OVERRIDES

    from reid import FeatureExtractor
    from reid import tasks as runner

    checkpoint, datamodule, _ = trained
    paths = [r.image_path for r in datamodule.eval_set.records[:12]]
    cpu = FeatureExtractor(checkpoint, device="cpu", pose_estimator="none")(paths)
    device = FeatureExtractor(checkpoint, device="cpu", pose_estimator="none", pipeline="device")(paths)
    assert (device - cpu).norm(dim=1).max() <= 0.02 * cpu.norm(dim=1).min()
    assert not torch.equal(device, cpu)  # cut by another path, not the same code

    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "model.", "trainer.enable_model"))]
    scores = {
        pipeline: runner.evaluate(
            make_cfg(
                f"ckpt_path={checkpoint}",
                "eval.pictures.enabled=false",
                f"data.pipeline={pipeline}",
                *overrides,
                config_name="evaluate",
                tiny=False,
            )
        )
        for pipeline in ("cpu", "device")
    }
    assert scores["device"]["rank1"] == pytest.approx(scores["cpu"]["rank1"], abs=1e-6)
    assert scores["device"]["mAP"] == pytest.approx(scores["cpu"]["mAP"], abs=1.0)


def test_a_pipeline_that_cannot_work_is_one_line_naming_the_key(make_cfg):
    from reid.conf.validate import validate_config
    from reid.errors import ConfigError
    from reid.inference.extractor import FeatureInputError
    from reid.lit.imagenet import ImageNetDataModule

    with pytest.raises(ConfigError, match="data.pipeline"):
        validate_config(make_cfg("data.pipeline=gpu"))
    with pytest.raises(ConfigError, match="data.pipeline=cpu"):
        ImageNetDataModule(name="imagenet", root="unused", pipeline="device")
    with pytest.raises(FeatureInputError, match="pipeline must be one of cpu, device"):
        from reid import FeatureExtractor

        FeatureExtractor("unused.ckpt", pipeline="gpu")
