"""The crop data set: images with precomputed boxes served as one whole-body crop and four part crops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from reid.data.crops import crop_regions
from reid.data.device_batch import PASTE_KEY, DeviceCrops, Pipeline, collate_originals, sample_draws
from reid.data.image_cache import DecodedImages
from reid.data.io import read_image
from reid.data.records import Record
from reid.data.transforms import SampleTransform
from reid.data.truth import crop_visible, read_truth, region_visibility

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
        part_confidence: np.ndarray | None = None,
        truth: Sequence[str | None] | None = None,
        pipeline: Pipeline = "cpu",
        images: DecodedImages | None = None,
        image_rows: Sequence[int] | None = None,
    ) -> None:
        if len(records) != len(boxes):
            raise ValueError(f"{len(records)} records but {len(boxes)} boxes")
        # evaluation's measuring fields (reid.metrics.attention_health): the keypoints' mean confidence
        # per part (N, 4), and the synthetic truth's files (reid.data.truth); training never reads them
        self.part_confidence = None if part_confidence is None else np.asarray(part_confidence, dtype=np.float32)
        self.truth = None if truth is None or not any(truth) else list(truth)
        self.records = list(records)
        self.boxes = np.asarray(boxes, dtype=np.float32)
        self.transform = transform
        # (height, width) as given; the cast only tells mypy the length
        self.whole_size = cast("tuple[int, int]", tuple(whole_size))
        self.part_size = cast("tuple[int, int]", tuple(part_size))
        self.is_query = list(is_query) if is_query is not None else [False] * len(self.records)
        self.indices = list(indices) if indices is not None else list(range(len(self.records)))
        # data.pipeline=device: samples are the originals (from the decoded-image cache when given),
        # boxes and draws; device_crops cuts the crops where the network runs
        self.pipeline = pipeline
        self.images = images
        self.image_rows = list(image_rows) if image_rows is not None else list(range(len(self.records)))
        self.device_crops = DeviceCrops.from_transform(transform, self.whole_size, self.part_size)
        self.collate = collate_originals if pipeline == "device" else None

    def __len__(self) -> int:
        return len(self.records)

    #: the training sampler may yield (index, sample seed) pairs: see ResumableSampler.with_sample_seeds
    accepts_sample_seeds = True

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            i, sample_seed = key
            self.transform.reseed(sample_seed)
        else:
            i = key
        record = self.records[i]
        image = self.images[self.image_rows[i]] if self.images is not None else read_image(record.image_path)
        sample: dict[str, Any] = {
            "pid": record.pid,
            "camid": record.camid,
            "index": self.indices[i],
            "is_query": self.is_query[i],
        }
        if self.pipeline == "device":
            sample["image"] = torch.from_numpy(np.array(image))  # (H, W, 3) uint8: permuted on the device
            sample["image_size"] = torch.tensor(image.shape[:2], dtype=torch.int64)
            sample["crop_boxes"] = torch.from_numpy(self.boxes[i])
            sample["draws"] = sample_draws(self.transform, self.boxes[i], self.whole_size, self.part_size)
        else:
            whole, parts = crop_regions(image, self.boxes[i], whole_size=self.whole_size, part_size=self.part_size)
            sample["whole"], sample["parts"], unerased, erased = self.transform.with_erasing(
                whole, parts, self.boxes[i]
            )
            if self.transform.random_erasing > 0:
                # model.visibility_target=erasing's self-supervised labels: what the erasing left of each
                # part, and where it fell (erasing_map)
                sample["part_unerased"], sample["part_erased"] = unerased, erased[1:]
                if self.transform.erasing_fill == "paste":
                    sample[PASTE_KEY] = erased  # filled from another image once collated
        if self.part_confidence is not None or self.truth is not None:
            sample["boxes"] = torch.from_numpy(self.boxes[i])
        if self.part_confidence is not None:
            sample["part_confidence"] = torch.from_numpy(self.part_confidence[i])
        if self.truth is not None:
            sample.update(self._truth_fields(i, image.shape[:2]))
        return sample

    def cropped(self, i: int) -> dict[str, Any]:
        """Sample ``i`` with its ``whole`` and ``parts`` crops whatever the pipeline (device: cut on the CPU here)."""
        sample = self[i]
        if self.collate is None:
            return sample
        batch = self.device_crops(self.collate([sample]))
        return {k: v[0] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _truth_fields(self, i: int, image_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The visible person's coverage in each crop (uint8, 255 = all person) and each region's visible share."""
        path = self.truth[i] if self.truth is not None else None
        if path is None:  # an image without truth in a set with truth: unknown, not "no person"
            return {
                "truth_whole": torch.zeros(self.whole_size, dtype=torch.uint8),
                "truth_parts": torch.zeros((4, *self.part_size), dtype=torch.uint8),
                "truth_visible": torch.full((5,), float("nan")),
            }
        labels = read_truth(path, image_shape)
        whole, parts = crop_visible(labels, self.boxes[i], self.whole_size, self.part_size)
        return {
            "truth_whole": torch.from_numpy(np.round(whole * 255).astype(np.uint8)),
            "truth_parts": torch.from_numpy(np.round(parts * 255).astype(np.uint8)),
            "truth_visible": torch.from_numpy(region_visibility(labels, self.boxes[i])),
        }
