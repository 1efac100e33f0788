"""Tests of the synthetic pedestrian generator: Market-1501 layout, keypoints, caching, identities, cameras."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import reid.data.synthetic.generator as generator_module
from reid.data.synthetic import (
    COMPLETE_MARKER,
    MARKET_NAME_PATTERN,
    PART_ATTRIBUTES,
    IdentitySpec,
    SyntheticParams,
    differing_parts,
    generate,
    plan_dataset,
    render_image,
)
from reid.data.synthetic.figure import J, Pose
from reid.data.synthetic.identities import SALIENT_ATTRIBUTES
from reid.data.synthetic.preview import draw_keypoints, preview_grid
from reid.data.synthetic.scene import CameraStyle

SMALL = dict(
    num_train_ids=6, num_test_ids=4, images_per_train_id=2, images_per_test_id=2, num_distractors=3, num_junk=3
)
SPLITS = ("bounding_box_train", "bounding_box_test", "query")
NAME = re.compile(MARKET_NAME_PATTERN)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic"), **SMALL)


def _names(folder: Path) -> list[re.Match]:
    return [NAME.match(p.name) for p in sorted(folder.glob("*.jpg"))]


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_parameters_give_identical_bytes_in_another_root(small_set, tmp_path):
    again = generate(tmp_path / "elsewhere", **SMALL)
    assert again.name == small_set.name
    first, second = _all_files(small_set), _all_files(again)
    assert len(first) == 3 * (12 + 14 + 8) + 2  # images + keypoint files + truth masks, meta.json, marker
    assert first == second


def test_other_seed_gives_other_folder_and_images(small_set, tmp_path):
    other = generate(tmp_path, **{**SMALL, "seed": 1})
    assert other.name != small_set.name
    assert _all_files(other)["meta.json"] != _all_files(small_set)["meta.json"]


def test_cached_set_is_returned_without_rewriting(tmp_path):
    first = generate(tmp_path, **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    second = generate(tmp_path, **SMALL)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in second.rglob("*")} == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary folders left


def test_layout_names_and_counts(small_set):
    for split in SPLITS:
        assert (small_set / split).is_dir()
        assert (small_set / "keypoints" / split).is_dir()
    train, gallery, query = (_names(small_set / s) for s in SPLITS)
    assert all(m is not None for m in train + gallery + query)
    # 6 ids x 2 images; 4 test ids x 2 gallery images + 3 distractors + 3 junk; 2 queries per test id
    assert (len(train), len(gallery), len(query)) == (12, 14, 8)
    assert sum(m.group(1) == "0000" for m in gallery) == 3
    assert sum(m.group(1) == "-1" for m in gallery) == 3
    assert all(1 <= int(m.group(2)) <= 6 for m in train + gallery + query)
    meta = json.loads((small_set / "meta.json").read_text())
    assert meta["counts"]["train_images"] == 12 and meta["counts"]["query_ids"] == 4
    assert meta["params"]["num_train_ids"] == 6


def test_train_and_test_ids_are_disjoint(small_set):
    train = {m.group(1) for m in _names(small_set / "bounding_box_train")}
    test = {m.group(1) for m in _names(small_set / "bounding_box_test")} - {"0000", "-1"}
    query = {m.group(1) for m in _names(small_set / "query")}
    assert len(train) == 6 and len(test) == 4
    assert not train & test
    assert query == test


def test_every_query_has_a_gallery_image_in_another_camera(small_set):
    gallery = {(m.group(1), m.group(2)) for m in _names(small_set / "bounding_box_test")}
    for m in _names(small_set / "query"):
        assert any(pid == m.group(1) and cam != m.group(2) for pid, cam in gallery), m.group(0)


def _keypoints(dataset: Path, split: str, stem: str) -> np.ndarray:
    data = json.loads((dataset / "keypoints" / split / f"{stem}_keypoints.json").read_text())
    assert data["version"] == 1.3 and len(data["people"]) == 1
    numbers = data["people"][0]["pose_keypoints_2d"]
    assert len(numbers) == 54
    return np.asarray(numbers, dtype=float).reshape(18, 3)


def test_every_image_has_plausible_keypoints(small_set):
    dropped = kept = 0
    for split in SPLITS:
        for path in sorted((small_set / split).glob("*.jpg")):
            height, width = cv2.imread(str(path)).shape[:2]
            assert (height, width) == (128, 64)
            kp = _keypoints(small_set, split, path.stem)
            missing = kp[:, 2] == 0
            assert np.all(kp[missing] == 0), path.name  # dropped joints are exactly 0, 0, 0
            conf = kp[~missing, 2]
            assert np.all((conf > 0.3) & (conf < 1.0)), path.name
            assert np.all((kp[~missing, 0] >= 0) & (kp[~missing, 0] <= width - 1)), path.name
            assert np.all((kp[~missing, 1] >= 0) & (kp[~missing, 1] <= height - 1)), path.name
            dropped += int(missing.sum())
            kept += int((~missing).sum())
    assert kept > 0.6 * (kept + dropped) and dropped > 0


NEUTRAL = CameraStyle(
    index=1, kind="gradient", wall_top=(0, 0, 0), wall_bottom=(0, 0, 0), floor=(0, 0, 0), gains=(1.0, 1.0, 1.0),
    brightness=1.0, contrast=1.0, noise=0.0, blur=0.0, view_weights={"front": 1.0},
)  # fmt: skip
BRIGHT = IdentitySpec(
    skin="light", build=1.0, hair_colour="blonde", hair_length="short", hat="none", shirt_colour="white",
    shirt_pattern="plain", pattern_colour="none", sleeves="long", leg_style="trousers", trouser_colour="sky",
    shoe_colour="white", bag="none", bag_colour="none",
)  # fmt: skip
EXACT = SyntheticParams(
    misalignment=0.0, occlusion_prob=0.0, keypoint_jitter=0.0, keypoint_drop_prob=0.0, brightness_jitter=0.0
)


def _render(yaw: float, gait: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    pose = Pose(yaw_deg=yaw, gait=gait, phase=0.5, arm_abduction=(0.1, 0.1), elbow_flex=(0.2, 0.2))
    black = np.zeros((256, 192, 3), np.float32)
    image, keypoints = render_image(BRIGHT, NEUTRAL, (black, black), np.random.default_rng(0), EXACT, pose=pose)
    return image, np.asarray(keypoints, dtype=float).reshape(18, 3)


@pytest.mark.parametrize("yaw, gait", [(0, 0.0), (180, 0.0), (90, 0.45), (-90, 0.45), (30, 0.3)])
def test_keypoints_sit_on_the_painted_body(yaw, gait):
    image, kp = _render(yaw, gait)
    for j in range(18):
        if kp[j, 2] == 0 or j in (J["r_ear"], J["l_ear"]):  # ears may sit on the head's outline
            continue
        x, y = int(round(kp[j, 0])), int(round(kp[j, 1]))
        assert image[y, x].sum() > 60, f"joint {j} at ({x}, {y}) is on the background"


def test_front_view_geometry_is_hand_checkable():
    _, kp = _render(0)
    # centred box: the neck projects to the canvas centre 64 of 128, i.e. (64 - 0.5) / 2 in the 64-wide image
    assert kp[J["neck"], 0] == pytest.approx(31.75, abs=1e-3)
    # facing the camera, the person's right side is on the image's left
    assert kp[J["r_shoulder"], 0] < kp[J["neck"], 0] < kp[J["l_shoulder"], 0]
    assert kp[J["r_hip"], 0] < kp[J["l_hip"], 0]
    assert kp[J["nose"], 1] < kp[J["neck"], 1] < kp[J["r_hip"], 1] < kp[J["r_knee"], 1] < kp[J["r_ankle"], 1]
    assert np.all(kp[:, 2] > 0)  # everything is visible from the front


def test_back_view_drops_the_face_and_mirrors_sides():
    _, kp = _render(180)
    for j in ("nose", "r_eye", "l_eye"):
        assert np.all(kp[J[j]] == 0)
    assert kp[J["r_ear"], 2] > 0 and kp[J["l_ear"], 2] > 0
    assert kp[J["r_shoulder"], 0] > kp[J["l_shoulder"], 0]


def test_side_view_hides_the_far_eye_and_ear():
    _, kp = _render(90)  # facing image right: the right side is towards the camera
    assert kp[J["r_eye"], 2] > 0 and kp[J["r_ear"], 2] > 0
    assert np.all(kp[J["l_eye"]] == 0) and np.all(kp[J["l_ear"]] == 0)
    assert kp[J["nose"], 0] > kp[J["neck"], 0]


def test_differing_parts_is_hand_checkable():
    other = IdentitySpec(**{**BRIGHT.to_dict(), "shoe_colour": "red", "hat": "black"})
    assert differing_parts(BRIGHT, BRIGHT) == []
    assert differing_parts(BRIGHT, other) == ["head", "feet"]


def test_siblings_differ_from_their_parent_in_exactly_one_part():
    plan = plan_dataset(
        SyntheticParams(num_train_ids=40, num_test_ids=20, sibling_fraction=0.3, num_distractors=5, num_junk=0)
    )
    siblings = [(i, s) for i, s in enumerate(plan.identities) if s.sibling_of is not None]
    assert len(siblings) == 12 + 6
    assert len({s.sibling_of for _, s in siblings}) == len(siblings)  # one sibling per parent
    for index, spec in siblings:
        parent = plan.identities[spec.sibling_of]
        assert parent.sibling_of is None
        assert plan.split_of[spec.sibling_of] == plan.split_of[index]
        assert differing_parts(spec, parent) == [spec.changed_part]
        assert any(getattr(spec, a) != getattr(parent, a) for a in SALIENT_ATTRIBUTES[spec.changed_part])
        assert spec.changed_part in PART_ATTRIBUTES
        assert (spec.skin, spec.build) == (parent.skin, parent.build)
    bases = [s for s in plan.identities if s.sibling_of is None]
    for a in range(len(bases)):
        for b in range(a + 1, len(bases)):
            assert len(differing_parts(bases[a], bases[b])) >= 2
    assert len({s.appearance() for s in plan.identities}) == len(plan.identities)


def _border_colour(path: Path) -> np.ndarray:
    """Mean RGB of the left and right edges of the upper half, where the backdrop shows."""
    image = cv2.imread(str(path)).astype(float)
    upper = image[: image.shape[0] // 2]
    return np.concatenate([upper[:, :6], upper[:, -6:]], axis=1).reshape(-1, 3).mean(axis=0)


def test_cameras_have_their_own_backgrounds(tmp_path):
    dataset = generate(tmp_path, **{**SMALL, "occlusion_prob": 0.0, "misalignment": 0.0})
    paths = sorted((dataset / "bounding_box_train").glob("*.jpg"))
    ids_cams = [(NAME.match(p.name).group(1), NAME.match(p.name).group(2)) for p in paths]
    colours = [_border_colour(p) for p in paths]
    across, within = [], []
    for a in range(len(paths)):
        for b in range(a + 1, len(paths)):
            distance = float(np.abs(colours[a] - colours[b]).sum())
            if ids_cams[a][0] == ids_cams[b][0] and ids_cams[a][1] != ids_cams[b][1]:
                across.append(distance)  # same person, other camera
            elif ids_cams[a][1] == ids_cams[b][1]:
                within.append(distance)  # same camera, other person
    assert across and within
    assert min(across) > 20
    assert np.mean(across) > 2 * np.mean(within)


def test_finished_rename_race_uses_the_winner(tmp_path, monkeypatch):
    real_write = generator_module._write_dataset
    calls = []

    def write_while_another_process_finishes(plan, out):
        calls.append(out)
        if len(calls) == 1:
            generate(tmp_path, **SMALL)  # the "other process" completes first
        return real_write(plan, out)

    monkeypatch.setattr(generator_module, "_write_dataset", write_while_another_process_finishes)
    result = generate(tmp_path, **SMALL)
    assert len(calls) == 2
    assert (result / COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [result.name]


def test_a_failed_run_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_render(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(generator_module, "render_sample", broken_render)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        generate(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_unfinished_folder_is_refused_with_a_fix(tmp_path):
    (tmp_path / SyntheticParams(**SMALL).folder_name()).mkdir()
    with pytest.raises(FileExistsError, match="delete it"):
        generate(tmp_path, **SMALL)


@pytest.mark.parametrize("bad, word", [({"num_cameras": 10}, "num_cameras"), ({"num_test_ids": 0}, "num_test_ids")])
def test_bad_parameters_raise(tmp_path, bad, word):
    with pytest.raises(ValueError, match=word):
        generate(tmp_path, **{**SMALL, **bad})


def test_preview_grid_shape_and_skipped_joints(small_set):
    grid = preview_grid(small_set, per_camera=3, zoom=2, gap=4)
    cameras = {m.group(2) for s in SPLITS for m in _names(small_set / s)}
    assert grid.shape == (len(cameras) * 256 + (len(cameras) - 1) * 4, 56 + 3 * (128 + 4), 3)
    image = np.full((128, 64, 3), 100, np.uint8)
    assert np.array_equal(draw_keypoints(image, [0] * 54), np.full((256, 128, 3), 100, np.uint8))
    drawn = draw_keypoints(image, [10.0, 20.0, 0.9] + [0] * 51)
    assert not np.array_equal(drawn[38:45, 18:25], np.full((7, 7, 3), 100, np.uint8))


def test_the_preview_tool_writes_the_grid_as_png(small_set, tmp_path, monkeypatch, capsys):
    from reid.tools.synthetic_preview import main

    # the default data set takes minutes: the tool draws the small one
    monkeypatch.setattr("reid.data.synthetic.generate", lambda root, seed=0: small_set)
    out = tmp_path / "pictures" / "samples.png"
    assert main([f"root={tmp_path}", f"out={out}", "per_camera=3"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG") and capsys.readouterr().out.startswith(f"wrote {out}")
    written = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, preview_grid(small_set, per_camera=3))
    assert main([f"out={out}"]) == 2 and capsys.readouterr().err.startswith("error: config key 'root' has no value")


def test_presets_resolve_under_explicit_options_and_keep_the_default_folder():
    from reid.data.synthetic.generator import PRESETS, resolve_preset
    from reid.errors import ConfigError

    hard = resolve_preset("hard", {"occlusion_prob": None, "num_train_ids": 10})
    assert hard["clutter"] == PRESETS["hard"]["clutter"] > 0 and hard["occlusion_prob"] == 0.4
    assert hard["num_train_ids"] == 10
    assert resolve_preset("hard", {"occlusion_prob": 0.2})["occlusion_prob"] == 0.2  # explicit wins
    assert resolve_preset(None, {"sibling_fraction": None}) == {}
    # clutter = 0 leaves the cache key (and so the default data set's folder) as it was
    assert SyntheticParams(**resolve_preset("default", {})).folder_name() == SyntheticParams().folder_name()
    assert SyntheticParams(**resolve_preset("hard", {})).folder_name() != SyntheticParams().folder_name()
    with pytest.raises(ConfigError, match="data.options.preset='harder'"):
        resolve_preset("harder", {})


def test_clutter_paints_the_background_in_clothing_colours():
    from reid.data.synthetic.identities import CLOTHES
    from reid.data.synthetic.scene import draw_clutter

    canvas = np.full((128, 64, 3), 77, np.uint8)
    draw_clutter(canvas, 6, np.random.default_rng(0))
    changed = (canvas != 77).any(axis=2)
    assert 0.02 < changed.mean() < 0.9
    colours = {tuple(int(c) for c in canvas[y, x]) for y, x in zip(*np.nonzero(changed))}
    assert colours <= {tuple(c) for c in CLOTHES.values()}
