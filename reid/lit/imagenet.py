"""ImageNet pre-training (paper §4.1.3): ImageNet served as five-crop batches, and the network trained as a classifier.

The paper pre-trains the network on ILSVRC2012 for 9 epochs before fine-tuning on ReID and says
nothing about how an ImageNet image becomes the five inputs. Choices here (keyword options):

* the whole-body input is the whole image resized to ``whole_size`` (``framing="stretch"``), or
  the largest centred box of the input's aspect ratio (``framing="center_crop"``);
* the four part inputs are the baseline's fixed horizontal strips of that box
  (:func:`reid.pose.strip_regions`); ImageNet has no keypoints;
* training is :class:`reid.lit.module.ReIDModule`'s unchanged (per-branch cross-entropy plus the
  fused one, Eq. 11) with the 1000 classes as identities; validation scores the training-time
  logits (the fused ones, or the sum of the five branches' for concatenating models).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchmetrics.classification import MulticlassAccuracy

from reid.data.crops import crop_regions
from reid.data.imagenet import class_index, load_imagenet_folder
from reid.data.io import CorruptImageError, read_image
from reid.data.transforms import SampleTransform
from reid.lit.datamodule import CropLoadersMixin
from reid.lit.module import ReIDModule
from reid.pose import strip_regions

log = logging.getLogger(__name__)

cv2.setNumThreads(1)

FRAMINGS = ("stretch", "center_crop")
PROTOCOL = "classification"


@dataclass
class ClassificationDataset:
    """The two splits of a class-folder data set; ``protocol`` tells the runner it is no ReID set.

    Attributes:
        name: data set name (``imagenet``).
        root: the folder holding ``train/`` and ``val/``.
        train, val: ``(image_path, class_index)`` lists.
        classes: wnid -> class index.
    """

    name: str
    root: Path
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    classes: dict[str, int] = field(default_factory=dict)
    protocol: str = PROTOCOL

    @property
    def num_classes(self) -> int:
        """Number of classes, empty class folders included (indices stay those of the full mapping)."""
        return len(self.classes)


def framing_box(width: int, height: int, aspect: float, framing: str) -> tuple[float, float, float, float]:
    """The box of a ``width`` x ``height`` image that becomes the whole-body input.

    Args:
        width, height: image size in pixels.
        aspect: the input's height / width (2 for 384x192).
        framing: ``stretch`` (the whole image) or ``center_crop`` (the largest centred box of that aspect).

    Returns:
        ``(x1, y1, x2, y2)``.
    """
    if framing == "stretch":
        return 0.0, 0.0, float(width), float(height)
    if framing != "center_crop":
        raise ValueError(f"unknown framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    box_w = min(float(width), height / aspect)
    box_h = box_w * aspect
    x1, y1 = (width - box_w) / 2.0, (height - box_h) / 2.0
    return x1, y1, x1 + box_w, y1 + box_h


def strip_boxes(
    width: int, height: int, aspect: float, *, framing: str, beta: float, strips: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The five (5, 4) boxes of an image: the framed box and its four fixed strips."""
    x1, y1, x2, y2 = framing_box(width, height, aspect, framing)
    boxes = strip_regions(x2 - x1, y2 - y1, beta, **(strips or {}))
    boxes[:, [0, 2]] += x1
    boxes[:, [1, 3]] += y1
    return boxes.astype(np.float32)


