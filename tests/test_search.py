"""reid-search: a folder searched with query images; top-k CSV, picture, cached gallery features, bounded memory."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from reid import FeatureExtractor
from reid.checkpoints import CONFIG_KEY
from reid.inference.search import search, topk_search
from reid.tools.search import main


def images_of(result: dict) -> list[str]:
    with open(result["ranked"]) as handle:
        return [row["gallery"] for row in csv.DictReader(handle)]


def test_chunked_topk_equals_the_full_ranking():
    torch.manual_seed(0)
    query, gallery = torch.randn(5, 16), torch.randn(103, 16)
    distances, indices = topk_search(query, gallery, k=10, chunk=7)
    full = torch.cdist(query, gallery) ** 2
    expected_d, expected_i = full.topk(10, dim=1, largest=False)
    assert torch.equal(indices, expected_i)
    assert torch.allclose(distances, expected_d, atol=1e-4)
    assert topk_search(query, gallery[:3], k=10)[1].shape == (5, 3)  # k larger than the gallery


@pytest.fixture
def gallery(trained, tmp_path):
    _, datamodule, _ = trained
    folder = tmp_path / "gallery"
    records = [r for r, q in zip(datamodule.eval_set.records, datamodule.eval_set.is_query) if not q][:12]
    for record in records:
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        shutil.copy(record.image_path, folder / "sub" / os.path.basename(record.image_path))
    query = next(r for r, q in zip(datamodule.eval_set.records, datamodule.eval_set.is_query) if q).image_path
    return folder, query


def test_search_ranks_as_the_features_do_and_reuses_the_gallery_features(trained, gallery, tmp_path):
    checkpoint = trained[0]
    folder, query = gallery
    out = tmp_path / "out"
    first = search(checkpoint, [query], folder, out, topk=5, device="cpu", chunk=4)
    assert not first["cached"]
    extractor = FeatureExtractor(checkpoint, device="cpu", pose_estimator="none")
    images = sorted(str(p) for p in folder.rglob("*.jpg"))
    expected = (torch.cdist(extractor([query]), extractor(images)) ** 2).argsort(dim=1)[0, :5]
    with open(out / "ranked.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["gallery"] for r in rows] == [images[i] for i in expected.tolist()]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5] and all(r["query"] == query for r in rows)
    assert (out / "ranked_list.png").stat().st_size > 1000

    # a known answer: the query itself, put in the gallery, comes first at distance ~0
    shutil.copy(query, folder / "the_query_itself.jpg")
    found = search(checkpoint, [query], folder, tmp_path / "known", topk=3, device="cpu")
    assert images_of(found)[0] == str(folder / "the_query_itself.jpg") and found["distances"][0, 0] < 1e-3
    (folder / "the_query_itself.jpg").unlink()

    again = search(checkpoint, [query], folder, out, topk=5, device="cpu")
    assert again["cached"] and torch.equal(again["indices"], first["indices"])
    # a gallery image added: detected, computed again
    shutil.copy(images[0], folder / "added.jpg")
    assert not search(checkpoint, [query], folder, out, topk=5, device="cpu")["cached"]


def test_bad_inputs_are_one_line_naming_the_file(trained, gallery, tmp_path, capsys):
    checkpoint = trained[0]
    folder, query = gallery
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([f"ckpt_path={checkpoint}", query, f"gallery={empty}", f"out={tmp_path / 'o'}"]) == 2
    assert capsys.readouterr().err == f"error: the gallery folder {empty} holds no images (.jpg, .png...)\n"
    missing = tmp_path / "nope.jpg"
    assert main([f"ckpt_path={checkpoint}", str(missing), f"gallery={folder}"]) == 2
    assert capsys.readouterr().err == f"error: query image not found: {missing}\n"
    (folder / "sub" / "broken.jpg").write_bytes(b"not an image")
    assert main([f"ckpt_path={checkpoint}", query, f"gallery={folder}", f"out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.jpg" in err and err.count("\n") == 1
    stray = tmp_path / "stray.ckpt"
    torch.save({"state_dict": {}}, stray)
    assert main([f"ckpt_path={stray}", query, f"gallery={folder}"]) == 2
    assert "holds no stored run config" in capsys.readouterr().err


def test_distances_of_near_identical_features_are_never_negative():
    torch.manual_seed(0)
    query = torch.randn(4, 512)
    gallery = torch.cat([torch.randn(20, 512), query])  # each query is in the gallery: distance ~0
    raw = (query * query).sum(1)[:, None] + (gallery * gallery).sum(1)[None, :] - 2 * query @ gallery.T
    assert raw.min() < 0  # the float32 expansion does go below 0 here
    distances, indices = topk_search(query, gallery, k=3, chunk=7)
    assert (distances >= 0).all() and not torch.signbit(distances).any()  # no -0.0 either
    assert indices[:, 0].tolist() == [20, 21, 22, 23]


def _keypoints_of(datamodule, name: str) -> Path:
    """The synthetic set's keypoint file of image ``name`` (``<root>/keypoints/<split>/<stem>_keypoints.json``)."""
    image = Path(next(r.image_path for r in datamodule.eval_set.records if Path(r.image_path).name == name))
    found = image.parents[1] / "keypoints" / image.parent.name / f"{image.stem}_keypoints.json"
    assert found.is_file(), found
    return found


