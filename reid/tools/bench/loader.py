"""Data loading: images/s of one worker decoding a JPEG, cutting the five crops and applying SampleTransform.

Usage::

    reid-bench loader                  # python -m reid.tools.bench.loader; 300 images per size, every augmentation
    reid-bench loader n=1000 augment=false

A 128x64 JPEG is written to a temporary folder and read ``n`` times per size setting (paper
384x192 / 96x192 and demo 128x64 / 32x64), on one torch and one OpenCV thread; the boxes are
computed once, as the data module caches them. The figures measured on this project's machines
are in docs/benchmarks.md.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from reid.conf.tool import option, run_tool
from reid.data.crops import PART_SIZE, WHOLE_SIZE, crop_regions
from reid.data.transforms import SampleTransform


def bench_loading(
    n_images: int = 300,
    *,
    sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]] | None = None,
    augment: bool = True,
) -> dict[str, float]:
    """Images per second of one worker: JPEG decode + regions' five crops + SampleTransform.

    Args:
        n_images: images per setting.
        sizes: name -> (whole_size, part_size); default paper (384x192 / 96x192) and demo
            (128x64 / 32x64) sizes.
        augment: enable flip, colour jitter, translation and erasing (all with probability 0.5).

    Returns:
        Setting name -> images per second.
    """
    from reid.pose import compute_regions, load_canonical_poses

    sizes = sizes or {"paper 384x192/96x192": (WHOLE_SIZE, PART_SIZE), "demo 128x64/32x64": ((128, 64), (32, 64))}
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8), (5, 5), 0)
    keypoints = load_canonical_poses().coords[0] * 128.0
    boxes = compute_regions(keypoints, 3 / 48)
    probability = 0.5 if augment else 0.0
    transform = SampleTransform(
        hflip=probability, color_jitter=probability, pad_crop=probability, random_erasing=probability, seed=0
    )
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "0001_c1s1_000151_01.jpg")
        cv2.imwrite(path, image)
        for name, (whole_size, part_size) in sizes.items():
            start = time.perf_counter()
            for _ in range(n_images):
                raw = cv2.imread(path, cv2.IMREAD_COLOR)
                assert raw is not None  # written just above
                decoded = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
                whole, parts = crop_regions(decoded, boxes, whole_size, part_size)
                transform(whole, parts, boxes)
            rate = n_images / (time.perf_counter() - start)
            results[name] = rate
            print(f"{name}: {rate:,.0f} images/s (one worker, augment={augment})")
    return results


@dataclass
class LoaderOptions:
    """The options of ``reid-bench loader`` (``key=value``)."""

    n: int = option(300, "images per size setting", low=1)
    augment: bool = option(True, "flip, colour jitter, translation and erasing (false: normalisation only)")


def bench(options: LoaderOptions) -> int:
    """Prints the images/s of one data-loading worker at the paper's and the demo's sizes."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    bench_loading(options.n, augment=options.augment)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench loader`` / ``python -m reid.tools.bench.loader``."""
    return run_tool(bench, LoaderOptions, "bench loader", argv)


if __name__ == "__main__":
    raise SystemExit(main())
