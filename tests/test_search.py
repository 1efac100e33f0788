"""reid-search: a folder searched with query images; top-k CSV, picture, cached gallery features, bounded memory."""

from __future__ import annotations

import csv
import os
import shutil

import pytest
import torch

from reid import FeatureExtractor
from reid.inference.search import main, search, topk_search


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
