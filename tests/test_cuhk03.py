"""Tests of the CUHK03 loader on small files in the real formats (v7.3 cuhk-03.mat, v5 new-protocol config)."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from fixtures import cuhk03_pixels, write_cuhk03_mat, write_cuhk03_new_protocol

import reid.data.datasets.cuhk03 as cuhk03_module
from reid.data.datasets import DatasetFormatError, DatasetNotFoundError, load
from reid.data.io import read_image
from reid.data.records import Record


def standard_mat(root: Path, **options):
    return write_cuhk03_mat(root / "cuhk03" / "cuhk03_release" / "cuhk-03.mat", **options)


def names(records: list[Record]) -> list[str]:
    return [Path(r.image_path).name for r in records]


def test_fixture_is_a_real_v73_file(tmp_path: Path) -> None:
    fixture = standard_mat(tmp_path)
    assert fixture.path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with pytest.raises(NotImplementedError, match="HDF reader for matlab v7.3"):
        scipy.io.loadmat(fixture.path)
    with h5py.File(fixture.path, "r") as mat:
        assert mat.userblock_size == 512
        assert mat["labeled"].shape == (1, 5) and mat["testsets"].shape == (1, 3)
        assert mat[mat["labeled"][0, 0]].shape == (10, 3)
        empty = mat[mat[mat["labeled"][0, 0]][3, 0]]  # pair 1, person 1, column 3
        assert empty.dtype == np.uint64 and empty.shape == (2,) and empty.attrs["MATLAB_empty"] == 1


def test_classic_split_labeled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    standard_mat(tmp_path)
    with caplog.at_level(logging.INFO):
        dataset = load("cuhk03", tmp_path, progress=False)
    folder = tmp_path / "cuhk03"
    assert dataset.root == folder
    assert dataset.protocol == "cuhk03"
    assert dataset.extras["split_protocol"] == "classic"
    # 9 people, 90 cells, 7 empty labeled cells -> 83 images; split 0 tests (1, 2) and (3, 1), 10 images each.
    assert len(dataset.train) == 63
    assert dataset.query == dataset.gallery
    assert len(dataset.query) == 20
    assert {r.pid for r in dataset.query} == {1002, 3001}
    assert "CUHK03 labeled: extracted 83 images" in caplog.text and "skipped 7 empty cells" in caplog.text
    # Train ids relabelled in sorted (pair, person) order, test ids left out:
    # (1,1)->0, (1,3)->1, (2,1)->2, (2,2)->3, (3,2)->4, (4,1)->5, (5,1)->6
    label_of = {}
    for record in dataset.train:
        pair, person, _, _ = cuhk03_module.parse_image_name(Path(record.image_path).name)
        label_of.setdefault((pair, person), set()).add(record.pid)
    assert label_of == {(1, 1): {0}, (1, 3): {1}, (2, 1): {2}, (2, 2): {3}, (3, 2): {4}, (4, 1): {5}, (5, 1): {6}}
    # Empty cells are skipped and image numbers keep their column:
    person_1_1 = [n for n in names(dataset.train) if n.startswith("1_001_")]
    view_2 = [f"1_001_2_{k:02d}.png" for k in range(6, 11)]
    assert person_1_1 == ["1_001_1_01.png", "1_001_1_02.png", "1_001_1_03.png", *view_2]
    # camid is the view within the pair; person (2, 2) was only seen in view 1.
    assert {(n[6], r.camid) for n, r in zip(names(dataset.train), dataset.train)} == {("1", 0), ("2", 1)}
    assert {r.camid for r in dataset.train if Path(r.image_path).name.startswith("2_002_")} == {0}
    assert (folder / "images_labeled" / cuhk03_module.MARKER_NAME).is_file()
    assert not (folder / "images_detected").exists()


def test_extracted_png_is_the_untransposed_cell(tmp_path: Path) -> None:
    fixture = standard_mat(tmp_path, width=6, height=10)
    load("cuhk03", tmp_path, progress=False)
    image = read_image(tmp_path / "cuhk03" / "images_labeled" / "3_002_2_07.png")
    assert image.shape == (10, 6, 3)
    np.testing.assert_array_equal(image, cuhk03_pixels("labeled", 3, 2, 6, width=fixture.width, height=fixture.height))


def test_detected_other_split_and_unique_cameras(tmp_path: Path) -> None:
    standard_mat(tmp_path)
    dataset = load("cuhk03", tmp_path, labeled=False, split_id=2, unique_cameras=True, progress=False)
    # detected: one empty cell (1, 2, 9) -> 89 images; split 2 tests (2, 1) and (5, 1)
    assert len(dataset.train) + len(dataset.query) == 89
    assert {r.pid for r in dataset.query} == {2001, 5001}
    assert {r.camid for r in dataset.query} == {2, 3, 8, 9}  # pair 2 -> 2, 3; pair 5 -> 8, 9
    assert "1_002_2_10.png" not in names(dataset.train)
    assert dataset.train[0].image_path.startswith(str(tmp_path / "cuhk03" / "images_detected"))


def test_split_id_out_of_range(tmp_path: Path) -> None:
    standard_mat(tmp_path)
    with pytest.raises(ValueError, match=r"split_id=3 is out of range: .*cuhk-03\.mat has 3 classic splits \(0-2\)"):
        load("cuhk03", tmp_path, split_id=3, progress=False)


def test_testset_naming_an_unknown_person(tmp_path: Path) -> None:
    standard_mat(tmp_path, testsets=[[(1, 4)]])
    expected = r"classic split 0 names 1 \(pair, person\) ids with no image.*\(1, 4\)"
    with pytest.raises(DatasetFormatError, match=expected):
        load("cuhk03", tmp_path, progress=False)


def test_reloading_does_not_extract_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    standard_mat(tmp_path)
    first = load("cuhk03", tmp_path, progress=False)
    png = tmp_path / "cuhk03" / "images_labeled" / "1_001_1_01.png"
    stamp = png.stat().st_mtime_ns

    def must_not_run(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(cuhk03_module, "_iter_images", must_not_run)
    second = load("cuhk03", tmp_path, progress=False)
    assert second.train == first.train and second.query == first.query
    assert png.stat().st_mtime_ns == stamp


def test_interrupted_extraction_is_redone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    standard_mat(tmp_path)
    image_dir = tmp_path / "cuhk03" / "images_labeled"
    image_dir.mkdir(parents=True)
    (image_dir / "1_001_1_01.png").write_bytes(b"half a png")
    (image_dir / "9_999_1_01.png").write_bytes(b"left over")
    with caplog.at_level(logging.WARNING):
        dataset = load("cuhk03", tmp_path, progress=False)
    assert "interrupted extraction" in caplog.text
    assert len(list(image_dir.glob("*.png"))) == 83
    assert read_image(image_dir / "1_001_1_01.png").shape == (10, 6, 3)
    assert len(dataset.train) + len(dataset.query) == 83
    # a marker whose count no longer matches the folder (an image deleted) also triggers a redo
    (image_dir / "1_001_1_01.png").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load("cuhk03", tmp_path, progress=False)
    assert "marker records 83 images but 82 are there" in caplog.text
    assert (image_dir / "1_001_1_01.png").is_file()


@pytest.mark.parametrize("layout", ["cuhk03-folder", "release-folder"])
def test_other_layouts(tmp_path: Path, layout: str) -> None:
    # root is the cuhk03 folder (holding cuhk03_release), or cuhk03_release itself
    write_cuhk03_mat(tmp_path / "data" / "cuhk03_release" / "cuhk-03.mat")
    root = tmp_path / "data" if layout == "cuhk03-folder" else tmp_path / "data" / "cuhk03_release"
    dataset = load("cuhk03", root, progress=False)
    assert dataset.root == tmp_path / "data"
    assert (tmp_path / "data" / "images_labeled" / "1_001_1_01.png").is_file()


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load("cuhk03", tmp_path)
    message = str(info.value)
    assert f"{tmp_path / 'cuhk03' / 'cuhk03_release' / 'cuhk-03.mat'} (does not exist)" in message
    assert f"{tmp_path / 'cuhk03_release' / 'cuhk-03.mat'} (does not exist)" in message
    assert "xgwang/CUHK_identification" in message and "data=synthetic" in message
    mat = tmp_path / "cuhk03" / "cuhk03_release" / "cuhk-03.mat"
    mat.parent.mkdir(parents=True)
    mat.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DatasetFormatError, match=r"cuhk-03\.mat is not a MATLAB v7\.3 \(HDF5\) file"):
        load("cuhk03", tmp_path, progress=False)


# ----------------------------------------------------------------------------------- 767/700 protocol


def new_protocol_config(fixture, folder: Path, *, cam_ids=None, extra_name=None) -> tuple[list[str], Path]:
    """Persons (1,1) and (1,2) train; (1,3) and (2,1) test: their first view-1 and view-2 images query."""
    labels_of = {"1_001": 40, "1_002": 7, "1_003": 15, "2_001": 22}
    filelist = [n for n in fixture.names["labeled"] if n[:5] in labels_of]
    if extra_name:
        filelist.append(extra_name)
    labels = [labels_of.get(n[:5], 99) for n in filelist]
    train = [i + 1 for i, n in enumerate(filelist) if n[:5] in ("1_001", "1_002")]
    query = [filelist.index(n) + 1 for n in ("1_003_1_01.png", "1_003_2_06.png", "2_001_1_01.png", "2_001_2_06.png")]
    gallery = [i + 1 for i, n in enumerate(filelist) if n[:5] in ("1_003", "2_001") and i + 1 not in query]
    if extra_name:
        gallery.append(len(filelist))
    path = write_cuhk03_new_protocol(
        folder,
        kind="labeled",
        filelist=filelist,
        labels=labels,
        train_idx=train,
        query_idx=query,
        gallery_idx=gallery,
        cam_ids=cam_ids,
    )
    return filelist, path


def test_new_protocol(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fixture = standard_mat(tmp_path)
    filelist, _ = new_protocol_config(fixture, tmp_path / "cuhk03")
    with caplog.at_level(logging.WARNING):
        dataset = load("cuhk03", tmp_path, protocol="new", progress=False)
    assert dataset.protocol == "market"
    assert dataset.extras["split_protocol"] == "new" and dataset.extras["split_id"] is None
    # (1,1) has 8 labeled images, (1,2) 10: labels 40 and 7 become 1 and 0
    assert len(dataset.train) == 18
    assert {(n[:5], r.pid) for n, r in zip(names(dataset.train), dataset.train)} == {("1_001", 1), ("1_002", 0)}
    assert [(n, r.pid, r.camid) for n, r in zip(names(dataset.query), dataset.query)] == [
        ("1_003_1_01.png", 15, 0),
        ("1_003_2_06.png", 15, 1),
        ("2_001_1_01.png", 22, 0),
        ("2_001_2_06.png", 22, 1),
    ]
    assert len(dataset.gallery) == 16 and {r.pid for r in dataset.gallery} == {15, 22}
    assert all(Path(r.image_path).is_file() for r in dataset.train + dataset.query + dataset.gallery)
    assert "camId different" not in caplog.text


def test_new_protocol_camera_mismatch_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fixture = standard_mat(tmp_path)
    filelist = [n for n in fixture.names["labeled"] if n[:5] in ("1_001", "1_002", "1_003", "2_001")]
    cam_ids = [int(n.split("_")[2]) for n in filelist]
    cam_ids[0] = 2  # 1_001_1_01.png is view 1
    new_protocol_config(fixture, tmp_path / "cuhk03", cam_ids=cam_ids)
    with caplog.at_level(logging.WARNING):
        dataset = load("cuhk03", tmp_path, protocol="new", progress=False)
    assert "1 entries have a camId different from the view in their file name" in caplog.text
    assert dataset.train[0].camid == 0


def test_new_protocol_errors(tmp_path: Path) -> None:
    fixture = standard_mat(tmp_path)
    expected = r"cuhk03_new_protocol_config_labeled\.mat.*zhunzhong07/person-re-ranking"
    with pytest.raises(DatasetNotFoundError, match=expected):
        load("cuhk03", tmp_path, protocol="new", progress=False)
    new_protocol_config(fixture, tmp_path / "cuhk03", extra_name="5_001_1_04.png")
    load("cuhk03", tmp_path, progress=False)  # extracts
    (tmp_path / "cuhk03" / "images_labeled" / "5_001_1_04.png").unlink()
    # the marker no longer matches, so it re-extracts and the image comes back
    assert len(load("cuhk03", tmp_path, protocol="new", progress=False).gallery) == 17
    new_protocol_config(fixture, tmp_path / "cuhk03", extra_name="2_002_2_07.png")  # an empty cell
    with pytest.raises(DatasetFormatError, match=r"lists 1 images absent from .*images_labeled, first 2_002_2_07\.png"):
        load("cuhk03", tmp_path, protocol="new", progress=False)
    new_protocol_config(fixture, tmp_path / "cuhk03", extra_name="bad-name.png")
    with pytest.raises(DatasetFormatError, match=r"filelist entry 39: 'bad-name\.png' is not a CUHK03 image name"):
        load("cuhk03", tmp_path, protocol="new", progress=False)
    with pytest.raises(ValueError, match="protocol must be one of"):
        load("cuhk03", tmp_path, protocol="767/700")
