"""The data module: regions computed once per image, crops of the configured sizes, bad-sample policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import write_market_tree

from reid.data.io import CorruptImageError
from reid.lit.datamodule import ReIDDataModule

SPLITS = {
    "train": [(1, 1), (1, 2), (2, 1), (2, 3), (3, 2), (3, 4)],
    "gallery": [(5, 1), (5, 2), (6, 3), (6, 4), (0, 5), (-1, 6)],
    "query": [(5, 3), (6, 1)],
}


def _datamodule(root: Path, **kw) -> ReIDDataModule:
    options = dict(
        name="market1501",
        root=root,
        whole_size=(32, 16),
        part_size=(8, 16),
        regions="strips",
        batch_size=2,
        eval_batch_size=4,
        num_workers=0,
    )
    options.update(kw)
    return ReIDDataModule(**options)


def test_strip_regions_feed_crops_of_the_configured_sizes(tmp_path):
    write_market_tree(tmp_path, SPLITS)
    dm = _datamodule(tmp_path)
    dm.setup("fit")
    assert dm.num_classes == 3
    assert len(dm.train_set) == 6 and len(dm.eval_set) == 2 + 5  # junk dropped, distractor kept
    assert dm.region_counts["train"]["strips"] == 6
    # the whole-body strip is the whole image (fixture images are 8 x 16)
    np.testing.assert_allclose(dm.train_set.boxes[0, 0], [0, 0, 8, 16])
    batch = next(iter(dm.train_dataloader()))
    assert batch["whole"].shape == (2, 3, 32, 16) and batch["parts"].shape == (2, 4, 3, 8, 16)
    assert batch["whole"].dtype == torch.float32
    eval_batch = next(iter(dm.val_dataloader()))
    assert eval_batch["is_query"].tolist() == [True, True, False, False]
    assert eval_batch["index"].tolist() == [0, 1, 0, 1]


def test_a_corrupt_image_stops_setup_naming_the_file(tmp_path):
    folder = write_market_tree(tmp_path, SPLITS)
    bad = sorted((folder / "bounding_box_train").glob("0002_*.jpg"))[0]
    bad.write_bytes(b"")
    dm = _datamodule(tmp_path)
    with pytest.raises(CorruptImageError, match=bad.name):
        dm.setup("fit")


def test_skip_policy_drops_bad_samples_at_setup_with_a_count_and_relabels(tmp_path, caplog):
    folder = write_market_tree(tmp_path, SPLITS)
    for bad in sorted((folder / "bounding_box_train").glob("0002_*.jpg")):
        bad.write_bytes(b"not a jpeg")
    dm = _datamodule(tmp_path, on_bad_sample="skip")
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert "skipped 2 bad samples" in caplog.text
    assert dm.region_counts["train"]["skipped"] == 2
    assert len(dm.train_set) == 4
    assert sorted({r.pid for r in dm.train_set.records}) == [0, 1]  # identity 2 vanished: labels stay dense
    assert dm.num_classes == 2


def test_pose_regions_without_keypoints_name_both_fixes(tmp_path):
    write_market_tree(tmp_path, SPLITS)
    dm = _datamodule(tmp_path, regions="pose")
    with pytest.raises(FileNotFoundError, match="data.pose.source=strips"):
        dm.setup("fit")
