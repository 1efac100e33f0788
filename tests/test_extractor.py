"""`from reid import FeatureExtractor`: features of any images, scoring exactly as evaluate.py scores the checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid import FeatureExtractor, checkpoints
from reid import tasks as runner
from reid.data.io import read_image
from reid.inference.extractor import FeatureInputError
from reid.metrics import evaluate_features


def _keypoint_files(datamodule) -> list[str | None]:
    source = datamodule._keypoint_source(datamodule.dataset)
    files = []
    for record in datamodule.eval_set.records:
        found = [p for p in source.candidates(record.image_path) if p.is_file()]
        files.append(str(found[0]) if found else None)
    return files


def test_features_of_query_and_gallery_score_as_evaluate_does(trained, make_cfg):
    checkpoint, datamodule, _ = trained
    from conftest import TINY_OVERRIDES

    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "model.", "trainer.enable_model"))]
    expected = runner.evaluate(
        make_cfg(
            f"ckpt_path={checkpoint}", "eval.pictures.enabled=false", *overrides, config_name="evaluate", tiny=False
        )
    )

    eval_set = datamodule.eval_set
    paths = [r.image_path for r in eval_set.records]
    extractor = FeatureExtractor(checkpoint, device="cpu", batch_size=5, pose_estimator="none")
    features = extractor(paths, keypoints=_keypoint_files(datamodule))
    assert features.shape == (len(paths), extractor.feature_dim)
    query = torch.tensor(eval_set.is_query)
    pids = torch.tensor([r.pid for r in eval_set.records])
    camids = torch.tensor([r.camid for r in eval_set.records])
    scored = evaluate_features(
        features[query],
        features[~query],
        pids[query],
        pids[~query],
        camids[query],
        camids[~query],
        protocol=datamodule.dataset.protocol,
    )
    assert scored["rank1"] == pytest.approx(expected["rank1"], abs=1e-6)
    assert scored["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


def test_paths_arrays_pil_images_and_keypoint_arrays_give_the_same_features(trained):
    checkpoint, datamodule, _ = trained
    paths = [r.image_path for r in datamodule.eval_set.records[:6]]
    files = _keypoint_files(datamodule)[:6]
    extractor = FeatureExtractor(checkpoint, device="cpu", batch_size=4, pose_estimator="none")
    reference = extractor(paths, keypoints=files)
    arrays = [read_image(p) for p in paths]
    assert torch.allclose(extractor(arrays, keypoints=files), reference, atol=1e-5)
    assert torch.allclose(extractor([Image.fromarray(a) for a in arrays], keypoints=files), reference, atol=1e-5)
    source = datamodule._keypoint_source(datamodule.dataset)
    joints = [source.get(p, image_size=(a.shape[1], a.shape[0])) for p, a in zip(paths, arrays)]
    assert torch.allclose(extractor(paths, keypoints=joints), reference, atol=1e-5)
    # one image at a time: the batch does not change a feature
    assert torch.allclose(torch.cat([extractor(p, keypoints=[f]) for p, f in zip(paths, files)]), reference, atol=1e-5)
    normalised = FeatureExtractor(checkpoint, device="cpu", normalize=True, pose_estimator="none")(
        paths, keypoints=files
    )
    assert torch.allclose(normalised.norm(dim=1), torch.ones(len(paths)), atol=1e-5)


def test_images_without_keypoints_use_the_fallback_and_are_counted(trained, caplog):
    checkpoint, datamodule, _ = trained
    paths = [r.image_path for r in datamodule.eval_set.records[:5]]
    extractor = FeatureExtractor(checkpoint, device="cpu", pose_estimator="none")
    with caplog.at_level(logging.WARNING, logger="reid.inference.extractor"):
        features = extractor(paths)
    assert features.shape[0] == 5 and torch.isfinite(features).all()
    assert extractor.last_counts["keypoints_none"] == 5
    assert any("5 of 5 images had no keypoints" in r.message for r in caplog.records)
    # a callable estimator is used for them instead
    canonical = _keypoint_files(datamodule)[:5]
    from reid.pose import read_openpose_json

    estimated = iter(
        [
            read_openpose_json(f, image_size=(read_image(p).shape[1], read_image(p).shape[0]))
            for f, p in zip(canonical, paths)
        ]
    )
    by_estimator = FeatureExtractor(checkpoint, device="cpu", pose_estimator=lambda image: next(estimated))
    assert torch.allclose(by_estimator(paths), extractor(paths, keypoints=canonical), atol=1e-5)
    assert by_estimator.last_counts["keypoints_estimated"] == 5


def test_bad_inputs_are_named(trained, tmp_path):
    checkpoint, _, _ = trained
    extractor = FeatureExtractor(checkpoint, device="cpu", pose_estimator="none")
    with pytest.raises(FeatureInputError, match=r"image 0: an array must be H x W x 3 uint8 RGB"):
        extractor([np.zeros((10, 10), dtype=np.uint8)])
    with pytest.raises(FeatureInputError, match=r"keypoints 0: expected an \(18, 3\) COCO-18 array"):
        extractor([np.zeros((20, 10, 3), dtype=np.uint8)], keypoints=[np.zeros((17, 3))])
    with pytest.raises(FeatureInputError, match="2 images but 1 keypoint entries"):
        extractor([np.zeros((20, 10, 3), dtype=np.uint8)] * 2, keypoints=[None])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(Exception, match="broken.jpg"):
        extractor([str(broken)])
    stray = tmp_path / "stray.ckpt"
    torch.save({"state_dict": {}}, stray)
    with pytest.raises(checkpoints.CheckpointLoadError, match="holds no stored run config"):
        FeatureExtractor(stray)
    assert FeatureExtractor(Path(checkpoint).parents[1], device="cpu").feature_dim == extractor.feature_dim


def test_a_directory_given_as_an_image_or_as_the_checkpoint_is_named_as_one(trained, tmp_path):
    checkpoint, _, _ = trained
    extractor = FeatureExtractor(checkpoint, device="cpu", pose_estimator="none")
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(FeatureInputError) as info:
        extractor([np.zeros((20, 10, 3), dtype=np.uint8), str(folder)])
    message = str(info.value)
    assert f"image 1 ({folder}) is a directory, not an image file" in message and "does not exist" not in message
    assert "pass the image files in it" in message
    with pytest.raises(FeatureInputError) as info:
        FeatureExtractor(folder, device="cpu")
    message = str(info.value)
    assert f"checkpoint {folder} is a directory with no checkpoint in it" in message
    assert "pass a .ckpt file, or the run folder of a train.py run" in message


def test_a_feature_moves_with_its_batch_by_rounding_only_within_the_documented_tolerance(trained):
    from reid.inference import extractor as extractor_module

    checkpoint, datamodule, _ = trained
    paths = [r.image_path for r in datamodule.eval_set.records[:12]]
    files = _keypoint_files(datamodule)[:12]
    extractor = FeatureExtractor(checkpoint, device="cpu", batch_size=12, pose_estimator="none")
    batched = extractor(paths, keypoints=files)
    alone = torch.cat([extractor(p, keypoints=[f]) for p, f in zip(paths, files)])
    tolerance = extractor_module.BATCH_TOLERANCE
    assert tolerance == 1e-5 and "BATCH_TOLERANCE` (1e-5)" in FeatureExtractor.__doc__  # documented where it is used
    scale = max(1.0, float(batched.abs().max()))
    assert float((batched - alone).abs().max()) <= tolerance * scale


def test_a_model_weighing_parts_by_keypoints_scores_alike_everywhere_and_is_not_exported(tmp_path, data_dir, make_cfg):
    from conftest import TINY_OVERRIDES, train_tiny

    from reid.tools.export import ExportError, ExportOptions, export

    keypoint_mu = ["model=intra_inter", "model.net.inter_source=keypoints", "model.net.inter_weight=gate"]
    checkpoint, datamodule, _ = train_tiny(tmp_path, data_dir, keypoint_mu)
    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "model.", "trainer.enable_model"))]
    expected = runner.evaluate(
        make_cfg(
            f"ckpt_path={checkpoint}", "eval.pictures.enabled=false", *overrides, config_name="evaluate", tiny=False
        )
    )
    eval_set = datamodule.eval_set
    extractor = FeatureExtractor(checkpoint, device="cpu", batch_size=5, pose_estimator="none")
    found = extractor.extract([r.image_path for r in eval_set.records], keypoints=_keypoint_files(datamodule))
    assert torch.allclose(found.part_weights, torch.nan_to_num(found.part_confidence, nan=1.0))
    query = torch.tensor(eval_set.is_query)
    pids = torch.tensor([r.pid for r in eval_set.records])
    camids = torch.tensor([r.camid for r in eval_set.records])
    scored = evaluate_features(
        found.feature[query], found.feature[~query], pids[query], pids[~query], camids[query], camids[~query],
        protocol=datamodule.dataset.protocol,
    )  # fmt: skip
    assert scored["rank1"] == pytest.approx(expected["rank1"], abs=1e-6)
    assert scored["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    with pytest.raises(ExportError, match="inter_source=keypoints"):
        export(ExportOptions(ckpt_path=str(checkpoint), out=str(tmp_path / "m.onnx")))
