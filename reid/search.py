"""Search a folder of images with query images: `reid-search ckpt_path=<ckpt> query=<image(s)> gallery=<folder>`.

Usage::

    python -m reid.search --ckpt <run>/checkpoints/last.ckpt --query q1.jpg q2.jpg --gallery photos/ \\
        [--keypoints kp/] [--topk 10] [--out search_out/]

Writes into ``--out``: ``ranked.csv`` (query, rank, gallery image, distance), ``ranked_list.png``
(one row per query, nearest first) and ``gallery_features.pt``, the gallery's features, reused by
the next search of the same gallery with the same checkpoint (a changed, added or removed
gallery image, or another checkpoint, is detected and the features are computed again).
Memory stays bounded for large galleries: features are computed ``--batch-size`` images at a
time and the search compares the queries with ``--chunk`` gallery features at a time, keeping a
running top-k (never a queries x gallery matrix). Bad input (an unreadable image, a folder
without images, a checkpoint from elsewhere) is one ``error:`` line naming the file.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from reid.errors import ReidError

log = logging.getLogger(__name__)

CACHE_NAME = "gallery_features.pt"
CACHE_FORMAT = "reid.search.gallery/1"


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
    for candidate in (keypoints / relative / f"{image.stem}_keypoints.json", keypoints / f"{image.stem}_keypoints.json",
                      keypoints / relative / f"{image.stem}.json", keypoints / f"{image.stem}.json"):
        if candidate.is_file():
            return str(candidate)
    return None


def fingerprint(checkpoint: Path, images: Sequence[Path], options: dict) -> str:
    """What the gallery features depend on: the checkpoint file, every image (path, size, mtime), the options."""
    digest = hashlib.sha256()
    stat = checkpoint.stat()
    digest.update(f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{sorted(options.items())}".encode())
    for image in images:
        stat = image.stat()
        digest.update(f"\n{image.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def topk_search(query: Tensor, gallery: Tensor, k: int, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest gallery rows of each query row (squared Euclidean), gallery compared ``chunk`` rows at a time.

    Returns ``(distances, indices)``, each ``(Q, min(k, G))``, nearest first. Memory: ``Q x (chunk + k)``.
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
    return best_d, best_i


def _load_cache(path: Path, key: str) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
        log.warning("ignoring the unreadable feature cache %s", path)
        return None
    if cached.get("format") != CACHE_FORMAT or cached.get("fingerprint") != key:
        log.info("the gallery, the checkpoint or the options changed since %s was written: computing again", path)
        return None
    return cached["features"]


def search(
    checkpoint: Path, queries: Sequence[Path], gallery: Path, out: Path, *, keypoints: Path | None = None,
    topk: int = 10, batch_size: int = 64, chunk: int = 65536, device: str = "auto", flip: bool = False,
) -> dict:
    """Runs a search and writes its outputs (see the module doc); returns what it wrote and whether the cache served."""
    from reid.extractor import FeatureExtractor
    from reid.files import atomic_save_image, atomic_write, atomic_write_text
    from reid.viz.ranked import search_picture

    images = gallery_images(gallery)
    for query in queries:
        if not Path(query).is_file():
            raise SearchInputError(f"query image not found: {query}")
    extractor = FeatureExtractor(checkpoint, device=device, batch_size=batch_size, flip=flip)
    key = fingerprint(Path(checkpoint), images, {"flip": flip, "keypoints": str(keypoints)})
    cache = out / CACHE_NAME
    gallery_features = _load_cache(cache, key)
    cached = gallery_features is not None
    if gallery_features is None:
        gallery_keypoints = [keypoint_file(keypoints, image, gallery) for image in images]
        gallery_features = extractor([str(p) for p in images], keypoints=gallery_keypoints)
        payload = {"format": CACHE_FORMAT, "fingerprint": key, "features": gallery_features,
                   "paths": [str(p) for p in images]}
        atomic_write(cache, lambda stream: torch.save(payload, stream))
        log.info("gallery features of %d images written to %s", len(images), cache)
    query_features = extractor([str(q) for q in queries],
                               keypoints=[keypoint_file(keypoints, Path(q), None) for q in queries])
    distances, indices = topk_search(query_features, gallery_features, topk, chunk)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["query", "rank", "gallery", "distance"])
    for q, query in enumerate(queries):
        for rank, (d, i) in enumerate(zip(distances[q].tolist(), indices[q].tolist()), start=1):
            writer.writerow([str(query), rank, str(images[i]), f"{d:.6f}"])
    table = atomic_write_text(out / "ranked.csv", rows.getvalue())
    picture = search_picture([str(q) for q in queries], [[str(images[i]) for i in row] for row in indices.tolist()],
                             distances.tolist())
    atomic_save_image(picture, out / "ranked_list.png")
    return {"ranked": table, "picture": out / "ranked_list.png", "cache": cache, "cached": cached,
            "indices": indices, "distances": distances}


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="reid-search", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoint of train.py, or its run folder")
    parser.add_argument("--query", type=Path, nargs="+", required=True, help="query image(s)")
    parser.add_argument("--gallery", type=Path, required=True, help="folder of gallery images (searched recursively)")
    parser.add_argument("--keypoints", type=Path, default=None, help="folder of OpenPose JSON files (<stem>_keypoints.json)")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("search_out"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=65536, help="gallery features compared at a time")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--flip", action="store_true", help="flip-averaged features (as eval.flip)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``reid-search`` / ``python -m reid.search``."""
    from reid.runner import _last_line, user_errors

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        result = search(args.ckpt, args.query, args.gallery, args.out, keypoints=args.keypoints, topk=args.topk,
                        batch_size=args.batch_size, chunk=args.chunk, device=args.device, flip=args.flip)
    except user_errors() as err:
        print(f"error: {_last_line(str(err))}", file=sys.stderr)
        return 2
    print(f"wrote {result['ranked']} and {result['picture']} (gallery features "
          f"{'from the cache' if result['cached'] else 'computed'}: {result['cache']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
