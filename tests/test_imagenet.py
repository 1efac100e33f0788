"""ImageNet pre-training: folder reader, strip framing, a Hydra pre-training run, loading its weights for ReID."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

import reid.tasks as runner
from reid.data.imagenet import ImageNetLayoutError, class_index, load_imagenet_folder
from reid.data.io import CorruptImageError
from reid.lit.imagenet import ImageNetDataModule, framing_box, strip_boxes
from reid.lit.module import ReIDModule
from reid.models import AttentionReIDNet, is_classifier_parameter
from reid.models.pretrained import PretrainedWeightsError, load_pretrained

WNIDS = ("n01440764", "n01443537", "n01484850")
# the tiny network of the pre-training run below
NET_OPTIONS = {"width": 0.25, "intra_attention": True, "fusion": "inter"}


def _write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)


def make_imagenet(root: Path, train_per_class: int = 3, val_per_class: int = 2) -> Path:
    """train/<wnid>/ and val/<wnid>/ folders of flat-colour JPEGs, one colour per class."""
    colours = ((200, 30, 30), (30, 200, 30), (30, 30, 200))
    for wnid, colour in zip(WNIDS, colours):
        for i in range(train_per_class):
            _write_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", colour)
        for i in range(val_per_class):
            _write_image(root / "val" / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG", colour, size=(20, 36))
    return root


# ---------------------------------------------------------------------------- reader


def test_classes_are_sorted_train_folders_and_samples_carry_their_index(tmp_path):
    root = make_imagenet(tmp_path / "imagenet")
    assert class_index(root) == {"n01440764": 0, "n01443537": 1, "n01484850": 2}
    val = load_imagenet_folder(root, "val")
    assert [(Path(p).name, c) for p, c in val] == [
        ("ILSVRC2012_val_n01440764_0.JPEG", 0),
        ("ILSVRC2012_val_n01440764_1.JPEG", 0),
        ("ILSVRC2012_val_n01443537_0.JPEG", 1),
        ("ILSVRC2012_val_n01443537_1.JPEG", 1),
        ("ILSVRC2012_val_n01484850_0.JPEG", 2),
        ("ILSVRC2012_val_n01484850_1.JPEG", 2),
    ]
    assert len(load_imagenet_folder(root, "train")) == 9


def test_other_files_and_empty_classes_are_counted_in_warnings(tmp_path, caplog):
    root = make_imagenet(tmp_path / "imagenet")
    (root / "train" / "n00000000").mkdir()  # sorts first: the others move up by one
    (root / "train" / WNIDS[0] / "notes.txt").write_text("x")
    _write_image(root / "train" / WNIDS[1] / "extra.png", (0, 0, 0))
    with caplog.at_level(logging.WARNING, logger="reid.data.imagenet"):
        train = load_imagenet_folder(root, "train")
    assert len(train) == 10
    assert {c for _, c in train} == {1, 2, 3}
    assert sum(1 for p, c in train if p.endswith("extra.png") and c == 2) == 1
    assert "1 class folder(s) without images (first: n00000000)" in caplog.text
    assert "ignored 1 file(s)" in caplog.text


def test_layout_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(ImageNetLayoutError, match=r"has no train/ folder.*train/<wnid>"):
        load_imagenet_folder(tmp_path / "nowhere", "train")
    root = make_imagenet(tmp_path / "imagenet")
    (root / "val" / "n99999999").mkdir()
    with pytest.raises(ImageNetLayoutError, match=r"val has 1 class folder\(s\) not in .*train \(first: n99999999\)"):
        load_imagenet_folder(root, "val")
    (root / "val" / "n99999999").rmdir()
    for path in (root / "val").rglob("*.JPEG"):
        path.unlink()
    with pytest.raises(ImageNetLayoutError, match=r"val holds no images"):
        load_imagenet_folder(root, "val")
    for path in (root / "val").iterdir():
        path.rmdir()
    (root / "val").rmdir()
    with pytest.raises(ImageNetLayoutError, match=r"imagenet has no val/ folder"):
        load_imagenet_folder(root, "val")
    with pytest.raises(ValueError, match="unknown ImageNet split 'test'"):
        load_imagenet_folder(root, "test")


# ---------------------------------------------------------------------------- framing and batches


def test_strip_boxes_of_a_centre_crop_are_hand_computed_quarters():
    # 40x30 image, input aspect 2 (h/w): the centred box is 15 wide, 30 high, from x = 12.5
    assert framing_box(40, 30, 2.0, "center_crop") == (12.5, 0.0, 27.5, 30.0)
    assert framing_box(40, 30, 2.0, "stretch") == (0.0, 0.0, 40.0, 30.0)
    boxes = strip_boxes(40, 30, 2.0, framing="center_crop", beta=0.1)
    # strips of a 30-high box with overlap 3 px: 0-10.5, 4.5-18, 12-25.5, 19.5-30
    expected = [
        [12.5, 0, 27.5, 30],
        [12.5, 0, 27.5, 10.5],
        [12.5, 4.5, 27.5, 18],
        [12.5, 12, 27.5, 25.5],
        [12.5, 19.5, 27.5, 30],
    ]
    np.testing.assert_allclose(boxes, expected, atol=1e-5)


def test_datamodule_batches_have_the_reid_layout(tmp_path):
    root = make_imagenet(tmp_path / "imagenet")
    datamodule = ImageNetDataModule(
        "imagenet",
        root,
        whole_size=(32, 16),
        part_size=(8, 16),
        batch_size=4,
        eval_batch_size=6,
        num_workers=0,
        augment={"hflip": 0.0},
    )
    datamodule.setup("fit")
    assert datamodule.num_classes == 3 and datamodule.dataset.protocol == "classification"
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["whole"].shape == (6, 3, 32, 16) and batch["parts"].shape == (6, 4, 3, 8, 16)
    assert batch["pid"].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["camid"].tolist() == [0] * 6 and batch["index"].tolist() == list(range(6))
    assert not batch["is_query"].any()
    # flat-colour images minus their own channel means: every input is 0 up to JPEG noise
    assert batch["whole"].abs().max() < 0.05 and batch["parts"].abs().max() < 0.05


def test_unreadable_image_stops_or_is_replaced_by_the_next_one(tmp_path, caplog):
    root = make_imagenet(tmp_path / "imagenet")
    broken = root / "val" / WNIDS[0] / f"ILSVRC2012_val_{WNIDS[0]}_1.JPEG"
    broken.write_bytes(b"not a jpeg")
    options = {"whole_size": (32, 16), "part_size": (8, 16), "num_workers": 0}
    strict = ImageNetDataModule("imagenet", root, **options)
    strict.setup("fit")
    with pytest.raises(CorruptImageError, match="ILSVRC2012_val_n01440764_1.JPEG"):
        strict.eval_set[1]
    lenient = ImageNetDataModule("imagenet", root, on_bad_sample="skip", **options)
    lenient.setup("fit")
    with caplog.at_level(logging.WARNING, logger="reid.lit.imagenet"):
        sample = lenient.eval_set[1]
    assert (sample["index"], sample["pid"]) == (2, 1)  # the next image, of the next class
    assert "skipped unreadable image" in caplog.text and broken.name in caplog.text
    assert lenient.eval_set.skipped == 1


# ---------------------------------------------------------------------------- pre-training run and loading


@pytest.fixture
def pretrained_checkpoint(make_cfg, tmp_path, monkeypatch) -> tuple[Path, dict]:
    """One epoch of `experiment=imagenet_pretrain` on the tiny folder; its last.ckpt and metrics."""
    root = make_imagenet(tmp_path / "imagenet")
    cfg = make_cfg(
        "experiment=imagenet_pretrain",
        "data.whole_size=[64,32]",
        "data.part_size=[16,32]",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.eval_batch_size=8",
        "model.net.width=0.25",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.enable_model_summary=false",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        "~callbacks.lr_monitor",
        "logger=none",
        tiny=False,
    )
    with open_dict(cfg):
        cfg.paths.data_dir = str(root)
    assert cfg.trainer.max_epochs == 1 and cfg.model.scheduler.milestones == [3, 6]  # recipe/imagenet
    metrics = runner.train(cfg)
    assert set(metrics) == {"top1", "top5"}
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert len(list(checkpoints.glob("best_epoch*.ckpt"))) == 1  # the monitor key val/top1 exists
    return checkpoints / "last.ckpt", metrics


def test_pretraining_run_validates_top1_top5_and_loads_into_a_reid_network(pretrained_checkpoint, tmp_path):
    checkpoint, metrics = pretrained_checkpoint
    assert set(metrics) == {"top1", "top5"}
    assert metrics["top5"] == 1.0  # three classes: any five guesses contain the label
    assert any(metrics["top1"] == pytest.approx(k / 6) for k in range(7))  # six validation images
    written = json.loads((checkpoint.parent.parent / "metrics.json").read_text())
    assert written == pytest.approx(metrics)

    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    source = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    net = AttentionReIDNet(7, **NET_OPTIONS)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loaded, skipped = load_pretrained(net, checkpoint)
    classifier_keys = sorted(k for k in source if is_classifier_parameter(k))
    assert classifier_keys and skipped == classifier_keys
    assert loaded == sorted(k for k in source if not is_classifier_parameter(k))
    assert set(loaded) | set(skipped) == set(net.state_dict())
    for key, value in net.state_dict().items():
        expected = before[key] if is_classifier_parameter(key) else source[key]
        assert torch.equal(value, expected), key
    assert net.global_branch.classifier.weight.shape[0] == 7

    # the same through ReIDModule(pretrained=...), into the separate part-branch layout
    module = ReIDModule(
        net=partial(AttentionReIDNet, group_parts=False, **NET_OPTIONS),
        num_classes=5,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        pretrained=str(checkpoint),
    )
    assert module.hparams["pretrained"] == str(checkpoint)
    separate = module.net.state_dict()
    separate_keys = [k for k in separate if k.startswith("part_branches.")]
    assert separate_keys
    for key in separate_keys:
        if is_classifier_parameter(key):
            continue
        index, rest = key[len("part_branches.") :].split(".", 1)
        value = source["part_branch." + rest]
        expected = value if value.dim() == 0 else value.chunk(4, dim=0)[int(index)]
        assert torch.equal(separate[key], expected), key


def test_load_pretrained_refuses_the_wrong_file(tmp_path):
    net = AttentionReIDNet(3, width=0.25)
    with pytest.raises(FileNotFoundError, match="pre-trained weights not found"):
        load_pretrained(net, tmp_path / "missing.ckpt")
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, foreign)
    message = r"no tensor of .*resnet\.pth fits the network \(2 in the file: "
    message += r"0 classifier, 0 of another shape, 2 unknown"
    with pytest.raises(PretrainedWeightsError, match=message):
        load_pretrained(net, foreign)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callback": logging.getLogger("x")}, pickled)
    message = r"cannot load pre-trained weights .*pickled\.ckpt with weights_only=True"
    with pytest.raises(PretrainedWeightsError, match=message):
        load_pretrained(net, pickled)
