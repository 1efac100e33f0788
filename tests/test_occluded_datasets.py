"""The occluded benchmarks (Occluded-Duke, Occluded-REID, Partial-REID) from fixture trees in the releases' layouts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_duke_tree, write_image, write_market_tree
from omegaconf import open_dict

from reid import tasks as runner
from reid.data.datasets import DatasetFormatError, DatasetNotFoundError, is_test_only, load
from reid.data.records import Record
from reid.pose import OpenPoseJsonSource
from reid.pose.canonical import load_canonical_poses
from reid.tools.extract_pose import extract_keypoints

IMAGE_W, IMAGE_H = 32, 64
# the tiny input of the end-to-end runs: data.whole_size, data.part_size
SIZES = ("data.whole_size=[64,32]", "data.part_size=[16,32]")

# Occluded-Duke: Duke's names; train pids 3, 8 (labels 0, 1); every query occluded (as in the release)
OCCLUDED_DUKE_SPLITS: dict[str, list] = {
    "train": [(8, 2), (3, 1), (3, 5), (8, 7)],
    "query": [(20, 1), (21, 8)],
    "gallery": [(20, 3), (21, 2), (21, 6), (40, 4)],
}


def pid_cam(records: list[Record]) -> list[tuple[int, int]]:
    return [(r.pid, r.camid) for r in records]


def write_occluded_reid(root: Path, pids=(1, 2, 17), per_id: int = 2, *, folder: str = "Occluded_REID") -> Path:
    """``<folder>/{occluded_body_images,whole_body_images}/<pid:03d>/<pid:03d>_<n:02d>.tif``, the release's layout."""
    base = Path(root) / folder
    for split, seed in (("occluded_body_images", 0), ("whole_body_images", 1000)):
        for pid in pids:
            for n in range(1, per_id + 1):
                name = f"{pid:03d}/{pid:03d}_{n:02d}.tif"
                write_image(base / split / name, width=IMAGE_W, height=IMAGE_H, seed=seed + 10 * pid + n)
    return base


def write_partial_reid(root: Path, pids=(1, 5), per_id: int = 2, *, folder: str = "Partial_REID") -> Path:
    """``<folder>/{partial_body_images,whole_body_images}/<pid:03d>_<n:03d>.jpg``, the release's layout."""
    base = Path(root) / folder
    for split, seed in (("partial_body_images", 0), ("whole_body_images", 1000)):
        for pid in pids:
            for n in range(1, per_id + 1):
                name = f"{pid:03d}_{n:03d}.jpg"
                write_image(base / split / name, width=IMAGE_W, height=IMAGE_H, seed=seed + 10 * pid + n)
    return base


def standing_pose(confidence: float) -> np.ndarray:
    """A canonical standing pose scaled into an IMAGE_W x IMAGE_H image, every joint at ``confidence`` (18, 3)."""
    coords = load_canonical_poses().coords[0]
    scale = 0.85 * IMAGE_H / (coords[:, 1].max() - coords[:, 1].min())
    xy = (coords - coords.min(axis=0)) * scale
    xy += [(IMAGE_W - xy[:, 0].max()) / 2, 0.05 * IMAGE_H]
    return np.column_stack([xy, np.full(len(xy), confidence)])


