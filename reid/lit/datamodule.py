"""The LightningDataModule: records -> cached regions -> five crops per image -> train / query+gallery loaders."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from reid.data.crops import crop_regions
from reid.data.datasets import load
from reid.data.io import VERIFY_MODES, CorruptImageError, image_size, read_image, verify_image
from reid.data.records import Record, ReIDDataset
from reid.data.truth import crop_visible, read_truth, region_visibility, truth_path
from reid.data.samplers import SAMPLERS, RandomIdentitySampler, ResumableDataLoader, ShuffleSampler
from reid.data.transforms import SampleTransform
from reid.pose import KeypointFormatError, build_keypoint_source, regions_for_images, strip_regions
from reid.pose.regions import DEFAULT_MAX_OUTSIDE, region_confidence
from reid.schema import ConfigError

log = logging.getLogger(__name__)

# Loader workers are processes already; OpenCV's own thread pool in each would oversubscribe the cores.
cv2.setNumThreads(1)

# Threads that check images at set-up: Pillow releases the GIL while decoding, so they overlap.
SETUP_THREADS = min(8, os.cpu_count() or 1)
# Fewer images than this are checked in the calling thread (a pool would cost more than it saves).
SETUP_THREAD_MIN_IMAGES = 64
POSE_KEYS = ("source", "path", "min_conf", "min_joints", "max_outside")
KEYPOINT_FIX = "or set data.on_bad_sample=skip to drop such images at set-up"


def worker_start_method(num_workers: int) -> str | None:
    """``fork`` where the platform has it but the process defaults to another start method, else None.

    A job of Hydra's joblib launcher runs in a loky worker, whose processes start by spawning:
    loader workers started that way must pickle the data set and the resumable loader's state,
    and fail ("Got pickle error when attempting to start a worker Process"). Forking, as a plain
    Linux process does by default, needs no pickling.
    """
    if num_workers == 0 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return "fork" if multiprocessing.get_start_method(allow_none=True) not in (None, "fork") else None


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
        self.whole_size = tuple(whole_size)
        self.part_size = tuple(part_size)
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
            multiprocessing_context=worker_start_method(self.num_workers),
            # workers' base seed from a generator of their own (evaluation draws nothing at random):
            # the first validation of a resumed run must not advance the global RNG that dropout
            # draws from, as the uninterrupted run's persistent workers did not
            generator=torch.Generator().manual_seed(0),
        )

    # training sampler options (data.sampler, data.num_instances, data.sampler_seed); see _set_sampler_options
    sampler_name: str = "random"
    num_instances: int = 4
    sampler_seed: int | None = None

    def _set_sampler_options(self, sampler: str, num_instances: int, sampler_seed: int | None) -> None:
        """Checks and keeps the training sampler options (call after ``batch_size`` is set)."""
        if sampler not in SAMPLERS:
            raise ConfigError([f"data.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}"])
        if sampler == "identity" and (int(num_instances) < 1 or self.batch_size % int(num_instances)):
            raise ConfigError(
                [
                    f"data.batch_size={self.batch_size} must be a multiple of data.num_instances={num_instances} "
                    "with data.sampler=identity (a batch is P identities x K images)"
                ]
            )
        self.sampler_name = sampler
        self.num_instances = int(num_instances)
        self.sampler_seed = None if sampler_seed is None else int(sampler_seed)

    def _train_position(self) -> tuple[int, int]:
        """``(epoch, batches done in it)`` where the fit loop goes on training: what a checkpoint saves.

        Read from the trainer's progress, not counted by the loader (Lightning's fetcher and the
        loader workers fetch batches ahead of training). Checkpoints are written mid-epoch (step
        checkpoints, after the batch is processed), after the epoch's last batch (step or
        validation checkpoints: the next epoch starts afresh) and at the epoch's end (the epoch
        counted as processed).
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 0
        epochs = trainer.fit_loop.epoch_progress.current
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if epochs.started > epochs.processed:  # inside an epoch
            if done >= trainer.num_training_batches:
                return int(epochs.processed) + 1, 0
            return int(epochs.processed), done
        return int(epochs.processed), 0

    # the training loader's position from a checkpoint (load_state_dict), applied when the loader is built
    _pending_train_state: dict[str, Any] | None = None
    _train_loader: ResumableDataLoader | None = None

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position (Lightning stores it in every checkpoint)."""
        if self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keeps the saved position for the training loader built next (Lightning restores before building it)."""
        self._pending_train_state = state_dict.get("train_loader") or None
        if self._train_loader is not None and self._pending_train_state:
            self._train_loader.load_state_dict(self._pending_train_state)

    def _train_labels(self) -> list[int]:
        """The identity (class) of every training sample, in data set order."""
        assert self.train_set is not None, "call setup() first"
        records = getattr(self.train_set, "records", None)
        return [r.pid for r in records] if records is not None else [s[1] for s in self.train_set.samples]

    def train_batches_per_epoch(self, num_replicas: int = 1) -> int:
        """The complete training batches each of ``num_replicas`` processes gets per epoch (at least 1).

        The training loader drops an incomplete last batch (resuming counts whole batches), so a
        ``batch_size`` above the training images a process gets leaves it nothing to train on;
        Lightning would then skip training and the run would score an untrained model.

        Raises:
            ConfigError: no complete batch per epoch, naming ``data.batch_size`` (with the number
                of training images) or the identity sampler's P x K, and the fix.
        """
        assert self.train_set is not None, "call setup() first"
        images = len(self.train_set)
        name = getattr(self, "name", "?")
        if images == 0:
            raise ConfigError(
                [f"data set '{name}' has no training images, so there is nothing to train on: check its train split"]
            )
        if self.sampler_name == "identity":
            try:
                sampler = RandomIdentitySampler(
                    self._train_labels(), self.batch_size, self.num_instances, seed=0, num_replicas=num_replicas, rank=0
                )
            except ValueError as err:  # the sampler's own message names the keys and the fix
                raise ConfigError([f"{err} (data set '{name}', {images} training images)"]) from None
            return sampler.batches_per_rank
        per_process = math.ceil(images / num_replicas)
        batches = per_process // self.batch_size
        if batches == 0:
            processes = f" ({per_process} per process with {num_replicas} processes)" if num_replicas > 1 else ""
            raise ConfigError(
                [
                    f"data.batch_size={self.batch_size} is more than the {images} training images of data set "
                    f"'{name}'{processes}: an epoch has no complete batch (the incomplete last one is dropped), "
                    f"so nothing would be trained; lower data.batch_size to at most {per_process}"
                ]
            )
        return batches

    def train_dataloader(self) -> DataLoader:
        """Complete batches in a seeded order per epoch, resumable in the middle of an epoch.

        ``data.sampler=random`` shuffles (:class:`reid.data.samplers.ShuffleSampler`),
        ``identity`` makes P x K batches (:class:`reid.data.samplers.RandomIdentitySampler`).
        """
        assert self.train_set is not None, "call setup() first"
        if self.sampler_name == "identity":
            sampler = RandomIdentitySampler(
                self._train_labels(), self.batch_size, self.num_instances, seed=self.sampler_seed
            )
        else:
            sampler = ShuffleSampler(len(self.train_set), seed=self.sampler_seed)
        if getattr(self.train_set, "accepts_sample_seeds", False):
            sampler.with_sample_seeds()  # augmentation seeded per sample: reproducible, resumable exactly
        loader = ResumableDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            position=self._train_position,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            multiprocessing_context=worker_start_method(self.num_workers),
            # the workers' base seed comes from this generator, not the global torch RNG: creating
            # the loader again on a resume must not shift the random stream of dropout
            generator=torch.Generator().manual_seed(sampler.seed),
        )
        if self._pending_train_state:
            loader.load_state_dict(self._pending_train_state)
            self._pending_train_state = None
        self._train_loader = loader
        return loader

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
        pose: ``source`` (openpose_json | pose_transfer_csv | strips), ``path``, ``min_conf``,
            ``min_joints``, ``max_outside`` (a detected joint farther outside the image than this
            fraction of its size is treated as undetected and filled from a canonical pose; null
            keeps every joint; see :data:`reid.pose.regions.DEFAULT_MAX_OUTSIDE`).
        strips: options of :func:`reid.pose.strip_regions` for the baseline and for the fallback.
        augment: options of :class:`reid.data.transforms.SampleTransform` for training.
        batch_size, eval_batch_size, num_workers, pin_memory: loader settings.
        on_bad_sample: what to do with an unreadable image or keypoint file, decided at set-up and
            never mid-epoch: ``error`` stops naming the file and the fix; ``skip`` drops the sample
            from the index with a logged count (training pids are relabelled 0..q-1 again).
        verify_images: ``decode`` (default) decodes every image once at set-up, so a truncated or
            garbled pixel stream is handled by ``on_bad_sample`` before training (a few seconds
            per 10,000 small images, on a thread pool); ``header`` reads only the headers: faster,
            but such a file then stops training mid-epoch with a :class:`CorruptImageError`.
        sampler: training sampler, ``random`` (a seeded shuffle) or ``identity`` (P identities x
            ``num_instances`` images per batch); both resume mid-epoch (:mod:`reid.data.samplers`).
        num_instances: K of the identity sampler; ``batch_size`` must be a multiple of it.
        sampler_seed: seed of the training order (per epoch); None draws one, kept in checkpoints.
        test_sets: other ``conf/data`` options whose query/gallery are scored at every validation
            and in ``evaluate.py`` (cross-domain evaluation); built by the runner with this set's
            input settings (:func:`reid.tasks.build_test_sets`).
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
        verify_images: str = "decode",
        sampler: str = "random",
        num_instances: int = 4,
        sampler_seed: int | None = None,
        test_sets: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if regions not in ("pose", "strips"):
            raise ConfigError([f"data.regions must be 'pose' or 'strips', got {regions!r}"])
        if on_bad_sample not in ("error", "skip"):
            raise ConfigError([f"data.on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}"])
        if verify_images not in VERIFY_MODES:
            raise ConfigError([f"data.verify_images must be one of {', '.join(VERIFY_MODES)}, got {verify_images!r}"])
        unknown_pose_keys = sorted(set(pose or {}) - set(POSE_KEYS))
        if unknown_pose_keys:
            raise ConfigError([f"unknown data.pose keys {unknown_pose_keys}; known: {', '.join(POSE_KEYS)}"])
        self.name = name
        self.root = Path(root)
        self.options = dict(options or {})
        self.whole_size = tuple(int(v) for v in whole_size)
        self.part_size = tuple(int(v) for v in part_size)
        self.regions = regions
        self.beta = float(beta)
        self.pose = {
            "source": "openpose_json",
            "path": None,
            "min_conf": 0.1,
            "min_joints": 6,
            "max_outside": DEFAULT_MAX_OUTSIDE,
            **(pose or {}),
        }
        self.strips = dict(strips or {})
        self.augment = dict(augment or {})
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.on_bad_sample = on_bad_sample
        self.verify_images = verify_images
        self._set_sampler_options(sampler, num_instances, sampler_seed)
        # names of other conf/data options scored beside this set (the runner builds them)
        self.test_sets = list(test_sets)
        self.dataset: ReIDDataset | None = None
        self.train_set: CropDataset | None = None
        self.eval_set: CropDataset | None = None
        self.region_counts: dict[str, dict[str, int]] = {}
        # per split, the mean keypoint confidence of each part's joints (reid.pose.regions.region_confidence)
        self.part_confidence: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ set-up
    def _load(self) -> ReIDDataset:
        return load(self.name, self.root, **self.options)

    def prepare_data(self) -> None:
        """Generates or extracts the data set once (rank 0 only under DDP)."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        """Reads the records, checks every image and keypoint file, computes every image's boxes once.

        Bad samples are handled here, by ``on_bad_sample``: a later epoch never meets a file that
        set-up could have found (with ``verify_images=decode``).
        """
        if self.dataset is not None:
            return
        dataset = self._load()
        source = self._keypoint_source(dataset)
        # a set used for evaluation only (data.test_sets): its training images are not read
        train_records = [] if stage in ("validate", "test") else dataset.train
        train_recs, train_boxes = self._regions("train", train_records, source)
        query_recs, query_boxes = self._regions("query", dataset.query, source)
        gallery_recs, gallery_boxes = self._regions("gallery", dataset.gallery, source)
        if self.on_bad_sample == "skip":
            dataset.train = _relabel(train_recs)
            train_recs = dataset.train
        self.dataset = dataset
        self.train_set = CropDataset(
            train_recs,
            train_boxes,
            SampleTransform(train=True, **self.augment),
            self.whole_size,
            self.part_size,
            # model.visibility_loss's pseudo-labels (keypoints, never the synthetic truth)
            part_confidence=None if source is None else self.part_confidence["train"],
        )
        eval_transform = SampleTransform(train=False, **self.augment)
        self.eval_set = CropDataset(
            query_recs + gallery_recs,
            np.concatenate([query_boxes, gallery_boxes])
            if len(query_boxes) + len(gallery_boxes)
            else np.zeros((0, 5, 4)),
            eval_transform,
            self.whole_size,
            self.part_size,
            is_query=[True] * len(query_recs) + [False] * len(gallery_recs),
            indices=list(range(len(query_recs))) + list(range(len(gallery_recs))),
            part_confidence=None
            if source is None
            else np.concatenate([self.part_confidence["query"], self.part_confidence["gallery"]]),
            truth=[_optional_path(truth_path(r.image_path)) for r in query_recs + gallery_recs],
        )
        _check_scorable(dataset, query_recs, gallery_recs)

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
        return build_keypoint_source(self.pose["source"], path, min_conf=float(self.pose["min_conf"]))

    def _image_sizes(self, records: Sequence[Record]) -> list[tuple[int, int] | CorruptImageError]:
        """``(width, height)`` of every image, or the :class:`CorruptImageError` it raised, in order.

        ``verify_images=decode`` decodes each image fully (on a thread pool), ``header`` reads headers only.
        """
        check = verify_image if self.verify_images == "decode" else image_size

        def attempt(path: str) -> tuple[int, int] | CorruptImageError:
            try:
                return check(path)
            except CorruptImageError as err:
                return err

        paths = [record.image_path for record in records]
        # Reading a header costs less than handing it to a thread; decoding overlaps well.
        if check is image_size or SETUP_THREADS <= 1 or len(paths) < SETUP_THREAD_MIN_IMAGES:
            return [attempt(path) for path in paths]
        with ThreadPoolExecutor(max_workers=SETUP_THREADS, thread_name_prefix="verify-images") as pool:
            return list(pool.map(attempt, paths))

    def _regions(self, split: str, records: Sequence[Record], source: Any) -> tuple[list[Record], np.ndarray]:
        """Boxes of every record (computed once); bad samples raise or are dropped with a count.

        A bad sample is an image that cannot be read (checked as ``verify_images`` says) or a
        keypoint file that is malformed or holds NaN.  ``error`` raises the first one in record
        order, naming the file, the fix, and how many more the split has; ``skip`` logs the counts.
        """
        kept: list[Record] = []
        items: list[tuple[str, np.ndarray | None, tuple[int, int]]] = []
        bad_images: list[CorruptImageError] = []
        bad_keypoints: list[KeypointFormatError] = []
        first_bad: CorruptImageError | KeypointFormatError | None = None
        for record, size in zip(records, self._image_sizes(records)):
            if isinstance(size, CorruptImageError):
                bad_images.append(size)
                first_bad = first_bad or size
                continue
            try:
                keypoints = source.get(record.image_path, image_size=size) if source is not None else None
            except KeypointFormatError as err:
                bad_keypoints.append(err)
                first_bad = first_bad or err
                continue
            kept.append(record)
            items.append((record.image_path, keypoints, size))
        self.part_confidence[split] = (
            np.stack([region_confidence(keypoints) for _, keypoints, _ in items])
            if items
            else np.zeros((0, 4), dtype=np.float32)
        )
        skipped = len(bad_images) + len(bad_keypoints)
        tally = f"{len(bad_images)} unreadable images, {len(bad_keypoints)} bad keypoint files"
        if first_bad is not None and self.on_bad_sample == "error":
            message = str(first_bad)
            if isinstance(first_bad, KeypointFormatError):
                message = f"{message}; {KEYPOINT_FIX}"
            if skipped > 1:
                message = f"{message} [{self.name}/{split} has {skipped} bad samples: {tally}]"
            raise type(first_bad)(message) from None
        if skipped:
            log.warning(
                "%s/%s: skipped %d bad samples (%s) of %d at set-up (data.on_bad_sample=skip); first: %s",
                self.name,
                split,
                skipped,
                tally,
                len(records),
                first_bad,
            )
            if not kept:
                raise CorruptImageError(
                    f"{self.name}/{split}: all {len(records)} samples are bad and were skipped, first: {first_bad}"
                )
        skip_counts = {"skipped": skipped, "bad_images": len(bad_images), "bad_keypoints": len(bad_keypoints)}
        if source is None:
            boxes = [strip_regions(w, h, self.beta, **self.strips) for _, _, (w, h) in items]
            log.info("regions for %d %s/%s: fixed strips (data.regions=%s)", len(items), self.name, split, self.regions)
            self.region_counts[split] = {"pose": 0, "filled": 0, "strips": len(items), **skip_counts}
            return kept, np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 5, 4), dtype=np.float32)
        max_outside = self.pose.get("max_outside")
        batch = regions_for_images(
            items,
            beta=self.beta,
            min_conf=float(self.pose["min_conf"]),
            min_joints=int(self.pose["min_joints"]),
            strip_options=self.strips,
            max_outside=None if max_outside is None else float(max_outside),
            log_name=f"{self.name}/{split}",
        )
        self.region_counts[split] = {
            **batch.counts,
            "filled_joints": batch.n_filled,
            "outside_joints": batch.n_outside,
            **skip_counts,
        }
        return kept, batch.boxes.astype(np.float32)

    def limit_eval(
        self, limit: int | float, at_least_one: bool = False, setting: str = "trainer.limit_val_batches"
    ) -> dict[str, Any] | None:
        """Keeps a consistent query/gallery subset for ``trainer.limit_val_batches``; None when nothing is cut.

        Lightning's limit cuts the loader after some batches, and the loader serves every query
        before the gallery: a cut would keep queries without a gallery. Here whole identities are
        kept instead, in the order of their first query, each with all its query and gallery
        images, and the gallery images of identities without a query (distractors) in the same
        proportion, so that the subset is a small version of the protocol.

        Args:
            limit: Lightning's meaning: an int is a number of validation batches
                (``eval_batch_size`` images each), a float a fraction of the images.
            at_least_one: keep the first identity that can be scored even if it does not fit
                the limit (``fast_dev_run``, ``overfit_batches``) instead of raising.
            setting: the config key the limit comes from, for the log and the error.

        Returns:
            What was kept, for the log and ``metrics.json``: ``queries``, ``gallery``,
            ``identities`` and their totals, and the limit.

        Raises:
            ConfigError: the limit keeps no identity with a query and a match in another camera.
        """
        from reid.schema import ConfigError

        assert self.eval_set is not None, "call setup() first"
        records, is_query = self.eval_set.records, self.eval_set.is_query
        total = len(records)
        budget = int(limit) * self.eval_batch_size if isinstance(limit, int) else int(float(limit) * total)
        if budget >= total:
            return None
        queries_of: dict[int, list[int]] = {}
        for i, record in enumerate(records):
            if is_query[i]:
                queries_of.setdefault(record.pid, []).append(i)
        gallery_of: dict[int, list[int]] = {}
        others: list[int] = []
        for i, record in enumerate(records):
            if not is_query[i]:
                (gallery_of.setdefault(record.pid, []) if record.pid in queries_of else others).append(i)
        identity_images = total - len(others)
        identity_budget = budget * identity_images // max(1, total)

        def scorable(group: list[int]) -> bool:
            return (
                matched_queries(
                    [records[i] for i in group if is_query[i]], [records[i] for i in group if not is_query[i]]
                )
                > 0
            )

        kept: list[int] = []
        identities = 0
        for pid, queries in queries_of.items():
            group = queries + gallery_of.get(pid, [])
            if len(kept) + len(group) > identity_budget:
                break
            kept += group
            identities += 1
        if not scorable(kept) and at_least_one:
            first = next(
                (q + gallery_of.get(p, []) for p, q in queries_of.items() if scorable(q + gallery_of.get(p, []))), []
            )
            kept, identities = first, int(bool(first))
        if not scorable(kept):
            raise ConfigError(
                [
                    f"{setting}={limit} keeps {budget} of the {total} query/gallery images, too few for "
                    "one identity with a query and a gallery match in another camera; raise it, or use 1.0 (all)"
                ]
            )
        kept += others[: max(0, budget - len(kept))]
        kept.sort()
        old = self.eval_set
        queries = [i for i in kept if old.is_query[i]]
        gallery = [i for i in kept if not old.is_query[i]]
        self.eval_set = CropDataset(
            [old.records[i] for i in queries + gallery],
            old.boxes[queries + gallery],
            old.transform,
            old.whole_size,
            old.part_size,
            is_query=[True] * len(queries) + [False] * len(gallery),
            indices=list(range(len(queries))) + list(range(len(gallery))),
        )
        subset = {
            "setting": setting,
            "limit": limit,
            "queries": len(queries),
            "gallery": len(gallery),
            "identities": identities,
            "total_queries": sum(old.is_query),
            "total_gallery": total - sum(old.is_query),
            "total_identities": len(queries_of),
        }
        log.info(
            "validating on a subset (%s=%s): %d of %d queries, %d of %d gallery images, %d of %d query identities",
            setting,
            limit,
            subset["queries"],
            subset["total_queries"],
            subset["gallery"],
            subset["total_gallery"],
            identities,
            subset["total_identities"],
        )
        return subset

    @property
    def num_classes(self) -> int:
        """Number of training identities (call after setup)."""
        if self.dataset is None:
            self.setup("fit")
        assert self.dataset is not None
        return self.dataset.num_train_pids


def matched_queries(query: Sequence[Record], gallery: Sequence[Record]) -> int:
    """How many queries have a true match in the gallery: the same identity seen by another camera."""
    cameras_of: dict[int, set[int]] = {}
    for record in gallery:
        cameras_of.setdefault(record.pid, set()).add(record.camid)
    return sum(1 for q in query if cameras_of.get(q.pid, set()) - {q.camid})


def _optional_path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _check_scorable(dataset: ReIDDataset, query: Sequence[Record], gallery: Sequence[Record]) -> None:
    """Stops at set-up, not after training, when no query has a true match (same identity, another camera)."""
    if not query:
        return  # an empty query set is reported by the evaluation itself
    matched = matched_queries(query, gallery)
    if matched == 0:
        from reid.data.datasets.common import DatasetFormatError

        shared = len({q.pid for q in query} & {g.pid for g in gallery})
        raise DatasetFormatError(
            f"data set '{dataset.name}' at {dataset.root}: none of the {len(query)} query images has a match in the "
            f"gallery ({len(gallery)} images; {shared} identities shared, none seen by another camera), so nothing "
            "can be scored; check that query and gallery come from the same test set"
        )
    if matched < len(query):
        log.info("%d of %d query images have a match in the gallery (the others are not scored)", matched, len(query))


def _relabel(records: Sequence[Record]) -> list[Record]:
    """Relabels training pids to 0..q-1 again after samples were skipped."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.image_path, mapping[r.pid], r.camid) for r in records]
