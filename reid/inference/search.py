"""Search a folder of images with query images: the library half of ``reid-search`` (:mod:`reid.tools.search`).

:func:`search` writes into ``out``: ``ranked.csv`` (query, rank, gallery image, distance),
``ranked_list.png`` (one row per query, nearest first) and ``gallery_features.pt``, the gallery's
features, reused by the next search of the same gallery with the same checkpoint (a changed, added
or removed gallery image or keypoint file, other weights or other input settings are detected and
the features are computed again: see :func:`fingerprint`).
Memory stays bounded for large galleries: features are computed ``batch_size`` images at a
time and :func:`topk_search` compares the queries with ``chunk`` gallery features at a time,
keeping a running top-k (never a queries x gallery matrix). Bad input (an unreadable image, a
folder without images, a checkpoint from elsewhere) raises a :class:`reid.errors.ReidError`
naming the file (:class:`SearchInputError` for the query, gallery and keypoint inputs).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from reid.errors import ReidError

if TYPE_CHECKING:
    from reid.inference.extractor import ExtractedFeatures

log = logging.getLogger(__name__)

CACHE_NAME = "gallery_features.pt"
# /3: the branch features, mu and keypoint confidences are cached beside the feature (visibility matching)
CACHE_FORMAT = "reid.inference.search.gallery/3"


class SearchInputError(ReidError, ValueError):
    """A query, gallery or keypoint input that cannot be searched (the message names it)."""


def gallery_images(folder: Path) -> list[Path]:
    """Every image file below ``folder``, sorted (the gallery's order)."""
    from reid.data.datasets.common import is_image_file

    if not folder.is_dir():
        raise SearchInputError(f"gallery folder not found: {folder}")
    images = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not images:
        raise SearchInputError(f"the gallery folder {folder} holds no images (.jpg, .png...)")
    return images


def keypoint_file(keypoints: Path | None, image: Path, root: Path | None) -> str | None:
    """The OpenPose JSON of ``image`` under ``keypoints`` (same relative folder, or flat), if there is one."""
    if keypoints is None:
        return None
    relative = image.relative_to(root).parent if root is not None and image.is_relative_to(root) else Path()
    for candidate in (
        keypoints / relative / f"{image.stem}_keypoints.json",
        keypoints / f"{image.stem}_keypoints.json",
        keypoints / relative / f"{image.stem}.json",
        keypoints / f"{image.stem}.json",
    ):
        if candidate.is_file():
            return str(candidate)
    return None


def file_identity(path: Path, content: bool = False) -> str:
    """``path|size|mtime_ns`` of a file, and with ``content`` the SHA-256 of its bytes (for small files)."""
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if content:
        identity += f"|{hashlib.sha256(path.read_bytes()).hexdigest()}"
    return identity


def fingerprint(
    identity: Mapping[str, Any], images: Sequence[Path], keypoint_files: Sequence[str | None] | None = None
) -> str:
    """The cache key of gallery features: everything they depend on.

    Args:
        identity: the checkpoint's content identity and the input settings (sizes, β,
            normalisation, pose thresholds...), plain values (:meth:`FeatureExtractor.weights_digest`,
            :meth:`FeatureExtractor.input_settings`); never the device.
        images: every gallery image, by path, size and mtime.
        keypoint_files: each image's keypoint file or None; by path, size, mtime and content
            (a rewritten file keeps its name, and within one clock tick its mtime).
    """
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    files = keypoint_files if keypoint_files is not None else [None] * len(images)
    if len(files) != len(images):
        raise ValueError(f"{len(images)} images but {len(files)} keypoint entries")
    for image, keypoints in zip(images, files, strict=True):
        pose = file_identity(Path(keypoints), content=True) if keypoints else "no keypoints"
        digest.update(f"\n{file_identity(image)}|{pose}".encode())
    return digest.hexdigest()


def topk_search(query: Tensor, gallery: Tensor, k: int, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest gallery rows of each query row (squared Euclidean), gallery compared ``chunk`` rows at a time.

    Returns ``(distances, indices)``, each ``(Q, min(k, G))``, nearest first, distances clamped at 0.
    Memory: ``Q x (chunk + k)``.
    """
    k = min(int(k), gallery.shape[0])
    best_d = torch.full((query.shape[0], 0), float("inf"))
    best_i = torch.zeros((query.shape[0], 0), dtype=torch.long)
    q_sq = torch.einsum("ij,ij->i", query, query)[:, None]
    for start in range(0, gallery.shape[0], chunk):
        block = gallery[start : start + chunk]
        distances = q_sq + torch.einsum("ij,ij->i", block, block)[None, :] - 2 * query @ block.T
        merged_d = torch.cat([best_d, distances], dim=1)
        merged_i = torch.cat([best_i, torch.arange(start, start + block.shape[0]).expand(query.shape[0], -1)], dim=1)
        best_d, order = merged_d.topk(min(k, merged_d.shape[1]), dim=1, largest=False)
        best_i = merged_i.gather(1, order)
    # |q|^2 + |g|^2 - 2 q.g of near-identical features can come out slightly below 0: a distance is
    # never negative, and the order above is settled. "+ 0.0" turns -0.0 (printed -0.000000) into 0.0
    # and, unlike a comparison, keeps a NaN a NaN
    return best_d.clamp_min(0.0) + 0.0, best_i


def _load_cache(path: Path, key: str) -> ExtractedFeatures | None:
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
        log.warning("ignoring the unreadable feature cache %s", path)
        return None
    if cached.get("format") != CACHE_FORMAT or cached.get("fingerprint") != key:
        log.info(
            "the gallery images, their keypoint files, the checkpoint's weights or the input settings changed "
            "since %s was written: computing again",
            path,
        )
        return None
    from reid.inference.extractor import ExtractedFeatures

    return ExtractedFeatures(
        cached["features"], cached["global"], cached["parts"], cached.get("mu"), cached["confidence"]
    )


def search(
    checkpoint: Path,
    queries: Sequence[Path],
    gallery: Path,
    out: Path,
    *,
    keypoints: Path | None = None,
    topk: int = 10,
    batch_size: int = 64,
    chunk: int = 65536,
    device: str = "auto",
    flip: bool = False,
    matching: str = "none",
    pipeline: str = "cpu",
) -> dict:
    """Runs a search and writes its outputs (see the module doc); returns what it wrote and whether the cache served."""
    from reid.files import atomic_save_image, atomic_write, atomic_write_text
    from reid.inference.extractor import FeatureExtractor
    from reid.viz.ranked import search_picture

    images = gallery_images(gallery)
    for query in queries:
        if not Path(query).is_file():
            raise SearchInputError(f"query image not found: {query}")
    extractor = FeatureExtractor(checkpoint, device=device, batch_size=batch_size, flip=flip, pipeline=pipeline)
    gallery_keypoints = [keypoint_file(keypoints, image, gallery) for image in images]
    identity = {"weights": extractor.weights_digest(), "input": extractor.input_settings()}
    key = fingerprint(identity, images, gallery_keypoints)
    cache = out / CACHE_NAME
    gallery_features = _load_cache(cache, key)
    cached = gallery_features is not None
    if gallery_features is None:
        gallery_features = extractor.extract([str(p) for p in images], keypoints=gallery_keypoints)
        payload = {
            "format": CACHE_FORMAT,
            "fingerprint": key,
            "features": gallery_features.feature,
            "global": gallery_features.global_feature,
            "parts": gallery_features.part_features,
            "mu": gallery_features.part_weights,
            "confidence": gallery_features.part_confidence,
            "paths": [str(p) for p in images],
        }
        atomic_write(cache, lambda stream: torch.save(payload, stream))
        log.info("gallery features of %d images written to %s", len(images), cache)
    query_features = extractor.extract(
        [str(q) for q in queries], keypoints=[keypoint_file(keypoints, Path(q), None) for q in queries]
    )
    if matching == "none":
        distances, indices = topk_search(query_features.feature, gallery_features.feature, topk, chunk)
    else:
        from reid.metrics.visibility import visibility_distance

        # compared on what both images show (eval.visibility_matching): one (queries x gallery) matrix
        full = visibility_distance(
            query_features.global_feature,
            gallery_features.global_feature,
            query_features.part_features,
            gallery_features.part_features,
            query_features.visibility(matching),
            gallery_features.visibility(matching),
        )
        distances, indices = full.topk(min(topk, full.shape[1]), dim=1, largest=False)
        distances = distances.clamp_min(0.0) + 0.0
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["query", "rank", "gallery", "distance"])
    for q, query in enumerate(queries):
        for rank, (d, i) in enumerate(zip(distances[q].tolist(), indices[q].tolist(), strict=True), start=1):
            writer.writerow([str(query), rank, str(images[i]), f"{d:.6f}"])
    table = atomic_write_text(out / "ranked.csv", rows.getvalue())
    picture = search_picture(
        [str(q) for q in queries], [[str(images[i]) for i in row] for row in indices.tolist()], distances.tolist()
    )
    atomic_save_image(picture, out / "ranked_list.png")
    return {
        "ranked": table,
        "picture": out / "ranked_list.png",
        "cache": cache,
        "cached": cached,
        "indices": indices,
        "distances": distances,
    }
