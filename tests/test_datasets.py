"""Tests of the data set registry, the Market/Duke/synthetic/custom loaders and image reading."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import market_name, write_duke_tree, write_image, write_market_tree
from PIL import Image

import reid.data.synthetic
from reid.data.datasets import (
    DatasetFormatError,
    DatasetNotFoundError,
    UnknownDatasetError,
    available,
    load,
    register,
    registry,
)
from reid.data.io import CorruptImageError, image_size, read_image
from reid.data.records import Record, ReIDDataset


def pid_cam(records: list[Record]) -> list[tuple[int, int]]:
    return [(r.pid, r.camid) for r in records]


# ------------------------------------------------------------------------------------ registry


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError) as info:
        load("market", tmp_path)
    message = str(info.value)
    assert "unknown data set 'market'" in message
    for name in ("cuhk03", "custom", "dukemtmcreid", "market1501", "synthetic"):
        assert name in message


def test_register_adds_a_loader_and_load_passes_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_LOADERS", dict(registry._LOADERS))
    seen = {}

    @register("Tiny")
    def load_tiny(root: Path, *, fold: int = 0) -> ReIDDataset:
        seen.update(root=root, fold=fold)
        records = [Record("a.jpg", 0, 0), Record("b.jpg", 0, 1)]
        return ReIDDataset("tiny", root, records, records[:1], records[1:])

    assert "tiny" in available()
    dataset = load("TINY", tmp_path, fold=3)
    assert seen == {"root": tmp_path, "fold": 3}
    assert dataset.name == "tiny"
    with pytest.raises(ValueError, match="already registered"):
        register("tiny")(lambda root: None)
    register("tiny", overwrite=True)(lambda root: "not a data set")
    with pytest.raises(TypeError, match="returned str, not a ReIDDataset"):
        load("tiny", tmp_path)


def test_unexpected_option_names_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"cannot take options \['labelled'\].*accepts: labeled, protocol, split_id"):
        load("cuhk03", tmp_path, labelled=True)


# ------------------------------------------------------------------------------------ Market-1501

# Expected (pid, camid) of DEFAULT_MARKET_SPLITS, worked by hand: files sorted by name, junk (-1)
# dropped, distractors (0) dropped outside the gallery, train pids 2, 5, 9 -> 0, 1, 2.
MARKET_TRAIN = [(0, 0), (0, 2), (1, 1), (1, 5), (2, 0), (2, 3)]
MARKET_QUERY = [(2, 1), (5, 0)]
MARKET_GALLERY = [(0, 0), (0, 5), (2, 0), (2, 3), (5, 1), (5, 4), (7, 1)]


def test_market_parsing_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_market_tree(tmp_path, extra_files={"gallery": ["Thumbs.db"]})
    with caplog.at_level(logging.INFO):
        dataset = load("market1501", tmp_path)
    assert dataset.name == "market1501"
    assert dataset.root == folder
    assert dataset.protocol == "market"
    assert pid_cam(dataset.train) == MARKET_TRAIN
    assert pid_cam(dataset.query) == MARKET_QUERY
    assert pid_cam(dataset.gallery) == MARKET_GALLERY
    assert dataset.num_train_pids == 3
    assert dataset.keypoint_dir is None
    assert Path(dataset.query[0].image_path) == folder / "query" / market_name(2, 2, frame=107)
    log = caplog.text
    assert "bounding_box_train: 1 junk images (pid -1)" in log
    assert "bounding_box_test: 1 junk images (pid -1)" in log
    assert "query: 1 distractor images (pid 0) outside the gallery" in log
    assert "bounding_box_test: 2 distractor images (pid 0) kept" in log
    assert "bounding_box_test: 1 non-image files" in log
    assert "=> market1501 loaded from" in log
    assert "  train    |     3 |        6 |         5" in log
    assert "differs from the official release: train 6 images (official 12936)" in log


@pytest.mark.parametrize(
    "parent, folder",
    [
        (".", "Market-1501-v15.09.15"),
        ("market1501", "Market-1501-v15.09.15"),
        (".", "market1501"),
        (".", ""),
    ],
    ids=["direct", "torchreid", "torchreid-flat", "root-is-folder"],
)
def test_market_layouts(tmp_path: Path, parent: str, folder: str) -> None:
    expected = write_market_tree(tmp_path / parent, folder=folder)
    dataset = load("market1501", tmp_path)
    assert dataset.root == expected.absolute()
    assert len(dataset.train) == 6


def test_market_regex_reads_the_file_name_only(tmp_path: Path) -> None:
    # A parent folder that looks like an id and camera must not make a bad file name parse.
    root = tmp_path / "0012_c3"
    write_market_tree(root, extra_files={})
    write_image(root / "Market-1501-v15.09.15" / "query" / "extra.jpg")
    with pytest.raises(DatasetFormatError, match=r"query/extra\.jpg: file name does not start with '<pid>_c<camera>'"):
        load("market1501", root)


def test_market_camera_out_of_range_names_the_file(tmp_path: Path) -> None:
    write_market_tree(tmp_path, {"train": [(1, 7)], "query": [(1, 1)], "gallery": [(1, 2)]})
    with pytest.raises(DatasetFormatError, match=r"0001_c7s1_000100_01\.jpg: camera c7 outside 1-6"):
        load("market1501", tmp_path)


def test_market_keypoint_dir(tmp_path: Path) -> None:
    folder = write_market_tree(tmp_path, keypoints=True)
    assert load("market1501", tmp_path).keypoint_dir == folder / "keypoints"


def test_market_missing_gives_one_error_with_everything(tmp_path: Path) -> None:
    folder = write_market_tree(tmp_path)
    for image in (folder / "query").iterdir():
        image.unlink()
    (folder / "query").rmdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load("market1501", tmp_path)
    message = str(info.value)
    assert f"{folder} (lacks query)" in message
    assert f"{tmp_path / 'market1501' / 'Market-1501-v15.09.15'} (does not exist)" in message
    assert f"{tmp_path} (lacks bounding_box_train, query, bounding_box_test)" in message
    assert "bounding_box_train,bounding_box_test,query" in message
    assert "zheng-lab.cecs.anu.edu.au" in message
    assert "data=synthetic" in message
    assert "\n" not in message


def test_market_empty_split_is_incomplete(tmp_path: Path) -> None:
    write_market_tree(tmp_path, {"train": [(1, 1)], "query": [], "gallery": [(1, 2)]})
    with pytest.raises(DatasetNotFoundError, match=r"query holds no usable image.*data=synthetic"):
        load("market1501", tmp_path)


# ------------------------------------------------------------------------------------ DukeMTMC-reID


@pytest.mark.parametrize("parent", [".", "dukemtmcreid", "dukemtmc-reid"])
def test_duke_layouts_and_rules(tmp_path: Path, parent: str) -> None:
    folder = write_duke_tree(tmp_path / parent)
    dataset = load("dukemtmcreid", tmp_path)
    assert dataset.root == folder.absolute()
    # train pids 1, 4 -> 0, 1; camera 8 -> camid 7
    assert pid_cam(dataset.train) == [(0, 0), (0, 7), (1, 1), (1, 2)]
    assert pid_cam(dataset.query) == [(10, 4), (12, 7)]
    assert pid_cam(dataset.gallery) == [(10, 5), (12, 0), (12, 6), (30, 1)]
    assert Path(dataset.train[0].image_path).name == "0001_c1_f0000100.jpg"


def test_duke_camera_nine_is_rejected(tmp_path: Path) -> None:
    write_duke_tree(tmp_path, {"train": [(1, 9)], "query": [(1, 1)], "gallery": [(1, 2)]})
    with pytest.raises(DatasetFormatError, match="camera c9 outside 1-8"):
        load("dukemtmcreid", tmp_path)


def test_duke_missing_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"dukemtmc-reid/DukeMTMC-reID \(does not exist\).*layumi"):
        load("dukemtmcreid", tmp_path)


# ------------------------------------------------------------------------------------ synthetic


def test_synthetic_calls_the_generator_and_parses_market_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_generate(root: Path, **options: object) -> Path:
        calls.append((Path(root), options))
        # cameras beyond Market's six are fine for generated data
        return write_market_tree(
            Path(root),
            {"train": [(3, 8), (4, 1)], "query": [(5, 2)], "gallery": [(5, 9)]},
            folder="synthetic",
            keypoints=True,
        )

    monkeypatch.setattr(reid.data.synthetic, "generate", fake_generate, raising=False)
    dataset = load("synthetic", tmp_path, num_train_ids=2, seed=7)
    assert calls == [(tmp_path, {"num_train_ids": 2, "seed": 7})]
    assert dataset.name == "synthetic"
    assert dataset.keypoint_dir == tmp_path / "synthetic" / "keypoints"
    assert pid_cam(dataset.train) == [(0, 7), (1, 0)]
    assert pid_cam(dataset.gallery) == [(5, 8)]


# ------------------------------------------------------------------------------------ custom


def write_custom_csv(tmp_path: Path, rows: list[str], header: str = "path,pid,camid,split") -> Path:
    for name in ("a.jpg", "b.jpg", "c.png", "d.jpg", "e.jpg"):
        write_image(tmp_path / "images" / name)
    csv = tmp_path / "list.csv"
    csv.write_text("\n".join([header, *rows]) + "\n")
    return csv


GOOD_ROWS = [
    "images/a.jpg,7,0,train",
    "images/b.jpg,3,1,train",
    "images/c.png,5,0,query",
    "images/d.jpg,5,1,gallery",
    "images/e.jpg,9,0,gallery",
]


def test_custom_csv(tmp_path: Path) -> None:
    write_custom_csv(tmp_path, GOOD_ROWS)
    dataset = load("custom", tmp_path, csv="list.csv")
    assert dataset.name == "custom"
    assert dataset.root == tmp_path
    # train pids 3, 7 -> 0, 1 (sorted), query/gallery keep theirs
    assert pid_cam(dataset.train) == [(1, 0), (0, 1)]
    assert dataset.train[0].image_path == str(tmp_path / "images" / "a.jpg")
    assert pid_cam(dataset.query) == [(5, 0)]
    assert pid_cam(dataset.gallery) == [(5, 1), (9, 0)]


def test_custom_csv_absolute_path_and_extra_column(tmp_path: Path) -> None:
    rows = [row + ",note" for row in GOOD_ROWS]
    rows[0] = f"{tmp_path / 'images' / 'a.jpg'},7,0,train,note"
    csv = write_custom_csv(tmp_path, rows, header="path,pid,camid,split,comment")
    dataset = load("custom", tmp_path / "elsewhere", csv=str(csv))
    assert dataset.train[0].image_path == str(tmp_path / "images" / "a.jpg")


@pytest.mark.parametrize(
    "line, replacement, message",
    [
        (2, "images/b.jpg,3,1,val", r"list\.csv line 3: split 'val' is not one of train, query, gallery"),
        (1, "images/a.jpg,abc,0,train", r"list\.csv line 2: pid 'abc' is not an integer"),
        (3, "images/c.png,5,1.5,query", r"list\.csv line 4: camid '1.5' is not an integer"),
        (1, "images/a.jpg,-2,0,train", r"list\.csv line 2: pid -2 is negative"),
        (4, "images/zz.jpg,5,1,gallery", r"1 image\(s\) listed in .*list\.csv do not exist, first: .*line 5 .*zz\.jpg"),
        (5, "images/e.jpg,9,0", r"list\.csv line 6: expected 4 comma-separated values"),
    ],
)
def test_custom_csv_row_errors(tmp_path: Path, line: int, replacement: str, message: str) -> None:
    rows = list(GOOD_ROWS)
    rows[line - 1] = replacement
    write_custom_csv(tmp_path, rows)
    with pytest.raises(DatasetFormatError, match=message):
        load("custom", tmp_path, csv="list.csv")


def test_custom_query_identity_absent_from_gallery(tmp_path: Path) -> None:
    rows = list(GOOD_ROWS)
    rows[2] = "images/c.png,6,0,query"
    write_custom_csv(tmp_path, rows)
    expected = r"identity absent from the gallery, first: .*list\.csv line 4 \(pid 6\)"
    with pytest.raises(DatasetFormatError, match=expected):
        load("custom", tmp_path, csv="list.csv")


def test_custom_single_camera_is_rejected(tmp_path: Path) -> None:
    rows = [row.replace(",1,", ",0,") for row in GOOD_ROWS]
    write_custom_csv(tmp_path, rows)
    with pytest.raises(DatasetFormatError, match="every image has camid 0; cross-camera evaluation needs at least two"):
        load("custom", tmp_path, csv="list.csv")


def test_custom_bad_header_and_missing_csv(tmp_path: Path) -> None:
    write_custom_csv(tmp_path, GOOD_ROWS, header="file,pid,camid,split")
    with pytest.raises(DatasetFormatError, match=r"line 1: header .* lacks \['path'\]"):
        load("custom", tmp_path, csv="list.csv")
    with pytest.raises(DatasetNotFoundError, match=r"nope\.csv.*data=synthetic"):
        load("custom", tmp_path, csv="nope.csv")


def test_custom_folder_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "custom"
    files = ("train/12/0_x.jpg", "train/12/1_y.png", "train/4/2_z.jpg", "query/30/0_q.jpg", "gallery/30/1_g.jpg")
    for relative in files:
        write_image(root / relative)
    (root / "train" / "4" / "notes.txt").write_text("hello")
    with caplog.at_level(logging.INFO):
        dataset = load("custom", tmp_path)
    assert dataset.root == root
    assert pid_cam(dataset.train) == [(1, 0), (1, 1), (0, 2)]  # folders sorted as strings, pids 4, 12 -> 0, 1
    assert pid_cam(dataset.query) == [(30, 0)]
    assert pid_cam(dataset.gallery) == [(30, 1)]
    assert "ignored 1 non-image files" in caplog.text


def test_custom_folder_layout_errors(tmp_path: Path) -> None:
    for relative in ("train/1/0_a.jpg", "query/2/0_b.jpg", "gallery/2/1_c.jpg"):
        write_image(tmp_path / relative)
    write_image(tmp_path / "train" / "1" / "cam0.jpg")
    with pytest.raises(DatasetFormatError, match=r"train/1/cam0\.jpg: file name must start with '<camid>_'"):
        load("custom", tmp_path)
    (tmp_path / "train" / "1" / "cam0.jpg").unlink()
    write_image(tmp_path / "train" / "bob" / "0_a.jpg")
    with pytest.raises(DatasetFormatError, match=r"train/bob: identity folder name 'bob' is not an integer"):
        load("custom", tmp_path)


def test_custom_nothing_there(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"lacks train, query, gallery.*csv=.*data=synthetic"):
        load("custom", tmp_path)


# ------------------------------------------------------------------------------------ image reading


def test_read_image_rgb_png_is_exact_and_in_rgb_order(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])  # cv2 writes BGR
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (5, 4, 3)
    np.testing.assert_array_equal(image, rgb)
    assert image.flags.writeable and image.flags.c_contiguous
    assert image_size(path) == (4, 5)


def test_read_image_grayscale_and_palette_become_rgb(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(gray[:, :, None], 3, axis=2))
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putdata([1, 0])
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), [[[200, 100, 50], [10, 20, 30]]])


def test_read_image_drops_alpha(tmp_path: Path) -> None:
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])


def test_read_image_sixteen_bit_keeps_the_high_byte(tmp_path: Path) -> None:
    gray = np.array([[0, 255, 256, 40000, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[:, :, 0], [[0, 0, 1, 156, 255]])
    rgb = np.array([[[65535, 512, 0], [300, 40000, 1000]]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / "c16.png"), [[[255, 2, 0], [1, 156, 3]]])


def test_bad_images_raise_one_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    whole = write_image(tmp_path / "whole.jpg", width=32, height=64)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    fix = r"re-extract or delete it, or set data\.on_bad_sample=skip"
    for path in (empty, garbage, truncated):
        with pytest.raises(CorruptImageError, match=rf"{path.name}.*{fix}"):
            read_image(path)
    for path in (empty, garbage):
        with pytest.raises(CorruptImageError, match=path.name):
            image_size(path)
    # the header of a truncated file is intact: its size is known, decoding it fails
    assert image_size(truncated) == (32, 64)
    with pytest.raises(FileNotFoundError, match="missing.jpg does not exist"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError, match="missing.jpg does not exist"):
        image_size(tmp_path / "missing.jpg")
