"""The crop data set: images with precomputed boxes served as one whole-body crop and four part crops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from reid.data.crops import crop_regions
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
        image = read_image(record.image_path)
        whole, parts = crop_regions(image, self.boxes[i], whole_size=self.whole_size, part_size=self.part_size)
        whole_t, parts_t, unerased = self.transform.with_visibility(whole, parts, self.boxes[i])
        sample = {
            "whole": whole_t,
            "parts": parts_t,
            "pid": record.pid,
            "camid": record.camid,
            "index": self.indices[i],
            "is_query": self.is_query[i],
        }
        if self.transform.random_erasing > 0:
            # model.visibility_target=erasing's self-supervised label: what the erasing left of each part
            sample["part_unerased"] = unerased
        if self.part_confidence is not None or self.truth is not None:
            sample["boxes"] = torch.from_numpy(self.boxes[i])
        if self.part_confidence is not None:
            sample["part_confidence"] = torch.from_numpy(self.part_confidence[i])
        if self.truth is not None:
            sample.update(self._truth_fields(i, image.shape[:2]))
        return sample

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