def write_keypoints(path: Path, keypoints: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": keypoints.ravel().tolist()}]}))
    return path


# ------------------------------------------------------------------------------------ Occluded-Duke


@pytest.mark.parametrize("parent", [".", "occluded_duke"])
def test_occluded_duke_is_read_with_dukes_rules_and_a_subset_is_a_warning(tmp_path, parent, caplog):
    folder = write_duke_tree(tmp_path / parent, OCCLUDED_DUKE_SPLITS, folder="Occluded_Duke", keypoints=True)
    with caplog.at_level(logging.WARNING):
        dataset = load("occluded_duke", tmp_path)
    assert dataset.name == "occluded_duke" and dataset.root == folder.absolute() and dataset.protocol == "market"
    # files sorted by name; train pids 3, 8 -> 0, 1; cameras 1-8 -> 0-7; test pids kept
    assert pid_cam(dataset.train) == [(0, 0), (0, 4), (1, 1), (1, 6)]
    assert pid_cam(dataset.query) == [(20, 0), (21, 7)]
    assert pid_cam(dataset.gallery) == [(20, 2), (21, 1), (21, 5), (40, 3)]
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (4, 2, 4)
    assert dataset.keypoint_dir == folder.absolute() / "keypoints"
    assert not is_test_only("occluded_duke")
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "Occluded-Duke at" in warning[0]
    assert "train 4 images (official 15618), train 2 ids (official 702)" in warning[0]
    assert "query 2 images (official 2210)" in warning[0] and "gallery 4 images (official 17661)" in warning[0]
    assert "fine for a subset" in warning[0]


def test_occluded_duke_missing_names_the_folders_and_the_conversion_script(tmp_path):
    write_duke_tree(tmp_path)  # plain DukeMTMC-reID is not Occluded-Duke
    with pytest.raises(DatasetNotFoundError) as info:
        load("occluded_duke", tmp_path)
    message = str(info.value)
    assert f"{tmp_path / 'Occluded_Duke'} (does not exist)" in message
    assert "convert_duke_to_occduke.py" in message and "lightas/Occluded-DukeMTMC-Dataset" in message
    assert "<pid>_c<camera>_f<frame>.jpg" in message and "\n" not in message


def test_occluded_duke_camera_nine_names_the_file(tmp_path):
    write_duke_tree(tmp_path, {"train": [(1, 9)], "query": [(2, 1)], "gallery": [(2, 2)]}, folder="Occluded_Duke")
    with pytest.raises(DatasetFormatError, match=r"0001_c9_f0000100\.jpg: camera c9 outside 1-8"):
        load("occluded_duke", tmp_path)


# ------------------------------------------------------------------------------------ Occluded-REID


def test_occluded_reid_reads_identity_folders_with_queries_camera_0_and_gallery_camera_1(tmp_path, caplog):
    folder = write_occluded_reid(tmp_path)
    query_dir = folder / "occluded_body_images"
    # PVPM's pose script converts each .tif in place: the .jpg copy of the same stem is not a second image
    write_image(query_dir / "002" / "002_01.jpg", width=IMAGE_W, height=IMAGE_H)
    (query_dir / "002" / "Thumbs.db").write_bytes(b"not an image")
    (query_dir / "readme.txt").write_text("outside any identity folder")
    with caplog.at_level(logging.INFO):
        dataset = load("occluded_reid", tmp_path)
    assert dataset.name == "occluded_reid" and dataset.root == folder.absolute() and dataset.protocol == "market"
    assert dataset.train == [] and is_test_only("occluded_reid")
    assert pid_cam(dataset.query) == [(1, 0), (1, 0), (2, 0), (2, 0), (17, 0), (17, 0)]
    assert pid_cam(dataset.gallery) == [(1, 1), (1, 1), (2, 1), (2, 1), (17, 1), (17, 1)]
    assert [Path(r.image_path).relative_to(folder).as_posix() for r in dataset.query[2:4]] == [
        "occluded_body_images/002/002_01.tif",
        "occluded_body_images/002/002_02.tif",
    ]
    assert dataset.extras["keypoints_by_split_folder"] is True and dataset.keypoint_dir is None
    log = caplog.text
    assert "occluded_reid occluded_body_images: 1 copies of a .tif image (same stem) ignored" in log
    assert "occluded_reid occluded_body_images: 1 non-image files" in log
    assert "occluded_reid occluded_body_images: 1 files outside an identity folder" in log
    assert "query 6 images (official 1000), query 3 ids (official 200)" in log
    assert "gallery 6 images (official 1000), gallery 3 ids (official 200)" in log


def test_occluded_reid_is_found_in_the_release_folder_and_errors_name_the_file(tmp_path):
    folder = write_occluded_reid(tmp_path / "ICME2018_Occluded-Person-Reidentification_datasets", pids=(3,))
    assert load("occluded_reid", tmp_path).root == folder.absolute()
    stray = write_image(folder / "whole_body_images" / "003" / "004_01.tif")
    with pytest.raises(DatasetFormatError, match=r"004_01\.tif: the file name says identity 4 but .* identity 3"):
        load("occluded_reid", tmp_path)
    stray.rename(stray.with_name("scan.tif"))
    with pytest.raises(DatasetFormatError, match=r"003/scan\.tif: file name does not start with '<pid>_'"):
        load("occluded_reid", tmp_path)


def test_occluded_reid_missing_or_empty_is_one_error_naming_the_layout_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load("occluded_reid", tmp_path)
    message = str(info.value)
    assert f"{tmp_path / 'Occluded_REID'} (does not exist)" in message and "\n" not in message
    assert "occluded_body_images,whole_body_images}/<pid>/<pid>_<n>.tif" in message
    assert "tinajia2012/ICME2018_Occluded-Person-Reidentification_datasets" in message
    # the Partial-REID layout (images directly in the folders) is no Occluded-REID
    folder = tmp_path / "Occluded_REID"
    write_image(folder / "occluded_body_images" / "001_01.tif")
    write_image(folder / "whole_body_images" / "001" / "001_01.tif")
    with pytest.raises(DatasetNotFoundError, match=r"occluded_body_images holds no usable image .*incomplete"):
        load("occluded_reid", tmp_path)


# ------------------------------------------------------------------------------------ Partial-REID


@pytest.mark.parametrize("folder", ["Partial_REID", "Partial-REID_Dataset"])
def test_partial_reid_reads_flat_folders_with_the_same_camera_convention(tmp_path, folder, caplog):
    base = write_partial_reid(tmp_path, folder=folder)
    # some copies also hold occluded_body_images/: not part of the protocol, never read
    write_image(base / "occluded_body_images" / "001_001.jpg")
    (base / "partial_body_images" / "extra").mkdir()
    with caplog.at_level(logging.INFO):
        dataset = load("partial_reid", tmp_path)
    assert dataset.name == "partial_reid" and dataset.root == base.absolute() and dataset.train == []
    assert is_test_only("partial_reid")
    assert pid_cam(dataset.query) == [(1, 0), (1, 0), (5, 0), (5, 0)]
    assert pid_cam(dataset.gallery) == [(1, 1), (1, 1), (5, 1), (5, 1)]
    assert all("/occluded_body_images/" not in r.image_path for r in dataset.query + dataset.gallery)
    assert Path(dataset.query[0].image_path).name == "001_001.jpg"
    assert "partial_reid partial_body_images: 1 sub-folders" in caplog.text
    assert "query 4 images (official 300), query 2 ids (official 60)" in caplog.text


def test_partial_reid_missing_names_its_source(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"Partial_REID \(does not exist\).*Partial-REID_Dataset\.rar"):
        load("partial_reid", tmp_path)


# ------------------------------------------------------------------------------------ keypoints


def test_occluded_reid_keypoints_of_a_query_and_its_same_named_gallery_image_are_told_apart(tmp_path):
    folder = write_occluded_reid(tmp_path, pids=(1,), per_id=2)
    dataset = load("occluded_reid", tmp_path)
    # the split-folder layout that reid-extract-pose writes for this set: query and gallery share 001_01
    out = folder / "keypoints"
    confidence = {"occluded_body_images": 0.3, "whole_body_images": 0.9}

    def estimator(image: np.ndarray) -> np.ndarray:
        return standing_pose(0.5)

    paths = [r.image_path for r in dataset.query + dataset.gallery]
    with pytest.raises(ValueError, match="both map to"):  # the image-folder layout cannot hold them
        extract_keypoints(paths, out, estimator, progress=False)
    counts = extract_keypoints(paths, out, estimator, progress=False, by_split_folder=True)
    assert counts.done == 4
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")) == [
        "occluded_body_images/001_01_keypoints.json",
        "occluded_body_images/001_02_keypoints.json",
        "whole_body_images/001_01_keypoints.json",
        "whole_body_images/001_02_keypoints.json",
    ]
    for split, value in confidence.items():  # rewrite them with a confidence per split
        write_keypoints(out / split / "001_01_keypoints.json", standing_pose(value))
    source = OpenPoseJsonSource(out)
    assert source.get(dataset.query[0].image_path)[:, 2] == pytest.approx(0.3)
    assert source.get(dataset.gallery[0].image_path)[:, 2] == pytest.approx(0.9)


