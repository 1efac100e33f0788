"""Bad input through ReIDDataModule: unreadable images and keypoint files, odd pixel formats, far-off joints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reid.data.io import CorruptImageError, read_image
from reid.lit.datamodule import ReIDDataModule
from reid.pose import KeypointFormatError
from reid.pose.canonical import load_canonical_poses

IMAGE_W, IMAGE_H = 32, 64
WHOLE_SIZE, PART_SIZE = (32, 16), (8, 16)
# (file stem, pid, camid, split). Train identity 11 has a single image, the one the tests spoil,
# so skipping it removes an identity and the remaining labels must be made dense again.
SAMPLES = [
    ("t10a", 10, 0, "train"),
    ("t10b", 10, 1, "train"),
    ("t11a", 11, 0, "train"),
    ("t12a", 12, 0, "train"),
    ("t12b", 12, 1, "train"),
    ("q20", 20, 0, "query"),
    ("q21", 21, 0, "query"),
    ("g20", 20, 1, "gallery"),
    ("g21", 21, 1, "gallery"),
    ("g22", 22, 1, "gallery"),
]
TARGET = "t11a"


def _pose_in_image() -> np.ndarray:
    """A canonical standing pose scaled into the image, every joint detected (18, 3)."""
    coords = load_canonical_poses().coords[0]
    scale = 0.85 * IMAGE_H / (coords[:, 1].max() - coords[:, 1].min())
    xy = (coords - coords.min(axis=0)) * scale
    xy += [(IMAGE_W - xy[:, 0].max()) / 2, 0.05 * IMAGE_H]
    return np.column_stack([xy, np.full(len(xy), 0.9)])


def _write_keypoints(folder: Path, stem: str, keypoints: np.ndarray | list) -> Path:
    path = folder / "keypoints" / f"{stem}_keypoints.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.asarray(keypoints, dtype=float).ravel().tolist()
    # json.dumps writes NaN as the bare token NaN, which Python's reader accepts: the reader must refuse it.
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": values}]}))
    return path


@pytest.fixture
def custom_set(tmp_path: Path) -> Path:
    """A tiny `custom` data set (CSV form) with a keypoint file per image; returns its folder."""
    folder = tmp_path / "custom"
    rng = np.random.default_rng(0)
    rows = ["path,pid,camid,split"]
    for stem, pid, camid, split in SAMPLES:
        pixels = rng.integers(0, 256, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
        image = folder / "images" / f"{stem}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(image)
        _write_keypoints(folder, stem, _pose_in_image())
        rows.append(f"images/{stem}.png,{pid},{camid},{split}")
    (folder / "list.csv").write_text("\n".join(rows) + "\n")
    return folder


def _datamodule(folder: Path, **options) -> ReIDDataModule:
    settings = dict(
        name="custom",
        root=folder,
        options={"csv": "list.csv"},
        whole_size=WHOLE_SIZE,
        part_size=PART_SIZE,
        regions="pose",
        batch_size=2,
        eval_batch_size=4,
        num_workers=0,
        sampler_seed=0,
        # raw pixel values in the tensors, no flips: the tests compare them with what was written
        augment={"normalize": "none", "scale": 1.0, "hflip": 0.0},
    )
    settings.update(options)
    return ReIDDataModule(**settings)


def _image(folder: Path, stem: str = TARGET) -> Path:
    return folder / "images" / f"{stem}.png"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _train_index(dm: ReIDDataModule, stem: str = TARGET) -> int:
    return next(i for i, r in enumerate(dm.train_set.records) if Path(r.image_path).stem == stem)


# ---------------------------------------------------------------------------- unreadable images and keypoints

BAD_IMAGES = {
    "corrupt_bytes": lambda folder: _image(folder).write_bytes(b"\x89PNG\r\n\x1a\n this is not image data"),
    "truncated": lambda folder: _truncate(_image(folder)),
    "zero_size": lambda folder: _image(folder).write_bytes(b""),
}
BAD_KEYPOINTS = {
    "malformed_json": lambda folder: (folder / "keypoints" / f"{TARGET}_keypoints.json").write_text('{"people": [{'),
    "nan_keypoints": lambda folder: _write_keypoints(
        folder, TARGET, np.where(np.arange(54).reshape(18, 3) == 10, np.nan, _pose_in_image())
    ),
}


@pytest.mark.parametrize("spoil", sorted(BAD_IMAGES))
def test_an_unreadable_image_stops_setup_naming_the_file_and_the_fix(custom_set, spoil):
    BAD_IMAGES[spoil](custom_set)
    dm = _datamodule(custom_set)
    with pytest.raises(CorruptImageError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(_image(custom_set)) in message
    assert "re-extract or delete it, or set data.on_bad_sample=skip" in message
    assert "\n" not in message


@pytest.mark.parametrize("spoil", sorted(BAD_KEYPOINTS))
def test_a_bad_keypoint_file_stops_setup_naming_the_file_and_the_fix(custom_set, spoil):
    BAD_KEYPOINTS[spoil](custom_set)
    dm = _datamodule(custom_set)
    with pytest.raises(KeypointFormatError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(custom_set / "keypoints" / f"{TARGET}_keypoints.json") in message
    assert "data.on_bad_sample=skip" in message
    fix = "regenerate the file with the pose estimator" if spoil == "nan_keypoints" else "re-run the pose estimator"
    assert fix in message
    if spoil == "nan_keypoints":
        assert "item 10 is nan" in message
    assert "\n" not in message


@pytest.mark.parametrize("spoil", sorted(BAD_IMAGES) + sorted(BAD_KEYPOINTS))
def test_skip_drops_the_bad_sample_at_setup_with_a_count_and_relabels(custom_set, spoil, caplog):
    (BAD_IMAGES | BAD_KEYPOINTS)[spoil](custom_set)
    dm = _datamodule(custom_set, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING, logger="reid.data.index"):
        dm.setup("fit")
    bad_images, bad_keypoints = (1, 0) if spoil in BAD_IMAGES else (0, 1)
    tally = f"{bad_images} unreadable images, {bad_keypoints} bad keypoint files"
    assert f"custom/train: skipped 1 bad samples ({tally}) of 5 at set-up" in caplog.text
    assert TARGET in caplog.text  # the first bad file is named
    counts = dm.region_counts["train"]
    assert (counts["skipped"], counts["bad_images"], counts["bad_keypoints"]) == (1, bad_images, bad_keypoints)
    stems = [Path(r.image_path).stem for r in dm.train_set.records]
    assert stems == ["t10a", "t10b", "t12a", "t12b"]
    # identity 11 is gone; identities 10 and 12 are labelled 0 and 1 again, boxes still one per record
    assert [r.pid for r in dm.train_set.records] == [0, 0, 1, 1]
    assert dm.num_classes == 2 and len(dm.train_set.boxes) == 4
    assert len(dm.eval_set) == 5 and dm.region_counts["gallery"]["skipped"] == 0
    # every epoch reads only good files: nothing is dropped or fails later
    batches = list(dm.train_dataloader())
    assert sum(len(b["pid"]) for b in batches) == 4


def test_skip_in_the_gallery_shrinks_the_evaluation_set(custom_set, caplog):
    _image(custom_set, "g22").write_bytes(b"")
    dm = _datamodule(custom_set, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING, logger="reid.data.index"):
        dm.setup("fit")
    assert "custom/gallery: skipped 1 bad samples" in caplog.text
    assert len(dm.eval_set) == 4 and dm.eval_set.is_query == [True, True, False, False]
    assert len(dm.train_set) == 5


def test_the_error_counts_the_other_bad_samples_of_the_split(custom_set):
    _image(custom_set, "t10a").write_bytes(b"")
    BAD_KEYPOINTS["nan_keypoints"](custom_set)
    _truncate(_image(custom_set, "t12b"))
    with pytest.raises(CorruptImageError, match=r"t10a\.png is empty") as info:
        _datamodule(custom_set).setup("fit")
    assert "[custom/train has 3 bad samples: 2 unreadable images, 1 bad keypoint files]" in str(info.value)


def test_all_samples_of_a_split_bad_is_an_error_even_when_skipping(custom_set):
    for stem, _, _, split in SAMPLES:
        if split == "query":
            _image(custom_set, stem).write_bytes(b"")
    with pytest.raises(CorruptImageError, match="custom/query: all 2 samples are bad"):
        _datamodule(custom_set, on_bad_sample="skip").setup("fit")


def test_header_only_checks_let_a_truncated_image_through_until_it_is_read(custom_set):
    _truncate(_image(custom_set))
    dm = _datamodule(custom_set, verify_images="header")
    dm.setup("fit")  # the header is intact
    assert len(dm.train_set) == 5
    with pytest.raises(CorruptImageError, match=rf"{TARGET}\.png cannot be decoded"):
        dm.train_set[_train_index(dm)]


def test_a_file_spoilt_after_setup_fails_mid_epoch_with_one_line(custom_set):
    # batches of one: drop_last must not leave the spoilt image out of the epoch
    dm = _datamodule(custom_set, batch_size=1)
    dm.setup("fit")
    _image(custom_set).write_bytes(b"garbage")
    with pytest.raises(CorruptImageError) as info:
        list(dm.train_dataloader())
    assert str(_image(custom_set)) in str(info.value) and "\n" not in str(info.value)


def test_unknown_verify_mode_and_pose_key_are_refused(custom_set):
    with pytest.raises(ValueError, match="data.verify_images must be one of decode, header"):
        _datamodule(custom_set, verify_images="full")
    with pytest.raises(ValueError, match=r"unknown data.pose keys \['max_outsid'\]"):
        _datamodule(custom_set, pose={"max_outsid": 0.5})


# ---------------------------------------------------------------------------- odd but valid pixel formats


def _write_grayscale(path: Path) -> tuple[int, int, int]:
    Image.fromarray(np.full((IMAGE_H, IMAGE_W), 77, dtype=np.uint8), mode="L").save(path)
    return 77, 77, 77


def _write_rgba(path: Path) -> tuple[int, int, int]:
    pixels = np.zeros((IMAGE_H, IMAGE_W, 4), dtype=np.uint8)
    pixels[...] = (30, 60, 90, 40)  # a mostly transparent pixel keeps its stored colour
    Image.fromarray(pixels, mode="RGBA").save(path)
    return 30, 60, 90


def _write_gray16(path: Path) -> tuple[int, int, int]:
    # 16-bit 200 * 256 + 57: the 8-bit value is the high byte, 200 (not clipped to 255, not 57)
    Image.fromarray(np.full((IMAGE_H, IMAGE_W), 200 * 256 + 57, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I;16")
    return 200, 200, 200


def _write_rgb16(path: Path) -> tuple[int, int, int]:
    rgb = np.array([10 * 256 + 255, 100 * 256 + 1, 250 * 256 + 128], dtype=np.uint16)
    pixels = np.broadcast_to(rgb[::-1], (IMAGE_H, IMAGE_W, 3))  # OpenCV writes BGR
    assert cv2.imwrite(str(path), np.ascontiguousarray(pixels))
    return 10, 100, 250


ODD_FORMATS = {"grayscale": _write_grayscale, "rgba": _write_rgba, "gray16": _write_gray16, "rgb16": _write_rgb16}


@pytest.mark.parametrize("kind", sorted(ODD_FORMATS))
def test_grayscale_rgba_and_16_bit_images_load_as_rgb_uint8_crops(custom_set, kind):
    expected = ODD_FORMATS[kind](_image(custom_set))
    image = read_image(_image(custom_set))
    assert image.dtype == np.uint8 and image.shape == (IMAGE_H, IMAGE_W, 3)
    assert (image == np.array(expected, dtype=np.uint8)).all()

    dm = _datamodule(custom_set)
    dm.setup("fit")
    assert len(dm.train_set) == 5 and dm.region_counts["train"]["skipped"] == 0
    sample = dm.train_set[_train_index(dm)]
    assert tuple(sample["whole"].shape) == (3, *WHOLE_SIZE)
    assert tuple(sample["parts"].shape) == (4, 3, *PART_SIZE)
    # a constant image stays that constant in every crop (padding uses the image mean), per RGB channel
    for crop in (sample["whole"], *sample["parts"]):
        np.testing.assert_allclose(crop.amax(dim=(1, 2)).numpy(), expected, atol=1e-3)
        np.testing.assert_allclose(crop.amin(dim=(1, 2)).numpy(), expected, atol=1e-3)


# ---------------------------------------------------------------------------- joints far outside the image


@pytest.mark.parametrize("far", [(10_000.0, 30.0), (-1e6, -1e6), (16.0, 10_000.0)])
def test_a_joint_far_outside_the_image_is_filled_and_the_boxes_stay_sane(custom_set, far, caplog):
    good = _datamodule(custom_set)
    good.setup("fit")
    expected = good.train_set.boxes[_train_index(good)]

    keypoints = _pose_in_image()
    keypoints[10, :2] = far  # the right ankle, stretching the lower-leg box to it if it were kept
    _write_keypoints(custom_set, TARGET, keypoints)
    unguarded = _datamodule(custom_set, pose={"max_outside": None})
    unguarded.setup("fit")
    huge = unguarded.train_set.boxes[_train_index(unguarded)]
    assert np.abs(huge).max() > 1000  # what the policy prevents

    dm = _datamodule(custom_set)
    with caplog.at_level(logging.WARNING, logger="reid.pose.regions"):
        dm.setup("fit")
    assert "custom/train: 1 detected joints in 1 images lie more than 0.25 x the image size outside it" in caplog.text
    assert dm.region_counts["train"]["outside_joints"] == 1
    assert dm.region_counts["train"]["filled"] == 1 and dm.region_counts["train"]["skipped"] == 0
    boxes = dm.train_set.boxes[_train_index(dm)]
    # the ankle is filled from the canonical pose it was drawn from: the boxes of the intact pose come back
    np.testing.assert_allclose(boxes, expected, atol=0.5)
    assert boxes[:, [0, 2]].min() > -IMAGE_W and boxes[:, [0, 2]].max() < 2 * IMAGE_W
    assert boxes[:, [1, 3]].min() > -IMAGE_H and boxes[:, [1, 3]].max() < 2 * IMAGE_H
    sample = dm.train_set[_train_index(dm)]
    assert tuple(sample["whole"].shape) == (3, *WHOLE_SIZE) and sample["whole"].isfinite().all()


def test_a_pose_entirely_off_the_image_falls_back_to_strips(custom_set):
    keypoints = _pose_in_image()
    keypoints[:, :2] += 50_000.0
    _write_keypoints(custom_set, TARGET, keypoints)
    dm = _datamodule(custom_set)
    dm.setup("fit")
    assert dm.region_counts["train"]["outside_joints"] == 18 and dm.region_counts["train"]["strips"] == 1
    np.testing.assert_allclose(dm.train_set.boxes[_train_index(dm)][0], [0, 0, IMAGE_W, IMAGE_H])


# ---------------------------------------------------------------------------- one line through train.py


def _one_error_line(cfg, capsys) -> str:
    from reid import tasks as runner

    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def _market_cfg(make_cfg, root: Path, *extra: str):
    return make_cfg(
        "data=market",
        f"data.root={root}",
        "data.pose.source=strips",
        "data.num_workers=0",
        "data.whole_size=[64,32]",
        "data.part_size=[16,32]",
        "model=baseline",
        "model.net.width=0.25",
        "logger=none",
        "callbacks=none",
        "trainer.max_epochs=1",
        *extra,
        tiny=False,
    )


def test_a_file_off_the_naming_pattern_is_one_line_naming_it(make_cfg, tmp_path, capsys):
    from fixtures import DEFAULT_MARKET_SPLITS, write_market_tree

    splits = {**DEFAULT_MARKET_SPLITS, "train": [*DEFAULT_MARKET_SPLITS["train"], "IMG_0001.jpg"]}
    write_market_tree(tmp_path, splits)
    err = _one_error_line(_market_cfg(make_cfg, tmp_path), capsys)
    assert "IMG_0001.jpg: file name does not start with '<pid>_c<camera>'" in err and "rename or remove" in err


def test_a_gallery_that_matches_no_query_is_found_at_setup(make_cfg, tmp_path, capsys):
    from fixtures import DEFAULT_MARKET_SPLITS, write_market_tree

    # identity 2 is in both, but only ever seen by camera 2: nothing to score under the protocol
    splits = {**DEFAULT_MARKET_SPLITS, "query": [(2, 2), (5, 1)], "gallery": [(2, 2), (7, 1), (-1, 3)]}
    write_market_tree(tmp_path, splits)
    err = _one_error_line(_market_cfg(make_cfg, tmp_path), capsys)
    assert "none of the 2 query images has a match in the gallery" in err and "1 identities shared" in err


def test_an_identity_sampler_that_cannot_fill_a_batch_is_one_line(make_cfg, capsys):
    err = _one_error_line(make_cfg("data.sampler=identity", "data.batch_size=6", "data.num_instances=4"), capsys)
    assert err.startswith("error: data.batch_size=6 must be a multiple of data.num_instances=4")


# ---------------------------------------------------------------------------- symbolic links that lead nowhere


def _market_with_a_link_loop(root: Path) -> Path:
    """A Market tree whose training folder also holds 0002_c2s1_000999_01.jpg, a link to a link to itself."""
    from fixtures import write_market_tree

    folder = write_market_tree(root)
    loop = folder / "bounding_box_train" / "0002_c2s1_000999_01.jpg"
    loop.symlink_to("0002_c2s1_000999_02.jpg")
    (loop.parent / "0002_c2s1_000999_02.jpg").symlink_to(loop.name)
    return loop


def test_a_symlink_loop_in_a_data_set_folder_is_a_bad_sample_named_in_one_line(make_cfg, tmp_path, capsys):
    loop = _market_with_a_link_loop(tmp_path)
    err = _one_error_line(_market_cfg(make_cfg, tmp_path), capsys)
    assert err.startswith(f"error: image {loop} is a symbolic link loop that never reaches a file"), err
    assert "set data.on_bad_sample=skip" in err and "[market1501/train has 2 bad samples: 2 unreadable images" in err


def test_skip_counts_symlink_loops_with_the_other_unreadable_images(make_cfg, tmp_path, caplog):
    from reid import tasks as runner

    loop = _market_with_a_link_loop(tmp_path)
    with caplog.at_level(logging.WARNING, logger="reid.data.index"):
        datamodule = runner.build_datamodule(_market_cfg(make_cfg, tmp_path, "data.on_bad_sample=skip"))
    counts = datamodule.region_counts["train"]
    assert (counts["skipped"], counts["bad_images"]) == (2, 2)
    assert "market1501/train: skipped 2 bad samples (2 unreadable images, 0 bad keypoint files)" in caplog.text
    assert str(loop) in caplog.text
    assert all(Path(r.image_path).is_file() for r in datamodule.train_set.records)


# ---------------------------------------------------------------------------- evaluate.py features_path=


def _not_features(kind: str, folder: Path) -> Path:
    import torch

    path = folder / ("notes.txt" if kind == "text" else f"{kind}.pt")
    if kind == "text":
        path.write_text("rank1 0.9\nmAP 0.8\n")
    elif kind == "checkpoint":
        torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(4, 8), path)
    elif kind == "damaged":
        torch.save({"format": "reid-features-v1", "features": {"all": torch.zeros(3, 8)}, "pids": [1]}, path)
    elif kind == "folder":
        path = folder / "run"
        path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("text", "is not a features file: it is not a torch file at all"),
        ("checkpoint", "is not a features file: it holds a dict with keys ['epoch', 'state_dict']"),
        ("tensor", "is not a features file: it holds a Tensor"),
        ("damaged", "is a damaged features file"),
        ("folder", "is a directory; pass the features file in it"),
    ],
)
def test_evaluate_on_a_file_that_is_not_a_features_file_is_one_line(make_cfg, tmp_path, capsys, kind, says):
    from reid import tasks as runner

    path = _not_features(kind, tmp_path)
    cfg = make_cfg(f"features_path={path}", config_name="evaluate", tiny=False)
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.evaluate, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: features_path={path} {says}"), err
    assert (
        "a features file is the features.pt that `python evaluate.py ckpt_path=<checkpoint> eval.save_features=true`"
        in err
    )