def _gallery_features(result: dict) -> torch.Tensor:
    return torch.load(result["cache"], weights_only=True)["features"]


def test_a_rewritten_keypoint_file_is_not_served_from_the_cache(trained, gallery, tmp_path):
    checkpoint = trained[0]
    folder, query = gallery
    images = sorted(folder.rglob("*.jpg"))
    keypoints = tmp_path / "kp"
    keypoints.mkdir()
    originals = {}
    for image in images:  # the copies keep the synthetic set's names
        originals[image] = shutil.copy(_keypoints_of(trained[1], image.name), keypoints)
    out = tmp_path / "out"
    assert not search(checkpoint, [query], folder, out, keypoints=keypoints, topk=3, device="cpu")["cached"]
    assert search(checkpoint, [query], folder, out, keypoints=keypoints, topk=3, device="cpu")["cached"]

    # the same file name, other joints (a re-run of the pose estimator): the regions, hence the feature, change
    changed = Path(originals[images[0]])
    document = json.loads(changed.read_text())
    joints = document["people"][0]["pose_keypoints_2d"]
    document["people"][0]["pose_keypoints_2d"] = [v * 0.7 if i % 3 == 1 else v for i, v in enumerate(joints)]
    changed.write_text(json.dumps(document))
    again = search(checkpoint, [query], folder, out, keypoints=keypoints, topk=3, device="cpu")
    assert not again["cached"]
    extractor = FeatureExtractor(checkpoint, device="cpu", pose_estimator="none")
    fresh = extractor([str(p) for p in images], keypoints=[originals[p] for p in images])
    assert torch.allclose(_gallery_features(again), fresh, atol=1e-5)
    assert not torch.allclose(fresh[0], extractor([str(images[0])], keypoints=[None])[0], atol=1e-3)


def test_the_cache_follows_the_checkpoints_content_not_its_file_date(trained, gallery, tmp_path):
    folder, query = gallery
    checkpoint = tmp_path / "model.ckpt"
    torch.save(torch.load(trained[0], weights_only=True), checkpoint)  # saved as rewrite() saves it: same size
    out = tmp_path / "out"
    images = [str(p) for p in sorted(folder.rglob("*.jpg"))]
    assert not search(checkpoint, [query], folder, out, topk=3, device="cpu")["cached"]

    def rewrite(change) -> None:
        """Changes the checkpoint in place, keeping its path, size and modification time."""
        before = checkpoint.stat()
        state = torch.load(checkpoint, weights_only=True)
        change(state)
        torch.save(state, checkpoint)
        assert checkpoint.stat().st_size == before.st_size
        os.utime(checkpoint, ns=(before.st_atime_ns, before.st_mtime_ns))

    def perturb(state: dict) -> None:
        name = next(k for k, v in state["state_dict"].items() if v.is_floating_point() and v.ndim == 4)
        state["state_dict"][name] = state["state_dict"][name] * 1.5

    def other_beta(state: dict) -> None:
        state[CONFIG_KEY]["data"]["beta"] = 0.3

    for change in (perturb, other_beta):
        rewrite(change)
        result = search(checkpoint, [query], folder, out, topk=3, device="cpu")
        assert not result["cached"], change.__name__
        fresh = FeatureExtractor(checkpoint, device="cpu")(images)  # as search() builds it
        assert torch.allclose(_gallery_features(result), fresh, atol=1e-5), change.__name__
    # a copy elsewhere holds the same weights and settings: the cache serves it
    copy = tmp_path / "elsewhere" / "copy.ckpt"
    copy.parent.mkdir()
    shutil.copy(checkpoint, copy)
    assert search(copy, [query], folder, out, topk=3, device="cpu")["cached"]
