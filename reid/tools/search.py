"""Search a folder of images with query images: `reid-search ckpt_path=<ckpt> query=<image(s)> gallery=<folder>`.

Usage (``key=value`` as every tool; bare arguments are the query images)::

    reid-search ckpt_path=<run>/checkpoints/last.ckpt gallery=photos/ q1.jpg q2.jpg \\
        [keypoints=kp/] [topk=10] [out=search_out/]

Writes into ``out``: ``ranked.csv`` (query, rank, gallery image, distance), ``ranked_list.png``
(one row per query, nearest first) and ``gallery_features.pt``, the gallery's features, reused by
the next search of the same gallery with the same checkpoint (a changed, added or removed
gallery image or keypoint file, other weights or other input settings are detected and the
features are computed again: see :func:`reid.inference.search.fingerprint`).
Memory stays bounded for large galleries: features are computed ``batch_size`` images at a
time and the search compares the queries with ``chunk`` gallery features at a time, keeping a
running top-k (never a queries x gallery matrix). Bad input (an unreadable image, a folder
without images, a checkpoint from elsewhere) is one ``error:`` line naming the file.
The search itself is the library function :func:`reid.inference.search.search`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from omegaconf import MISSING

from reid.conf.tool import option, run_tool
from reid.inference.search import SearchInputError, search


@dataclass
class SearchOptions:
    """The options of ``reid-search`` (``key=value``; bare arguments are ``query``)."""

    ckpt_path: str = option(MISSING, "a checkpoint of train.py, or its run folder (required)")
    gallery: str = option(MISSING, "folder of gallery images (searched recursively; required)")
    query: list[str] = option([], "query image(s)", positional=True)
    keypoints: str | None = option(None, "folder of OpenPose JSON files (<stem>_keypoints.json)")
    topk: int = option(10, "gallery images listed per query", low=1)
    out: str = option("search_out", "where ranked.csv, ranked_list.png and the gallery's features go")
    batch_size: int = option(64, "images per forward pass", low=1)
    chunk: int = option(65536, "gallery features compared at a time", low=1)
    device: str = option("auto", "auto (GPU when present), cpu, cuda, cuda:1...")
    flip: bool = option(False, "flip-averaged features (as eval.flip)")
    matching: Literal["none", "mu", "keypoints"] = option(
        "none", "compare on what both images show: part distances weighted by mu or keypoint confidence"
    )
    pipeline: Literal["cpu", "device"] = option(
        "cpu", "where the crops are cut: cpu (OpenCV per image) or device (batched, where the network runs)"
    )
    retain_freed_memory: bool = option(
        True, "keep freed memory in the process (glibc): large batches stop page-faulting (as train.py)"
    )


def search_command(options: SearchOptions) -> int:
    """Searches the gallery with the query images; prints what it wrote."""
    if not options.query:
        raise SearchInputError("no query image given (fix: reid-search ckpt_path=... gallery=<folder> <query.jpg> ...)")
    from reid.memory import apply_memory_setting

    apply_memory_setting(options.retain_freed_memory)
    result = search(
        Path(options.ckpt_path),
        [Path(q) for q in options.query],
        Path(options.gallery),
        Path(options.out),
        keypoints=Path(options.keypoints) if options.keypoints else None,
        topk=options.topk,
        batch_size=options.batch_size,
        chunk=options.chunk,
        device=options.device,
        flip=options.flip,
        matching=options.matching,
        pipeline=options.pipeline,
    )
    print(
        f"wrote {result['ranked']} and {result['picture']} (gallery features "
        f"{'from the cache' if result['cached'] else 'computed'}: {result['cache']})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-search`` / ``python -m reid.tools.search``: 0, or 2 with one ``error:`` line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_tool(search_command, SearchOptions, "search", argv)


if __name__ == "__main__":
    sys.exit(main())