def _test_set_cfg(make_cfg, data_dir: Path, *extra: str):
    cfg = make_cfg(
        "data=market",
        "data.test_sets=[occluded_reid,partial_reid]",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.eval_batch_size=8",
        *SIZES,
        "model.net.width=0.25",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=none",
        "callbacks=none",
        *extra,
        tiny=False,
    )
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
    return cfg


def _write_three_sets(data_dir: Path) -> tuple[Path, Path]:
    """A Market tree with an empty keypoint folder, Occluded-REID and Partial-REID with keypoints for some images."""
    write_market_tree(data_dir, keypoints=True)  # no keypoint file: every Market image falls back
    occluded, partial = write_occluded_reid(data_dir), write_partial_reid(data_dir)
    # Occluded-REID: the query 001_01 and its same-named gallery image with different confidences
    write_keypoints(occluded / "keypoints" / "occluded_body_images" / "001_01_keypoints.json", standing_pose(0.3))
    write_keypoints(occluded / "keypoints" / "whole_body_images" / "001_01_keypoints.json", standing_pose(0.9))
    write_keypoints(partial / "keypoints" / "partial_body_images" / "001_001_keypoints.json", standing_pose(0.6))
    return occluded, partial


def test_test_sets_take_keypoints_fall_back_without_them_and_give_part_confidence(make_cfg, tmp_path):
    _write_three_sets(tmp_path / "data")
    test_sets = runner.build_test_sets(_test_set_cfg(make_cfg, tmp_path / "data"))
    assert set(test_sets) == {"occluded_reid", "partial_reid"}
    occluded, partial = test_sets["occluded_reid"], test_sets["partial_reid"]
    assert occluded.regions == "pose" and occluded.dataset.train == [] and len(occluded.eval_set) == 12
    # one query and one gallery image have keypoints (their own, though their names are the same);
    # the others fall back to the canonical pose / strips, counted
    assert occluded.region_counts["query"]["pose"] == 1 and occluded.region_counts["query"]["strips"] == 5
    assert occluded.region_counts["gallery"]["pose"] == 1 and occluded.region_counts["gallery"]["strips"] == 5
    np.testing.assert_allclose(occluded.part_confidence["query"][0], 0.3, atol=1e-6)
    np.testing.assert_allclose(occluded.part_confidence["gallery"][0], 0.9, atol=1e-6)
    assert np.isnan(occluded.part_confidence["query"][1:]).all()
    np.testing.assert_allclose(partial.part_confidence["query"][0], 0.6, atol=1e-6)
    assert np.isnan(partial.part_confidence["gallery"]).all()
    batch = next(iter(occluded.val_dataloader()))
    assert tuple(batch["part_confidence"].shape) == (8, 4) and batch["is_query"][:6].all()
    assert batch["camid"][:6].eq(0).all() and batch["camid"][6:].eq(1).all()


