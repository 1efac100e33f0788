"""The records every data set produces: (image_path, pid, camid) triples grouped into splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypedDict

if TYPE_CHECKING:  # annotations only: records stay importable without torch
    from torch import Tensor


class _MeasuringFields(TypedDict, total=False):
    """What a batch carries when its data set has keypoints or truth (see :class:`CropBatch`)."""

    boxes: Tensor
    part_confidence: Tensor
    truth_whole: Tensor
    truth_parts: Tensor
    truth_visible: Tensor
    part_unerased: Tensor
    part_erased: Tensor


class CropBatch(_MeasuringFields):
    """A batch of the crop loaders (``reid.data.crop_dataset.CropDataset`` samples, collated).

    ``whole`` (B, 3, H, W) and ``parts`` (B, 4, 3, h, w) are the five crops; ``pid``, ``camid``
    the labels; ``index`` each image's position in its split; ``is_query`` (evaluation).
    Optional: ``boxes`` (B, 5, 4) and ``part_confidence`` (B, 4, the mean keypoint confidence
    of each part's joints) where keypoints exist; ``truth_whole`` (B, H, W), ``truth_parts``
    (B, 4, h, w) (the visible person's coverage of each crop, uint8) and ``truth_visible``
    (B, 5) (each region's visible share) in evaluation batches of a data set with truth
    (:mod:`reid.data.truth`). In training batches with random erasing: ``part_unerased`` (B, 4), the
    share of each part crop the erasing left, and ``part_erased`` (B, 4, 4), the erased rectangle of
    each part crop (top, left, bottom, right in its pixels; empty when nothing was erased).
    """

    whole: Tensor
    parts: Tensor
    pid: Tensor
    camid: Tensor
    index: Tensor
    is_query: Tensor


class Record(NamedTuple):
    """One image: its path, its identity (relabelled 0..q-1 in `train`) and its 0-based camera."""

    image_path: str
    pid: int
    camid: int


@dataclass
class ReIDDataset:
    """A data set split into `train`, `query` and `gallery` record lists.

    Attributes:
        name: registry name (``market1501``, ``dukemtmcreid``, ``cuhk03``, ``synthetic``...).
        root: the folder the images were read from.
        train, query, gallery: lists of :class:`Record`.
        protocol: evaluation protocol, ``"market"`` (CMC + mAP with same-camera exclusion)
            or ``"cuhk03"`` (classic single-shot CMC).
        keypoint_dir: where per-image OpenPose JSON files live, when the data set ships them.
    """

    name: str
    root: Path
    train: list[Record]
    query: list[Record]
    gallery: list[Record]
    protocol: str = "market"
    keypoint_dir: Path | None = None
    extras: dict = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        """Number of training identities (labels are 0..num_train_pids-1)."""
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        """Number of cameras seen in training."""
        return len({r.camid for r in self.train})

    def summary(self) -> str:
        """A one-paragraph table of ids / images per split, as torchreid prints it."""
        lines = [f"=> {self.name} loaded from {self.root}", "  subset   | # ids | # images | # cameras"]
        for split in ("train", "query", "gallery"):
            recs = getattr(self, split)
            lines.append(
                f"  {split:<8} | {len({r.pid for r in recs}):5d} | {len(recs):8d} | {len({r.camid for r in recs}):9d}"
            )
        return "\n".join(lines)
