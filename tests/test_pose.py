"""Tests for reid.pose: keypoint readers, Eq. 1-2 regions, canonical-pose fill-in and strip fallback."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from reid.pose import (
    JOINT_NAMES,
    P1_HEAD,
    P2_UPPER_BODY,
    P3_UPPER_LEG,
    P4_LOWER_LEG,
    PAPER_TO_OPENPOSE,
    KeypointFormatError,
    build_keypoint_source,
    compute_regions,
    fill_missing_joints,
    fit_canonical_pose,
    flip_keypoints,
    image_regions,
    load_canonical_poses,
    read_openpose_json,
    read_pose_transfer_csv,
    regions_for_images,
    strip_regions,
)

# A frontal pose in OpenPose order (x, y); groups' y extents are chosen to give round numbers.
POSE_A_XY = [
    (32, 20),  # 0 nose
    (32, 30),  # 1 neck
    (24, 30),  # 2 r_shoulder
    (22, 45),  # 3 r_elbow
    (22, 60),  # 4 r_wrist
    (40, 30),  # 5 l_shoulder
    (42, 45),  # 6 l_elbow
    (42, 60),  # 7 l_wrist
    (27, 62),  # 8 r_hip
    (27, 84),  # 9 r_knee
    (27, 108),  # 10 r_ankle
    (37, 62),  # 11 l_hip
    (37, 84),  # 12 l_knee
    (37, 108),  # 13 l_ankle
    (30, 18),  # 14 r_eye
    (34, 18),  # 15 l_eye
    (28, 19),  # 16 r_ear
    (36, 19),  # 17 l_ear
]


def pose(xy: list[tuple[float, float]], conf: float = 0.9) -> np.ndarray:
    """(18, 3) keypoints with one confidence for all joints."""
    points = np.asarray(xy, dtype=np.float64)
    return np.concatenate([points, np.full((18, 1), conf)], axis=1)


# --------------------------------------------------------------------------- joint groups


def test_groups_follow_the_paper_numbering_in_openpose_indices():
    # P1 = K1..K8, P2 = K6..K14, P3 = K13..K16, P4 = K15..K18 (paper numbering is 1-based).
    assert P1_HEAD == PAPER_TO_OPENPOSE[0:8] == (0, 14, 15, 16, 17, 1, 2, 5)
    assert P2_UPPER_BODY == PAPER_TO_OPENPOSE[5:14] == (1, 2, 5, 3, 6, 4, 7, 8, 11)
    assert P3_UPPER_LEG == PAPER_TO_OPENPOSE[12:16] == (8, 11, 9, 12)
    assert P4_LOWER_LEG == PAPER_TO_OPENPOSE[14:18] == (9, 12, 10, 13)
    assert sorted(PAPER_TO_OPENPOSE) == list(range(18))
    # Spot checks against SPEC's table: K2 right eye, K10 left elbow, K13 right hip, K18 left ankle.
    assert JOINT_NAMES[PAPER_TO_OPENPOSE[1]] == "r_eye"
    assert JOINT_NAMES[PAPER_TO_OPENPOSE[9]] == "l_elbow"
    assert JOINT_NAMES[PAPER_TO_OPENPOSE[12]] == "r_hip"
    assert JOINT_NAMES[PAPER_TO_OPENPOSE[17]] == "l_ankle"


# --------------------------------------------------------------------------- Eq. 1-2


def test_compute_regions_pose_a_beta_tenth():
    # P1 y: nose 20, neck 30, shoulders 30, eyes 18, ears 19 -> min 18, max 30
    #   top = 2*18 - 30 = 6
    # P4 y: knees 84, ankles 108 -> bottom = 4/3*108 - 1/3*84 = 144 - 28 = 116;  H = 110
    # x: sum = 576 -> xc = 32; H/4 = 27.5; xl = min(4.5, 22) = 4.5; xr = max(59.5, 42) = 59.5
    # beta*H = 0.1*110 = 11
    # P2 y: 30..62 -> (19, 73); P3 y: 62..84 -> (51, 95); P4 min 84 -> (73, 116)
    boxes = compute_regions(pose(POSE_A_XY), 0.1)
    expected = [
        [4.5, 6, 59.5, 116],
        [4.5, 6, 59.5, 41],
        [4.5, 19, 59.5, 73],
        [4.5, 51, 59.5, 95],
        [4.5, 73, 59.5, 116],
    ]
    np.testing.assert_allclose(boxes, expected, atol=1e-9)


def test_compute_regions_beta_zero_gives_joint_extents():
    # Same pose, no overlap: head ends at the shoulders (30), upper body 30..62,
    # upper leg 62..84, lower leg 84..bottom (116).
    boxes = compute_regions(pose(POSE_A_XY)[:, :2], 0.0)
    expected = [
        [4.5, 6, 59.5, 116],
        [4.5, 6, 59.5, 30],
        [4.5, 30, 59.5, 62],
        [4.5, 62, 59.5, 84],
        [4.5, 84, 59.5, 116],
    ]
    np.testing.assert_allclose(boxes, expected, atol=1e-9)


def test_compute_regions_near_the_border_keeps_out_of_image_boxes():
    # Pose A moved up by 10 px and with the wrists stretched outside a 64-wide image:
    # r_wrist x = -6, l_wrist x = 70 (sum x unchanged: -6 + 70 = 22 + 42 -> xc = 32).
    # top = 2*8 - 20 = -4 (above the image), bottom = 4/3*98 - 1/3*74 = 106, H = 110
    # xl = min(32 - 27.5, -6) = -6, xr = max(59.5, 70) = 70
    # beta = 3/48 -> overlap = 110*3/48 = 6.875
    # head: (-4, 20 + 6.875 = 26.875); upper body: (20 - 6.875, 52 + 6.875) = (13.125, 58.875)
    # upper leg: (52 - 6.875, 74 + 6.875) = (45.125, 80.875); lower leg: (74 - 6.875, 106) = (67.125, 106)
    xy = [(x, y - 10) for x, y in POSE_A_XY]
    xy[4] = (-6, xy[4][1])
    xy[7] = (70, xy[7][1])
    boxes = compute_regions(pose(xy), 3 / 48)
    expected = [
        [-6, -4, 70, 106],
        [-6, -4, 70, 26.875],
        [-6, 13.125, 70, 58.875],
        [-6, 45.125, 70, 80.875],
        [-6, 67.125, 70, 106],
    ]
    np.testing.assert_allclose(boxes, expected, atol=1e-9)


def test_compute_regions_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        compute_regions(np.zeros((17, 3)), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        compute_regions(np.full((18, 2), np.nan), 0.1)
    with pytest.raises(ValueError, match="degenerate"):
        compute_regions(np.zeros((18, 2)), 0.1)  # every joint at one point: H = 0


def test_flip_keypoints_mirrors_and_swaps_left_right():
    keypoints = pose(POSE_A_XY)
    keypoints[16] = (0, 0, 0)  # undetected r_ear stays (0, 0, 0), moved to the l_ear slot
    flipped = flip_keypoints(keypoints, 64)
    # r_shoulder (24, 30) mirrors to x = 40 and becomes the left shoulder; l_shoulder (40, 30) -> r at 24.
    np.testing.assert_allclose(flipped[5], [40, 30, 0.9])
    np.testing.assert_allclose(flipped[2], [24, 30, 0.9])
    np.testing.assert_allclose(flipped[17], [0, 0, 0])
    np.testing.assert_allclose(flipped[16], [64 - 36, 19, 0.9])
    np.testing.assert_allclose(flip_keypoints(flipped, 64)[[0, 1, 2, 5, 9, 12]], keypoints[[0, 1, 2, 5, 9, 12]])


# --------------------------------------------------------------------------- OpenPose JSON


def write_json(path: Path, people: list[list[float]] | None = None, raw: str | None = None) -> Path:
    if raw is None:
        raw = json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": p} for p in (people or [])]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw)
    return path


def flat(keypoints: np.ndarray) -> list[float]:
    return [float(v) for v in keypoints.reshape(-1)]


def person_with(n_confident: int, x_offset: float) -> np.ndarray:
    """Pose A shifted in x; the first `n_confident` joints detected, the rest written as 0, 0, 0."""
    keypoints = pose([(x + x_offset, y) for x, y in POSE_A_XY], conf=0.8)
    keypoints[n_confident:] = 0.0
    return keypoints


def test_read_openpose_json_single_person(tmp_path):
    expected = pose(POSE_A_XY, conf=0.7)
    expected[17] = 0.0
    result = read_openpose_json(write_json(tmp_path / "a_keypoints.json", [flat(expected)]))
    np.testing.assert_allclose(result, expected)
    assert result.shape == (18, 3)


def test_read_openpose_json_picks_the_person_with_most_confident_joints(tmp_path):
    weak = person_with(10, 0.0)
    strong = person_with(14, 5.0)
    strong[13, 2] = 0.05  # below the 0.1 threshold: counts as undetected -> 13 joints, still more than 10
    result = read_openpose_json(write_json(tmp_path / "p.json", [flat(weak), flat(strong)]))
    np.testing.assert_allclose(result, strong)


def test_read_openpose_json_ties_go_to_the_person_nearest_the_centre(tmp_path):
    # Both have 12 confident joints (0..11, mean x 374/12 = 31.2); centres at x = 11.2 and 32.2
    # in an image 64 wide: the second is nearer to its centre x = 32.
    off_centre = person_with(12, -20.0)
    centred = person_with(12, 1.0)
    path = write_json(tmp_path / "p.json", [flat(off_centre), flat(centred)])
    np.testing.assert_allclose(read_openpose_json(path, image_size=(64, 128)), centred)
    np.testing.assert_allclose(read_openpose_json(path), off_centre)  # no size: first listed


def test_read_openpose_json_no_people_is_none(tmp_path):
    assert read_openpose_json(write_json(tmp_path / "none.json", [])) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"people": [', "not valid JSON"),
        (json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 51}]}), "51 numbers"),
        ('{"people": [{"pose_keypoints_2d": [' + ", ".join(["1.0"] * 53 + ["NaN"]) + "]}]}", "item 53 is nan"),
        (json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 53 + ["a"]}]}), "not a number"),
        (json.dumps({"persons": []}), "no 'people' list"),
    ],
    ids=["bad-json", "17-joints", "nan", "non-numeric", "no-people-key"],
)
def test_read_openpose_json_malformed_files_name_the_file(tmp_path, raw, message):
    path = write_json(tmp_path / "broken_keypoints.json", raw=raw)
    with pytest.raises(KeypointFormatError, match=message) as info:
        read_openpose_json(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- Pose-Transfer CSV

EXAMPLE_ROW = (
    "0161_c3s3_033053_04.jpg: [14, 24, 25, 44, 61, 24, 42, 56, 61, 86, 112, 60, 86, 101, 12, 11, 10, -1]"
    ": [38, 33, 20, 14, 20, 46, 52, 63, 29, 33, 34, 43, 36, 14, 35, 39, 27, -1]"
)
GOOD_ROW_2 = "0002_c1s1_000451_03.jpg: [" + ", ".join(["20"] * 18) + "]: [" + ", ".join(["30"] * 18) + "]"


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text("\n".join(["name:keypoints_y:keypoints_x", *rows]) + "\n")
    return path


def test_read_pose_transfer_csv_example_row(tmp_path):
    table = read_pose_transfer_csv(write_csv(tmp_path / "market-annotation-test.csv", EXAMPLE_ROW, GOOD_ROW_2))
    assert set(table) == {"0161_c3s3_033053_04.jpg", "0002_c1s1_000451_03.jpg"}
    keypoints = table["0161_c3s3_033053_04.jpg"]
    # y list first, x list second: nose y = 14, x = 38; r_ankle (10) y = 112, x = 34; l_ear (17) missing.
    np.testing.assert_allclose(keypoints[0], [38, 14, 1])
    np.testing.assert_allclose(keypoints[10], [34, 112, 1])
    np.testing.assert_allclose(keypoints[17], [0, 0, 0])
    assert keypoints[:, 2].sum() == 17


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("0003_c1s1_000551_01.jpg: [" + ", ".join(["1"] * 18) + "]", "2 ':'-separated columns"),
        ("0003_c1s1_000551_01.jpg: [" + ", ".join(["1"] * 17) + "]: [" + ", ".join(["1"] * 18) + "]", "17 joints"),
        ("0003_c1s1_000551_01.jpg: [" + ", ".join(["1"] * 17 + ["NaN"]) + "]: [" + ", ".join(["1"] * 18) + "]", "nan"),
        ("0003_c1s1_000551_01.jpg: [a, b]: [" + ", ".join(["1"] * 18) + "]", "not a JSON list"),
        ("0003_c1s1_000551_01.jpg: [" + ", ".join(['"x"'] * 18) + "]: [" + ", ".join(["1"] * 18) + "]", "not a number"),
    ],
    ids=["columns", "17-joints", "nan", "non-numeric", "strings"],
)
def test_read_pose_transfer_csv_malformed_rows_name_file_and_line(tmp_path, bad_row, message):
    path = write_csv(tmp_path / "annotations.csv", GOOD_ROW_2, bad_row)
    with pytest.raises(KeypointFormatError, match=message) as info:
        read_pose_transfer_csv(path)
    assert f"{path}, line 3" in str(info.value)


# --------------------------------------------------------------------------- keypoint sources


def test_openpose_source_lookup_order_and_missing_files(tmp_path):
    root = tmp_path / "keypoints"
    image = "/data/Market/bounding_box_train/0002_c1s1_000451_03.jpg"
    stem = "0002_c1s1_000451_03"
    candidates = [
        root / "bounding_box_train" / f"{stem}_keypoints.json",
        root / "bounding_box_train" / f"{stem}.json",
        root / f"{stem}_keypoints.json",
        root / f"{stem}.json",
    ]
    for rank, path in enumerate(candidates):
        write_json(path, [flat(pose(POSE_A_XY, conf=0.5 + rank / 10))])
    source = build_keypoint_source("openpose_json", root)
    for rank, path in enumerate(candidates):
        # The highest-priority file present wins; its confidence tells which one was read.
        assert source.get(image)[0, 2] == pytest.approx(0.5 + rank / 10)
        path.unlink()
    assert source.get(image) is None
    assert (source.n_found, source.n_missing) == (4, 1)


def test_csv_source_keys_by_file_name_across_files_and_rescales(tmp_path):
    train = write_csv(tmp_path / "train.csv", EXAMPLE_ROW)
    test = write_csv(tmp_path / "test.csv", GOOD_ROW_2)
    source = build_keypoint_source("pose_transfer_csv", [train, test])
    assert source.get("/x/bounding_box_test/0161_c3s3_033053_04.jpg")[0].tolist() == [38, 14, 1]
    assert source.get("/x/query/0002_c1s1_000451_03.jpg")[0].tolist() == [30, 20, 1]
    assert source.get("/x/query/9999_c1s1_000451_03.jpg") is None
    # Coordinates given in a 64x128 frame, image actually 128x256: everything doubles, missing stays 0.
    scaled = build_keypoint_source("pose_transfer_csv", train, image_size_hint=(64, 128))
    keypoints = scaled.get("0161_c3s3_033053_04.jpg", image_size=(128, 256))
    assert keypoints[0].tolist() == [76, 28, 1]
    assert keypoints[17].tolist() == [0, 0, 0]


def test_build_keypoint_source_strips_unknown_and_missing(tmp_path):
    assert build_keypoint_source("strips", None) is None
    with pytest.raises(ValueError, match="unknown keypoint source"):
        build_keypoint_source("densepose", tmp_path)
    with pytest.raises(FileNotFoundError, match="keypoint folder not found"):
        build_keypoint_source("openpose_json", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        build_keypoint_source("pose_transfer_csv", tmp_path / "absent.csv")


# --------------------------------------------------------------------------- canonical poses


def test_canonical_poses_are_packaged_and_well_formed():
    poses = load_canonical_poses()
    assert len(poses.names) >= 8
    assert poses.coords.shape == (len(poses.names), 18, 2)
    assert {"front_standing", "back_standing", "left_standing", "right_walking_r"} <= set(poses.names)
    front = poses.coords[poses.names.index("front_standing")]
    back = poses.coords[poses.names.index("back_standing")]
    # Facing the camera the right shoulder is on the image's left; seen from behind, on its right.
    assert front[2, 0] < front[5, 0]
    assert back[2, 0] > back[5, 0]


def test_packaged_canonical_poses_match_their_generator(tmp_path):
    from reid.pose.canonical import CANONICAL_POSES_PATH, generate_canonical_poses
    from reid.tools.canonical_poses import main

    poses = load_canonical_poses()
    generated = generate_canonical_poses()
    assert list(generated) == list(poses.names)
    np.testing.assert_allclose(np.array(list(generated.values())), poses.coords, atol=0)
    assert main([f"out={tmp_path / 'poses.json'}"]) == 0
    assert load_canonical_poses(tmp_path / "poses.json").names == poses.names
    # the packaged file is what `python -m reid.tools.canonical_poses` writes, byte for byte
    assert (tmp_path / "poses.json").read_bytes() == CANONICAL_POSES_PATH.read_bytes()


def placed_canonical(name: str, scale: float, shift: tuple[float, float], angle: float = 0.0) -> np.ndarray:
    """A canonical pose rotated by `angle` radians, scaled and moved into pixels, all joints confident."""
    poses = load_canonical_poses()
    c = poses.coords[poses.names.index(name)]
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pose(list(map(tuple, scale * c @ rotation.T + np.asarray(shift))))


def test_fill_recovers_dropped_knees_of_a_moved_canonical_pose():
    truth = placed_canonical("front_walking_r", 150.0, (20.0, 5.0))
    observed = truth.copy()
    observed[[9, 12]] = (0.0, 0.0, 0.0)  # knees undetected
    filled, n_filled = fill_missing_joints(observed, 0.1)
    assert n_filled == 2
    np.testing.assert_allclose(filled[:, :2], truth[:, :2], atol=1e-6)
    np.testing.assert_array_equal(filled[:, 2], observed[:, 2])  # confidences untouched
    fit = fit_canonical_pose(observed, observed[:, 2] > 0.1)
    assert fit.name == "front_walking_r"
    assert fit.scale == pytest.approx(150.0)
    assert fit.residual == pytest.approx(0.0, abs=1e-9)


def test_fill_with_noise_stays_close():
    rng = np.random.default_rng(3)
    truth = placed_canonical("left_walking_l", 120.0, (-10.0, 12.0))
    observed = truth.copy()
    observed[:, :2] += rng.normal(0.0, 1.0, (18, 2))  # 1 px noise on a 120 px body
    observed[[10, 13, 4], 2] = 0.02  # ankles and a wrist below min_conf
    filled, n_filled = fill_missing_joints(observed, 0.1)
    assert n_filled == 3
    assert np.abs(filled[[10, 13, 4], :2] - truth[[10, 13, 4], :2]).max() < 4.0


def test_fill_with_rotation_option():
    truth = placed_canonical("back_standing", 100.0, (30.0, 10.0), angle=math.radians(12))
    observed = truth.copy()
    observed[[9, 12], 2] = 0.0
    rotated, _ = fill_missing_joints(observed, 0.1, allow_rotation=True)
    upright, _ = fill_missing_joints(observed, 0.1)
    np.testing.assert_allclose(rotated[[9, 12], :2], truth[[9, 12], :2], atol=1e-6)
    assert np.abs(upright[[9, 12], :2] - truth[[9, 12], :2]).max() > 2.0  # the upright fit cannot follow


def test_fill_needs_min_joints():
    observed = placed_canonical("front_standing", 100.0, (0.0, 0.0))
    observed[4:, 2] = 0.0  # 4 confident joints
    with pytest.raises(ValueError, match="only 4 joints"):
        fill_missing_joints(observed, 0.1, min_joints=5)
    _, n_filled = fill_missing_joints(observed, 0.1, min_joints=4)
    assert n_filled == 14


# --------------------------------------------------------------------------- strips and fallback


def test_strip_regions_equal_quarters_with_overlap():
    # 64x128 image, beta = 0.1 -> overlap 12.8; quarters at 32, 64, 96.
    boxes = strip_regions(64, 128, 0.1)
    expected = [
        [0, 0, 64, 128],
        [0, 0, 64, 44.8],
        [0, 19.2, 64, 76.8],
        [0, 51.2, 64, 108.8],
        [0, 83.2, 64, 128],
    ]
    np.testing.assert_allclose(boxes, expected, atol=1e-9)
    np.testing.assert_allclose(strip_regions(64, 128, 0.0)[1:, [1, 3]], [[0, 32], [32, 64], [64, 96], [96, 128]])


def test_strip_regions_canonical_layout_follows_the_poses():
    boxes = strip_regions(64, 100, 0.0, layout="canonical")
    starts, ends = boxes[1:, 1], boxes[1:, 3]
    assert starts[0] == 0 and ends[3] == 100
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(ends) > 0)
    # Head ends at the shoulders, about a quarter down the Eq. 1 box; the lower leg starts at the knees.
    assert 18 < ends[0] < 30 and 65 < starts[3] < 80
    with pytest.raises(ValueError, match="unknown strip layout"):
        strip_regions(64, 100, 0.0, layout="thirds")


def test_image_regions_statuses():
    full = pose(POSE_A_XY)
    boxes, status, n_filled = image_regions(full, 64, 128, beta=0.1)
    assert (status, n_filled) == ("pose", 0)
    np.testing.assert_allclose(boxes, compute_regions(full, 0.1))

    truth = placed_canonical("front_standing", 100.0, (8.0, 10.0))
    knees_missing = truth.copy()
    knees_missing[[9, 12], 2] = 0.0
    boxes, status, n_filled = image_regions(knees_missing, 64, 128, beta=0.1)
    assert (status, n_filled) == ("filled", 2)
    np.testing.assert_allclose(boxes, compute_regions(truth, 0.1), atol=1e-6)

    boxes, status, n_filled = image_regions(None, 64, 128, beta=0.1)
    assert (status, n_filled) == ("strips", 0)
    np.testing.assert_allclose(boxes, strip_regions(64, 128, 0.1))
    boxes, _, _ = image_regions(None, 64, 128, beta=0.1, strip_options={"layout": "canonical"})
    np.testing.assert_allclose(boxes, strip_regions(64, 128, 0.1, layout="canonical"))

    few = full.copy()
    few[3:, 2] = 0.0
    assert image_regions(few, 64, 128, beta=0.1, min_joints=5)[1] == "strips"


def test_regions_for_images_counts_and_logs(caplog):
    truth = placed_canonical("front_standing", 100.0, (8.0, 10.0))
    filled = truth.copy()
    filled[[9, 12, 10], 2] = 0.0
    few = truth.copy()
    few[2:, 2] = 0.0
    items = [
        ("a.jpg", truth, (64, 128)),
        ("b.jpg", filled, (64, 128)),
        ("c.jpg", None, (64, 128)),
        ("d.jpg", few, (64, 128)),
    ]
    with caplog.at_level(logging.INFO, logger="reid.pose.regions"):
        batch = regions_for_images(items, beta=0.1, log_name="toy/train")
    assert batch.boxes.shape == (4, 5, 4)
    assert batch.counts == {"pose": 1, "filled": 1, "strips": 2}
    assert batch.n_filled == 3
    assert batch.status == ["pose", "filled", "strips", "strips"]
    np.testing.assert_allclose(batch.boxes[2], strip_regions(64, 128, 0.1))
    assert "4 toy/train: 1 from pose, 1 filled from canonical poses (3 joints), 2 fixed strips" in caplog.text
    assert "1 without keypoints, 1 with < 5 joints" in caplog.text


def test_the_canonical_pose_command_names_a_missing_out_folder_in_one_line(tmp_path, capsys):
    from reid.tools.canonical_poses import main

    assert main([f"out={tmp_path / 'missing' / 'poses.json'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out=") and "missing" in err[0] and "fix:" in err[0]
    assert not (tmp_path / "missing").exists()
