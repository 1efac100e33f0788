"""Data loading on both pipelines: a worker's CPU time per image, the bytes it ships, and the device path's crop cost.

Usage::

    reid-bench loader                          # python -m reid.tools.bench.loader; every augmentation, both pipelines
    reid-bench loader n=1000 augment=false pipelines=[cpu]

``n`` rendered 128x64 JPEG originals (Market-1501's size) are written to a temporary folder and
served by :class:`reid.data.crop_dataset.CropDataset`, the data module's data set, as a loader
worker serves them: each sample seeded, on one torch and one OpenCV thread, at the paper's crop
sizes (384x192 / 96x192) and the demo's (128x64 / 32x64). For each pipeline it reports:

* **worker CPU ms per image**: ``dataset[(index, seed)]`` plus its share of the batch's collation,
  in process time (``cpu``: decode, five crops, augmentation, normalisation; ``device``: the
  original from the decoded-image cache, and the draws);
* **bytes per image**: the collated batch's tensors over its images (what goes from the worker
  to the training process, and on to the device);
* **crops ms per image** (``device`` only): :class:`reid.data.device_batch.DeviceCrops` on the
  batch, where the network runs (here the CPU: on an accelerator this is the device's time).

Boxes are computed once, as the data module caches them. The figures measured on this project's
machines are in docs/benchmarks.md.
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
from torch.utils.data import default_collate

from reid.conf.tool import option, run_tool
from reid.data.crops import PART_SIZE, WHOLE_SIZE
from reid.data.transforms import SampleTransform
from reid.errors import ConfigError

SIZES = {"paper 384x192/96x192": (WHOLE_SIZE, PART_SIZE), "demo 128x64/32x64": ((128, 64), (32, 64))}


@dataclass
class LoaderRow:
    """One pipeline at one size."""

    pipeline: str
    size: str
    worker_ms: float
    bytes_per_image: float
    crops_ms: float | None


def _originals(folder: Path, count: int) -> list[str]:
    """``count`` distinct smooth 128x64 JPEGs (Market-1501's size and format)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8), (5, 5), 0)
        path = folder / f"{i:04d}_c1s1_000151_01.jpg"
        cv2.imwrite(str(path), image)
        paths.append(str(path))
    return paths


def _batch_bytes(batch: dict) -> int:
    total = 0
    for value in batch.values():
        if isinstance(value, dict):
            total += _batch_bytes(value)
        elif isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
    return total


def bench_loading(
    n_images: int = 256,
    *,
    pipelines: Sequence[str] = ("cpu", "device"),
    sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]] | None = None,
    augment: bool = True,
    batch_size: int = 32,
) -> list[LoaderRow]:
    """Measures each pipeline at each size (see the module doc); prints and returns the rows.

    Args:
        n_images: originals served per setting.
        pipelines: ``cpu`` and/or ``device``.
        sizes: name -> (whole_size, part_size); default the paper's and the demo's.
        augment: flip, colour jitter, translation and erasing, each with probability 0.5.
        batch_size: images per collated batch.
    """
    from reid.data.crop_dataset import CropDataset
    from reid.data.image_cache import DecodedImages
    from reid.data.records import Record
    from reid.pose import compute_regions, load_canonical_poses

    sizes = sizes or SIZES
    keypoints = load_canonical_poses().coords[0] * 128.0
    boxes = np.repeat(compute_regions(keypoints, 3 / 48)[None].astype(np.float32), n_images, axis=0)
    p = 0.5 if augment else 0.0
    rows: list[LoaderRow] = []
    with tempfile.TemporaryDirectory() as folder:
        paths = _originals(Path(folder), n_images)
        records = [Record(path, i % 16, 1) for i, path in enumerate(paths)]
        cache = DecodedImages.open(paths, Path(folder) / "cache", log=lambda _: None)
        for name, (whole_size, part_size) in sizes.items():
            for pipeline in pipelines:
                dataset = CropDataset(
                    records,
                    boxes,
                    SampleTransform(train=True, hflip=p, color_jitter=p, pad_crop=p, random_erasing=p),
                    whole_size,
                    part_size,
                    pipeline=pipeline,  # type: ignore[arg-type]
                    images=cache if pipeline == "device" else None,
                )
                collate = dataset.collate or default_collate
                batches, start = [], time.process_time()
                for first in range(0, n_images, batch_size):
                    keys = range(first, min(n_images, first + batch_size))
                    batches.append(collate([dataset[(i, 1000 + i)] for i in keys]))
                worker = (time.process_time() - start) / n_images
                shipped = sum(_batch_bytes(b) for b in batches) / n_images
                crops = None
                if pipeline == "device":
                    start = time.process_time()
                    for batch in batches:
                        dataset.device_crops(batch)
                    crops = (time.process_time() - start) / n_images
                row = LoaderRow(pipeline, name, 1000 * worker, shipped, None if crops is None else 1000 * crops)
                rows.append(row)
                where = "" if crops is None else f"; crops where the network runs {1000 * crops:.2f} ms"
                print(f"{name}, {pipeline}: worker {row.worker_ms:.3f} ms/image, {shipped:,.0f} bytes/image{where}")
    return rows


@dataclass
class LoaderOptions:
    """The options of ``reid-bench loader`` (``key=value``)."""

    n: int = option(256, "originals served per setting", low=1)
    augment: bool = option(True, "flip, colour jitter, translation and erasing (false: normalisation only)")
    pipelines: list[str] = option(["cpu", "device"], "cpu (OpenCV in the worker) and/or device (originals + draws)")
    batch_size: int = option(32, "images per collated batch", low=1)


def bench(options: LoaderOptions) -> int:
    """Prints each pipeline's worker CPU time and bytes per image at the paper's and the demo's sizes."""
    unknown = [p for p in options.pipelines if p not in ("cpu", "device")]
    if unknown:
        raise ConfigError([f"pipelines: unknown {unknown}; choose among cpu, device"])
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    bench_loading(options.n, pipelines=options.pipelines, augment=options.augment, batch_size=options.batch_size)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench loader`` / ``python -m reid.tools.bench.loader``."""
    return run_tool(bench, LoaderOptions, "bench loader", argv)


if __name__ == "__main__":
    raise SystemExit(main())
