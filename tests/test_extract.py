"""Offline keypoint extraction (reid.pose.extract, reid.tools.extract_pose) with a fake estimator, without MediaPipe."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_image, write_market_tree

from reid.conf.tool import tool_options
from reid.data.records import Record, ReIDDataset
from reid.pose import OpenPoseJsonSource, read_openpose_json
from reid.pose.extract import (
    MEDIAPIPE_MISSING,
    PoseEstimatorUnavailable,
    build_estimator,
    keypoint_json_path,
    mediapipe_to_coco18,
    register_estimator,
)
from reid.tools.extract_pose import ExtractOptions, dataset_image_paths, extract_dataset, extract_keypoints, main


def _landmarks() -> np.ndarray:
    """33 MediaPipe landmarks, all invisible, except a hand-placed set (normalised x, y, visibility)."""
    landmarks = np.zeros((33, 3))
    landmarks[0] = (0.5, 0.1, 0.9)  # nose
    landmarks[2] = (0.55, 0.08, 0.8)  # left eye
    landmarks[5] = (0.45, 0.08, 0.7)  # right eye
    landmarks[11] = (0.75, 0.25, 0.9)  # left shoulder (on the image's right: the person faces us)
    landmarks[12] = (0.25, 0.25, 0.6)  # right shoulder
    landmarks[24] = (0.3, 0.5, 0.95)  # right hip
    landmarks[27] = (0.6, 1.2, 0.99)  # left ankle, below the image: dropped
    landmarks[26] = (0.3, 0.7, 0.3)  # right knee, visibility below 0.5: dropped
    return landmarks


def test_mediapipe_to_coco18_maps_sides_neck_and_drops_invisible_joints() -> None:
    joints = mediapipe_to_coco18(_landmarks(), (64, 128))
    assert joints.shape == (18, 3)
    np.testing.assert_allclose(joints[0], (32.0, 12.8, 0.9))  # nose
    np.testing.assert_allclose(joints[5], (48.0, 32.0, 0.9))  # l_shoulder <- MediaPipe 11
    np.testing.assert_allclose(joints[2], (16.0, 32.0, 0.6))  # r_shoulder <- MediaPipe 12
    np.testing.assert_allclose(joints[1], (32.0, 32.0, 0.6))  # neck: mid-point, min confidence
    np.testing.assert_allclose(joints[15], (35.2, 10.24, 0.8))  # l_eye <- 2
    np.testing.assert_allclose(joints[14], (28.8, 10.24, 0.7))  # r_eye <- 5
    np.testing.assert_allclose(joints[8], (19.2, 64.0, 0.95))  # r_hip <- 24
    np.testing.assert_array_equal(joints[13], 0.0)  # l_ankle outside the image
    np.testing.assert_array_equal(joints[9], 0.0)  # r_knee not visible enough
    detected = {i for i in range(18) if joints[i, 2] > 0}
    assert detected == {0, 1, 2, 5, 8, 14, 15}


def test_mediapipe_to_coco18_neck_needs_both_shoulders_and_frame_maps_back_from_padding() -> None:
    landmarks = _landmarks()
    landmarks[12, 2] = 0.4  # right shoulder below the threshold
    joints = mediapipe_to_coco18(landmarks, (64, 128))
    np.testing.assert_array_equal(joints[1], 0.0)
    np.testing.assert_array_equal(joints[2], 0.0)
    assert joints[5, 2] == pytest.approx(0.9)

    # A 64x128 image centred on a 256x256 canvas sits at (96, 64): canvas (0.5, 0.5) is image (32, 64).
    landmarks = np.zeros((33, 3))
    landmarks[0] = (0.5, 0.5, 1.0)
    landmarks[23] = (0.25, 0.5, 1.0)  # canvas x 64 -> image x -32: outside, dropped
    joints = mediapipe_to_coco18(landmarks, (64, 128), frame=(-96, -64, 256, 256), min_visibility=0.2)
    np.testing.assert_allclose(joints[0], (32.0, 64.0, 1.0))
    np.testing.assert_array_equal(joints[11], 0.0)


def test_mediapipe_to_coco18_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(33, 3\)"):
        mediapipe_to_coco18(np.zeros((17, 3)), (64, 128))


class FakeEstimator:
    """Puts joint j at (j + image mean / 100, 2 j); no person when the image is darker than `dark`."""

    def __init__(self, dark: float = -1.0) -> None:
        self.dark = dark
        self.calls = 0

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        self.calls += 1
        mean = float(image.mean())
        if mean < self.dark:
            return None
        joints = np.zeros((18, 3))
        joints[:, 0] = np.arange(18) + mean / 100.0
        joints[:, 1] = 2.0 * np.arange(18)
        joints[:, 2] = 0.5
        joints[17] = 0.0  # one undetected joint, written as OpenPose writes it
        return joints


def _images(tmp_path: Path) -> list[str]:
    paths = [
        write_image(tmp_path / "data" / "bounding_box_train" / "0001_c1s1_000100_01.jpg", seed=1),
        write_image(tmp_path / "data" / "bounding_box_train" / "0002_c2s1_000200_01.jpg", seed=2),
        write_image(tmp_path / "data" / "query" / "0003_c1s1_000300_01.jpg", seed=3),
    ]
    return [str(p) for p in paths]


def test_extract_writes_one_json_per_image_that_the_reader_reads_back(tmp_path: Path) -> None:
    images = _images(tmp_path)
    out = tmp_path / "kp"
    fake = FakeEstimator()
    counts = extract_keypoints(images + [images[0]], out, fake, progress=False)
    assert (counts.done, counts.skipped_existing, counts.no_person, counts.failed) == (3, 0, 0, [])
    assert fake.calls == 3  # the duplicate path is processed once
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "bounding_box_train/0001_c1s1_000100_01_keypoints.json",
        "bounding_box_train/0002_c2s1_000200_01_keypoints.json",
        "query/0003_c1s1_000300_01_keypoints.json",
    ]
    from reid.data.io import read_image

    for image in images:
        expected = FakeEstimator()(read_image(image))
        document = json.loads(keypoint_json_path(out, image).read_text())
        assert document["version"] == 1.3 and len(document["people"][0]["pose_keypoints_2d"]) == 54
        np.testing.assert_allclose(read_openpose_json(keypoint_json_path(out, image)), expected)
        # The data module's lookup finds the same file.
        np.testing.assert_allclose(OpenPoseJsonSource(out).get(image), expected)


def test_extract_resumes_and_overwrite_rewrites(tmp_path: Path) -> None:
    images = _images(tmp_path)
    out = tmp_path / "kp"
    extract_keypoints(images, out, FakeEstimator(), progress=False)
    target = keypoint_json_path(out, images[1])
    os.utime(target, (1_000_000, 1_000_000))

    again = FakeEstimator()
    counts = extract_keypoints(images, out, again, progress=False)
    assert (counts.done, counts.skipped_existing, again.calls) == (0, 3, 0)
    assert target.stat().st_mtime == 1_000_000

    redo = FakeEstimator()
    counts = extract_keypoints(images, out, redo, overwrite=True, limit=2, progress=False)
    assert (counts.done, counts.skipped_existing, redo.calls) == (2, 0, 2)
    assert target.stat().st_mtime != 1_000_000
    assert not list(out.rglob("*.tmp"))


def test_extract_writes_empty_people_when_nobody_is_found_and_names_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = _images(tmp_path)
    broken = tmp_path / "data" / "query" / "0004_c1s1_000400_01.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "kp"
    with caplog.at_level(logging.INFO, logger="reid.tools.extract_pose"):
        counts = extract_keypoints(images + [str(broken)], out, FakeEstimator(dark=256.0), progress=False)
    assert (counts.done, counts.no_person, counts.failed) == (3, 3, [str(broken)])
    for image in images:
        path = keypoint_json_path(out, image)
        assert json.loads(path.read_text()) == {"version": 1.3, "people": []}
        assert read_openpose_json(path) is None
    assert not keypoint_json_path(out, broken).exists()
    assert str(broken) in caplog.text and "3 with no person found" in caplog.text and "1 failed" in caplog.text


def test_extract_refuses_two_images_that_share_a_json_path(tmp_path: Path) -> None:
    first = write_image(tmp_path / "a" / "query" / "x.jpg")
    second = write_image(tmp_path / "b" / "query" / "x.png")
    with pytest.raises(ValueError, match="both map to"):
        extract_keypoints([str(first), str(second)], tmp_path / "kp", FakeEstimator(), progress=False)


def test_dataset_image_paths_keeps_split_order_and_drops_duplicates(tmp_path: Path) -> None:
    dataset = ReIDDataset(
        name="t",
        root=tmp_path,
        train=[Record("a.jpg", 0, 0), Record("b.jpg", 1, 0)],
        query=[Record("c.jpg", 5, 1)],
        gallery=[Record("c.jpg", 5, 1), Record("d.jpg", 6, 2)],
    )
    assert dataset_image_paths(dataset) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def test_main_extracts_a_market_tree_into_its_keypoint_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = {"train": [(1, 1), (1, 2)], "query": [(3, 1)], "gallery": [(3, 2), (0, 3)]}
    folder = write_market_tree(tmp_path / "data", splits)
    register_estimator("fake_for_tests")(lambda **options: FakeEstimator(**options))
    monkeypatch.chdir(tmp_path)
    args = ["data=market", f"data_dir={tmp_path / 'data'}", "estimator=fake_for_tests", "overwrite=false"]
    counts = extract_dataset(tool_options(ExtractOptions, args + ["limit=3"], "extract-pose"))
    assert (counts.done, counts.skipped_existing) == (3, 0)
    counts = extract_dataset(tool_options(ExtractOptions, args + ["+estimator_options.dark=256"], "extract-pose"))
    assert (counts.done, counts.skipped_existing, counts.no_person) == (2, 3, 2)
    keypoints = folder / "keypoints"
    for image in sorted(folder.glob("*/*.jpg")):
        found = read_openpose_json(keypoint_json_path(keypoints, image))
        # The first run (limit=3) covered train and query; the second, with nobody found, the gallery.
        assert (found is None) == (image.parent.name == "bounding_box_test"), image
    assert len(list(keypoints.rglob("*_keypoints.json"))) == 5


def test_missing_mediapipe_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    with pytest.raises(PoseEstimatorUnavailable) as caught:
        build_estimator("mediapipe")
    assert str(caught.value) == MEDIAPIPE_MISSING
    assert "run make pose" in MEDIAPIPE_MISSING and "\n" not in MEDIAPIPE_MISSING
    # the extraction fails before composing the config or touching any data set.
    with pytest.raises(PoseEstimatorUnavailable, match="MediaPipe is not installed"):
        extract_dataset(ExtractOptions(data="does_not_exist"))


def test_the_tool_prints_one_error_line_without_mediapipe(tmp_path: Path, monkeypatch, capsys) -> None:
    # main() in this process, `import mediapipe` blocked (the command in a new Python: the slow test below)
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.chdir(tmp_path)
    assert main(["data=synthetic"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {MEDIAPIPE_MISSING}"]


@pytest.mark.slow
def test_command_line_prints_one_error_line_without_mediapipe(tmp_path: Path) -> None:
    import subprocess

    # Blocks `import mediapipe` in the child process whether or not it is installed, then runs the CLI.
    script = (
        "import runpy, sys; sys.modules['mediapipe'] = None; "
        "sys.argv = ['reid.tools.extract_pose', 'data=synthetic']; "
        "runpy.run_module('reid.tools.extract_pose', run_name='__main__', alter_sys=True)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {MEDIAPIPE_MISSING}"]
    assert main(["data=synthetic", "limt=3"]) == 2  # as every tool: a misspelt option is one line


def test_unknown_estimator_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="mediapipe"):
        build_estimator("openpose_gpu")


def test_mediapipe_estimator_pads_to_a_square_and_finds_nobody_in_a_black_image() -> None:
    try:
        estimator = build_estimator("mediapipe", margin=0.5)
    except PoseEstimatorUnavailable as err:
        pytest.skip(str(err))
    image = np.full((128, 64, 3), 7, dtype=np.uint8)
    canvas, (left, top) = estimator.pad(image)  # type: ignore[attr-defined]
    assert canvas.shape == (256, 256, 3) and (left, top) == (96, 64)
    assert canvas[64:192, 96:160].min() == 7 and canvas[:64].max() == 0 and canvas[:, :96].max() == 0
    assert estimator(np.zeros((128, 64, 3), dtype=np.uint8)) is None