class ClassifiedImageDataset(Dataset):
    """``(path, class)`` samples -> the ReID batch dict (whole, parts, pid = class, camid 0, index, is_query False).

    Boxes come from the decoded image's size (reading 1.28M headers at set-up would take longer
    than they save). With ``on_bad_sample="skip"`` an unreadable image is replaced by the next
    one and a warning names it; each worker logs its own.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: SampleTransform,
        whole_size: tuple[int, int],
        part_size: tuple[int, int],
        *,
        framing: str = "stretch",
        beta: float = 0.1,
        strips: Mapping[str, Any] | None = None,
        on_bad_sample: str = "error",
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"data.framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
        self.samples = list(samples)
        self.transform = transform
        self.whole_size = cast("tuple[int, int]", tuple(whole_size))  # a config list becomes a tuple
        self.part_size = cast("tuple[int, int]", tuple(part_size))
        self.aspect = self.whole_size[0] / self.whole_size[1]
        self.framing = framing
        self.beta = float(beta)
        self.strips = dict(strips or {})
        self.on_bad_sample = on_bad_sample
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, i: int) -> tuple[np.ndarray, int]:
        for attempt in range(len(self.samples)):
            index = (i + attempt) % len(self.samples)
            path = self.samples[index][0]
            try:
                return read_image(path), index
            except CorruptImageError:
                if self.on_bad_sample == "error":
                    raise
                self.skipped += 1
                log.warning("skipped unreadable image %s (%d skipped so far in this worker)", path, self.skipped)
        raise CorruptImageError(f"none of the {len(self.samples)} images could be read (first: {self.samples[0][0]})")

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, index = self._read(i)
        height, width = image.shape[:2]
        boxes = strip_boxes(width, height, self.aspect, framing=self.framing, beta=self.beta, strips=self.strips)
        whole, parts = crop_regions(image, boxes, whole_size=self.whole_size, part_size=self.part_size)
        whole_t, parts_t = self.transform(whole, parts, boxes)
        return {
            "whole": whole_t,
            "parts": parts_t,
            "pid": self.samples[index][1],
            "camid": 0,
            "index": index,
            "is_query": False,
        }


class ImageNetDataModule(CropLoadersMixin, pl.LightningDataModule):
    """ImageNet in ``train/<wnid>/*``, ``val/<wnid>/*`` folders, served as ReID-style batches of strips.

    Takes the keys of ``conf/data/default.yaml``; those that only concern ReID data (``options``,
    ``pose``) are accepted and unused.

    Args:
        name: data set name (logs only).
        root: the folder holding ``train/`` and ``val/`` (``paths.data_dir``).
        whole_size, part_size: input sizes (height, width).
        regions: ``strips`` (ImageNet has no keypoints; ``pose`` is accepted and also gets strips).
        beta: strip overlap as a fraction of the box height.
        strips: options of :func:`reid.pose.strip_regions` (``layout``).
        framing: ``stretch`` (default: the whole image, resized) or ``center_crop`` (see the module doc).
        augment: options of :class:`reid.data.transforms.SampleTransform` for training.
        batch_size, eval_batch_size, num_workers, pin_memory: loader settings.
        on_bad_sample: ``error`` stops at the first unreadable image naming it; ``skip`` replaces it
            by the next image and logs a warning naming it.
        verify_images: accepted for config compatibility with the ReID data sets and unused:
            ImageNet's million images are checked lazily, when read (see ``on_bad_sample``).
        sampler: training sampler, ``random`` (a seeded shuffle) or ``identity`` (P identities x
            ``num_instances`` images per batch); both resume mid-epoch (:mod:`reid.data.samplers`).
        num_instances: K of the identity sampler; ``batch_size`` must be a multiple of it.
        sampler_seed: seed of the training order (per epoch); None draws one, kept in checkpoints.
        test_sets: must be empty (the shared data keys include it; cross-domain sets are ReID sets).
        pipeline: must be ``cpu`` (the device path cuts pose/strip boxes of ReID sets, not ImageNet's framing).
        image_cache_dir: unused (the device path's cache; a shared data key).
    """

    def __init__(
        self,
        name: str,
        root: str | Path,
        options: Mapping[str, Any] | None = None,
        whole_size: Sequence[int] = (384, 192),
        part_size: Sequence[int] = (96, 192),
        regions: str = "strips",
        beta: float = 0.1,
        pose: Mapping[str, Any] | None = None,
        strips: Mapping[str, Any] | None = None,
        framing: str = "stretch",
        augment: Mapping[str, Any] | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 2,
        pin_memory: bool = False,
        on_bad_sample: str = "error",
        verify_images: str = "decode",
        sampler: str = "random",
        num_instances: int = 4,
        sampler_seed: int | None = None,
        test_sets: Sequence[str] = (),
        pipeline: str = "cpu",
        image_cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if pipeline != "cpu":
            from reid.errors import ConfigError

            raise ConfigError(
                [
                    "data.pipeline=device serves ReID data sets; ImageNet pre-training cuts its crops "
                    "on the CPU: use data.pipeline=cpu"
                ]
            )
        if regions not in ("pose", "strips"):
            raise ValueError(f"data.regions must be 'pose' or 'strips', got {regions!r}")
        if test_sets:
            from reid.errors import ConfigError

            raise ConfigError(["data.test_sets scores ReID data sets; ImageNet pre-training has none: leave it empty"])
        if framing not in FRAMINGS:
            raise ValueError(f"data.framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"data.on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        if options:
            log.warning("data.options %s are not used by the ImageNet data module", dict(options))
        if regions == "pose":
            log.info("ImageNet images carry no keypoints: the four part inputs are fixed strips")
        self.name: str = name  # LightningDataModule declares name as str | None
        self.root = Path(root)
        # (height, width): the sizes are pairs
        self.whole_size = cast("tuple[int, int]", tuple(int(v) for v in whole_size))
        self.part_size = cast("tuple[int, int]", tuple(int(v) for v in part_size))
        self.regions = regions
        self.beta = float(beta)
        self.strips = dict(strips or {})
        self.framing = framing
        self.augment = dict(augment or {})
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.on_bad_sample = on_bad_sample
        self._set_sampler_options(sampler, num_instances, sampler_seed)
        self.dataset: ClassificationDataset | None = None
        self.train_set: ClassifiedImageDataset | None = None
        self.eval_set: ClassifiedImageDataset | None = None

    def prepare_data(self) -> None:
        """Checks the folder layout early (nothing to download or generate)."""
        class_index(self.root)

    def setup(self, stage: str | None = None) -> None:
        """Lists both splits once."""
        if self.dataset is not None:
            return
        classes = class_index(self.root)
        self.dataset = ClassificationDataset(
            self.name,
            self.root,
            load_imagenet_folder(self.root, "train", classes),
            load_imagenet_folder(self.root, "val", classes),
            classes,
        )
        options: dict[str, Any] = {
            "framing": self.framing,
            "beta": self.beta,
            "strips": self.strips,
            "on_bad_sample": self.on_bad_sample,
        }
        self.train_set = ClassifiedImageDataset(
            self.dataset.train,
            SampleTransform(train=True, **self.augment),
            self.whole_size,
            self.part_size,
            **options,
        )
        self.eval_set = ClassifiedImageDataset(
            self.dataset.val,
            SampleTransform(train=False, **self.augment),
            self.whole_size,
            self.part_size,
            **options,
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (call after setup)."""
        if self.dataset is None:
            self.setup("fit")
        assert self.dataset is not None
        return self.dataset.num_classes


class ClassificationModule(ReIDModule):
    """:class:`ReIDModule` trained as a classifier (same losses and optimiser), validated by top-k accuracy.

    Logs ``val/top1``, ``val/top5`` (fractions) and ``val/loss``. With fewer classes than k, top-k
    is computed with k = the number of classes (it is then 1.0, as top-k accuracy is by definition).

    Args:
        *args, **kwargs: those of :class:`ReIDModule`.
        eval_options: accepted for the runner's sake and unused (no query/gallery ranking here).
        top_k: the k of the logged top-k accuracies.
    """

    def __init__(
        self, *args: Any, eval_options: dict | None = None, top_k: Sequence[int] = (1, 5), **kwargs: Any
    ) -> None:
        # a new dict, not kwargs itself: save_hyperparameters reads this frame's kwargs
        super().__init__(*args, **{**kwargs, "eval_options": None})
        num_classes = int(self.hparams["num_classes"])
        self.top_k = tuple(int(k) for k in top_k)
        self.val_accuracy = nn.ModuleDict(
            {
                f"top{k}": MulticlassAccuracy(num_classes=num_classes, top_k=min(k, num_classes), average="micro")
                for k in self.top_k
            }
        )

    def accuracies(self) -> dict[str, MulticlassAccuracy]:
        """``val_accuracy``'s metrics by name (a ModuleDict types its values as plain modules)."""
        return cast("dict[str, MulticlassAccuracy]", dict(self.val_accuracy.items()))

    def classification_logits(self, output: Any) -> Tensor:
        """The logits that are scored: the fused classifier's, else the sum of the five branches'."""
        return output.fused_logits if output.fused_logits is not None else torch.stack(output.branch_logits).sum(0)

    def on_validation_epoch_start(self) -> None:
        for metric in self.accuracies().values():
            metric.reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        output = self(batch["whole"], batch["parts"])
        logits = self.classification_logits(output)
        labels = batch["pid"]
        for metric in self.accuracies().values():
            metric.update(logits, labels)
        loss = self.compute_losses(output, labels)["loss"]
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=labels.shape[0])

    def on_validation_epoch_end(self) -> None:
        self.last_val_results = {}
        for name, metric in self.accuracies().items():
            value = metric.compute()
            self.last_val_results[name] = float(value)
            self.log(f"val/{name}", value, prog_bar=name == "top1")
            metric.reset()

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()