def test_market_with_both_test_sets_reports_each_sets_metrics_and_evaluate_scores_one(make_cfg, tmp_path):
    _write_three_sets(tmp_path / "data")
    cfg = _test_set_cfg(make_cfg, tmp_path / "data", "trainer.max_epochs=1", "callbacks=model_checkpoint")
    metrics = runner.train(cfg)
    assert 0.0 <= metrics["mAP"] <= 1.0  # Market's own figures stay the top level
    for name in ("occluded_reid", "partial_reid"):
        scores = metrics["test_sets"][name]
        assert set(scores) >= {"rank1", "mAP"} and all(0.0 <= v <= 1.0 for v in scores.values()), name
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())  # make_cfg's output_dir
    for name, scores in metrics["test_sets"].items():
        assert written["test_sets"][name] == pytest.approx(scores), name

    # the other way the refusal names: evaluate.py on the test-only set itself, the same figures
    eval_cfg = make_cfg(
        f"ckpt_path={tmp_path / 'out' / 'checkpoints' / 'last.ckpt'}",
        "data=occluded_reid",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "eval.pictures.enabled=false",
        "eval.visibility_matching=keypoints",
        "overwrite=true",
        config_name="evaluate",
        tiny=False,
    )
    with open_dict(eval_cfg):
        eval_cfg.paths.data_dir = str(tmp_path / "data")
    scored = runner.evaluate(eval_cfg)
    assert scored["rank1"] == pytest.approx(metrics["test_sets"]["occluded_reid"]["rank1"], abs=1e-6)
    assert scored["mAP"] == pytest.approx(metrics["test_sets"]["occluded_reid"]["mAP"], abs=1e-6)
    # the visibility figures that exist on a real set: keypoint matching, and mu against the keypoints
    written = json.loads((Path(eval_cfg.paths.output_dir) / "metrics.json").read_text())
    assert written["visibility_matching"]["source"] == "keypoints"
    assert 0.0 <= written["visibility_matching"]["mAP"] <= 1.0
    assert "rho_confidence" in written["attention"]["inter_mean"]
    assert "rho_visible" not in written["attention"]["inter_mean"]  # no truth on a real set


# ------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("name", ["occluded_reid", "partial_reid"])
def test_training_on_a_test_only_set_is_refused_in_one_line_before_reading_it(make_cfg, tmp_path, capsys, name):
    # no data set anywhere: the refusal comes before anything is read
    cfg = make_cfg(f"data={name}", f"data.root={tmp_path / 'nothing'}", "logger=none", "callbacks=none", tiny=False)
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: data={name} has no training split"), err
    assert f"train.py data=market data.test_sets=[{name}]" in err and "evaluate.py ckpt_path=" in err
    assert "Traceback" not in err


def test_data_occluded_duke_trains_end_to_end(make_cfg, tmp_path):
    write_duke_tree(tmp_path, OCCLUDED_DUKE_SPLITS, folder="Occluded_Duke")
    cfg = make_cfg(
        "data=occluded_duke",
        f"data.root={tmp_path}",
        "data.pose.source=strips",
        "data.num_workers=0",
        *SIZES,
        "data.batch_size=2",
        "model=baseline",
        "model.net.width=0.25",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=none",
        "callbacks=none",
        "trainer.fast_dev_run=2",
        tiny=False,
    )
    metrics = runner.train(cfg)
    assert 0.0 <= metrics["rank1"] <= 1.0 and 0.0 <= metrics["mAP"] <= 1.0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["rank1"] == pytest.approx(metrics["rank1"])
