"""The LightningDataModule: records -> cached regions -> five crops per image -> train / query+gallery loaders."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from reid.data.crops import crop_regions
from reid.data.datasets import load
from reid.data.io import CorruptImageError, image_size, read_image
from reid.data.records import Record, ReIDDataset
from reid.data.transforms import SampleTransform
from reid.pose import KeypointFormatError, build_keypoint_source, regions_for_images, strip_regions

log = logging.getLogger(__name__)

# Loader workers are processes already; OpenCV's own thread pool in each would oversubscribe the cores.
cv2.setNumThreads(1)


class CropDataset(Dataset):
    """Images with precomputed boxes; returns the whole-body crop and four part crops as tensors."""

    def __init__(
        self,
        records: Sequence[Record],
        boxes: np.ndarray,
        transform: SampleTransform,
        whole_size: tuple[int, int],
        part_size: tuple[int, int],
        is_query: Sequence[bool] | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        if len(records) != len(boxes):
            raise ValueError(f"{len(records)} records but {len(boxes)} boxes")
        self.records = list(records)
        self.boxes = np.asarray(boxes, dtype=np.float32)
        self.transform = transform
        self.whole_size = tuple(whole_size)
        self.part_size = tuple(part_size)
        self.is_query = list(is_query) if is_query is not None else [False] * len(self.records)
        self.indices = list(indices) if indices is not None else list(range(len(self.records)))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        image = read_image(record.image_path)
        whole, parts = crop_regions(image, self.boxes[i], whole_size=self.whole_size, part_size=self.part_size)
        whole_t, parts_t = self.transform(whole, parts, self.boxes[i])
        return {
            "whole": whole_t,
            "parts": parts_t,
            "pid": record.pid,
            "camid": record.camid,
            "index": self.indices[i],
            "is_query": self.is_query[i],
        }


class CropLoadersMixin:
    """Train / validation / test loaders over ``train_set`` and ``eval_set``, shared by the data modules."""

    train_set: Dataset | None
    eval_set: Dataset | None
    batch_size: int
    eval_batch_size: int
    num_workers: int
    pin_memory: bool

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        assert self.eval_set is not None, "call setup() first"
        return self._loader(self.eval_set, self.eval_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class ReIDDataModule(CropLoadersMixin, pl.LightningDataModule):
    """Loads a data set by name, computes the five regions of every image once, serves crops.

    Args:
        name: data set name for :func:`reid.data.datasets.load`.
        root: the data folder (``paths.data_dir``).
        options: keyword options of the loader (CUHK03 protocol, synthetic size...).
        whole_size, part_size: crop sizes (height, width).
        regions: ``pose`` (Eq. 1-2 from keypoints, canonical-pose fallback) or ``strips``.
        beta: region overlap as a fraction of the body height.
        pose: ``source`` (openpose_json | pose_transfer_csv | strips), ``path``, ``min_conf``, ``min_joints``.
        strips: options of :func:`reid.pose.strip_regions` for the baseline and for the fallback.
        augment: options of :class:`reid.data.transforms.SampleTransform` for training.
        batch_size, eval_batch_size, num_workers, pin_memory: loader settings.
        on_bad_sample: ``error`` stops at setup naming the file; ``skip`` drops it with a count.
        schedule: the recipe this data set trains with (read by the trainer/optimiser configs).
    """

    def __init__(
        self,
        name: str,
        root: str | Path,
        options: Mapping[str, Any] | None = None,
        whole_size: Sequence[int] = (384, 192),
        part_size: Sequence[int] = (96, 192),
        regions: str = "pose",
        beta: float = 0.1,
        pose: Mapping[str, Any] | None = None,
        strips: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 2,
        pin_memory: bool = False,
        on_bad_sample: str = "error",
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if regions not in ("pose", "strips"):
            raise ValueError(f"data.regions must be 'pose' or 'strips', got {regions!r}")
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"data.on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.name = name
        self.root = Path(root)
        self.options = dict(options or {})
        self.whole_size = tuple(int(v) for v in whole_size)
        self.part_size = tuple(int(v) for v in part_size)
        self.regions = regions
        self.beta = float(beta)
        self.pose = {"source": "openpose_json", "path": None, "min_conf": 0.1, "min_joints": 6, **(pose or {})}
        self.strips = dict(strips or {})
        self.augment = dict(augment or {})
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.on_bad_sample = on_bad_sample
        self.schedule = dict(schedule or {})
        self.dataset: ReIDDataset | None = None
        self.train_set: CropDataset | None = None
        self.eval_set: CropDataset | None = None
        self.region_counts: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------ set-up
    def _load(self) -> ReIDDataset:
        return load(self.name, self.root, **self.options)

    def prepare_data(self) -> None:
        """Generates or extracts the data set once (rank 0 only under DDP)."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        """Reads the records and computes every image's boxes once (not per epoch)."""
        if self.dataset is not None:
            return
        dataset = self._load()
        source = self._keypoint_source(dataset)
        train_recs, train_boxes = self._regions("train", dataset.train, source)
        query_recs, query_boxes = self._regions("query", dataset.query, source)
        gallery_recs, gallery_boxes = self._regions("gallery", dataset.gallery, source)
        if self.on_bad_sample == "skip":
            dataset.train = _relabel(train_recs)
            train_recs = dataset.train
        self.dataset = dataset
        self.train_set = CropDataset(
            train_recs, train_boxes, SampleTransform(train=True, **self.augment), self.whole_size, self.part_size
        )
        eval_transform = SampleTransform(train=False, **self.augment)
        self.eval_set = CropDataset(
            query_recs + gallery_recs,
            np.concatenate([query_boxes, gallery_boxes]) if len(query_boxes) + len(gallery_boxes) else np.zeros((0, 5, 4)),
            eval_transform,
            self.whole_size,
            self.part_size,
            is_query=[True] * len(query_recs) + [False] * len(gallery_recs),
            indices=list(range(len(query_recs))) + list(range(len(gallery_recs))),
        )

    def _keypoint_source(self, dataset: ReIDDataset) -> Any:
        if self.regions == "strips" or self.pose["source"] == "strips":
            return None
        path = self.pose.get("path") or dataset.keypoint_dir
        if path is None:
            raise FileNotFoundError(
                f"data set '{dataset.name}' has no keypoints (looked for {dataset.root / 'keypoints'}): "
                "extract them with `python -m reid.pose.extract data=...`, point data.pose.path at them, "
                "or train on fixed strips with data.pose.source=strips"
            )
        return build_keypoint_source(self.pose["source"], path)

    def _regions(self, split: str, records: Sequence[Record], source: Any) -> tuple[list[Record], np.ndarray]:
        """Boxes of every record (computed once); bad samples raise or are skipped with a count."""
        kept: list[Record] = []
        items: list[tuple[str, np.ndarray | None, tuple[int, int]]] = []
        skipped = 0
        for record in records:
            try:
                size = image_size(record.image_path)
                keypoints = source.get(record.image_path, image_size=size) if source is not None else None
            except (CorruptImageError, KeypointFormatError):
                if self.on_bad_sample == "error":
                    raise
                skipped += 1
                continue
            kept.append(record)
            items.append((record.image_path, keypoints, size))
        if skipped:
            log.warning("%s/%s: skipped %d bad samples (data.on_bad_sample=skip)", self.name, split, skipped)
        if source is None:
            boxes = [strip_regions(w, h, self.beta, **self.strips) for _, _, (w, h) in items]
            log.info("regions for %d %s/%s: fixed strips (data.regions=%s)", len(items), self.name, split, self.regions)
            self.region_counts[split] = {"pose": 0, "filled": 0, "strips": len(items), "skipped": skipped}
            return kept, np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 5, 4), dtype=np.float32)
        batch = regions_for_images(
            items,
            beta=self.beta,
            min_conf=float(self.pose["min_conf"]),
            min_joints=int(self.pose["min_joints"]),
            strip_options=self.strips,
            log_name=f"{self.name}/{split}",
        )
        self.region_counts[split] = {**batch.counts, "filled_joints": batch.n_filled, "skipped": skipped}
        return kept, batch.boxes.astype(np.float32)

    @property
    def num_classes(self) -> int:
        """Number of training identities (call after setup)."""
        if self.dataset is None:
            self.setup("fit")
        assert self.dataset is not None
        return self.dataset.num_train_pids

def _relabel(records: Sequence[Record]) -> list[Record]:
    """Relabels training pids to 0..q-1 again after samples were skipped."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.image_path, mapping[r.pid], r.camid) for r in records]
