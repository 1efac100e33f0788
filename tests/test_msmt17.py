"""MSMT17 V1 and V2 from fixture trees in the release's exact layout (list files, camera in the file name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import DEFAULT_MSMT17_SPLITS, write_msmt17_tree

from reid.data.datasets import DatasetFormatError, DatasetNotFoundError, load


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_reads_the_lists_with_train_and_val_as_training(tmp_path, version):
    folder = write_msmt17_tree(tmp_path, version=version)
    dataset = load("msmt17", tmp_path)
    assert dataset.name == "msmt17" and dataset.root == folder and dataset.protocol == "market"
    train_entries = DEFAULT_MSMT17_SPLITS["train"] + DEFAULT_MSMT17_SPLITS["val"]
    assert len(dataset.train) == len(train_entries)
    assert sorted({r.pid for r in dataset.train}) == [0, 1, 2]  # pids 0, 4, 7 relabelled
    assert [r.camid for r in dataset.train] == [camera - 1 for _, camera in train_entries]
    assert [(r.pid, r.camid) for r in dataset.query] == [(0, 1), (11, 3)]  # test ids kept, cameras 0-based
    assert len(dataset.gallery) == 4 and all(Path(r.image_path).is_file() for r in dataset.gallery)
    image_dir = "mask_test_v2" if version == "V2" else "test"
    assert all(f"/{image_dir}/" in r.image_path for r in dataset.query + dataset.gallery)


def test_v2_is_preferred_and_msmt17_subfolder_is_found(tmp_path):
    write_msmt17_tree(tmp_path / "msmt17", version="V1")
    assert load("msmt17", tmp_path).root.name == "MSMT17_V1"
    write_msmt17_tree(tmp_path / "msmt17", version="V2")
    assert load("msmt17", tmp_path).root.name == "MSMT17_V2"


def test_a_missing_release_names_what_was_tried(tmp_path):
    (tmp_path / "MSMT17_V1" / "train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"MSMT17.*MSMT17_V1.*lacks test, list_train.txt"):
        load("msmt17", tmp_path)


def test_malformed_list_lines_and_names_are_named_with_their_line(tmp_path):
    folder = write_msmt17_tree(tmp_path)
    listing = folder / "list_query.txt"
    listing.write_text(listing.read_text() + "just_a_path.jpg\n")
    with pytest.raises(DatasetFormatError, match=r"list_query.txt:3: expected '<relative image path> <pid>'"):
        load("msmt17", tmp_path)
    listing.write_text("0000/0000_000_99_x_0001_0.jpg 0\n")
    with pytest.raises(DatasetFormatError, match=r"list_query.txt:1: the file name .* has no camera 01..15"):
        load("msmt17", tmp_path)
    listing.write_text("0000/0000_000_01_x_0001_0.jpg 0\n")
    with pytest.raises(DatasetFormatError, match=r"does not exist; the copy is incomplete"):
        load("msmt17", tmp_path)


def test_data_msmt17_trains_and_scores(make_cfg, tmp_path):
    from reid.tasks import train

    write_msmt17_tree(tmp_path)
    cfg = make_cfg(
        "data=msmt17",
        f"data.root={tmp_path}",
        "data.pose.source=strips",
        "data.num_workers=0",
        "data.whole_size=[64,32]",
        "data.part_size=[16,32]",
        "data.batch_size=2",
        "model=baseline",
        "model.net.width=0.25",
        "logger=none",
        "callbacks=none",
        "trainer.fast_dev_run=true",
        tiny=False,
    )
    assert cfg.trainer.max_epochs == 100  # conf/recipe/msmt17.yaml
    metrics = train(cfg)
    assert 0.0 <= metrics["rank1"] <= 1.0
