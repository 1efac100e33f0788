"""The LightningDataModule: records -> cached regions -> five crops per image -> train / query+gallery loaders.

The data logic lives below Lightning, in :mod:`reid.data.index` (set-up), :mod:`reid.data.crop_dataset`
and :mod:`reid.data.loaders`; the validation subsets in :mod:`reid.evaluation.subsets`. Here are the hooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import pytorch_lightning as pl
from annotated_types import Ge, Interval
from torch.utils.data import DataLoader, Dataset

from reid.data.crop_dataset import CropDataset
from reid.data.datasets import load
from reid.data.device_batch import PIPELINES, Pipeline, paste_occluders
from reid.data.index import (
    BadSamplePolicy,
    IndexOptions,
    SplitRegions,
    build_crop_sets,
    check_index_options,
    keypoint_source,
    pose_options,
    split_regions,
)
from reid.data.io import VerifyMode
from reid.data.loaders import (
    build_train_sampler,
    check_sampler_options,
    eval_loader,
    train_batches_per_epoch,
    train_labels,
    train_loader,
)
from reid.data.records import Record, ReIDDataset
from reid.data.samplers import ResumableDataLoader, Sampler
from reid.evaluation.subsets import check_scorable, limit_eval_set
from reid.names import RegionMode


class CropLoadersMixin:
    """Train / validation / test loaders over ``train_set`` and ``eval_set``, shared by the data modules."""

    train_set: Dataset | None
    eval_set: Dataset | None
    batch_size: int
    eval_batch_size: int
    num_workers: int
    pin_memory: bool

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        return eval_loader(dataset, batch_size, self.num_workers, self.pin_memory, shuffle=shuffle, drop_last=drop_last)

    # training sampler options (data.sampler, data.num_instances, data.sampler_seed); see _set_sampler_options
    sampler_name: str = "random"
    num_instances: int = 4
    sampler_seed: int | None = None

    def _set_sampler_options(self, sampler: str, num_instances: int, sampler_seed: int | None) -> None:
        """Checks and keeps the training sampler options (call after ``batch_size`` is set)."""
        check_sampler_options(sampler, num_instances, self.batch_size)
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
        return train_labels(self.train_set)

    def train_batches_per_epoch(self, num_replicas: int = 1) -> int:
        """The complete training batches each of ``num_replicas`` processes gets per epoch (at least 1).

        See :func:`reid.data.loaders.train_batches_per_epoch`: a ``batch_size`` above the training
        images a process gets would leave it nothing to train on, and Lightning would then skip
        training and the run would score an untrained model.

        Raises:
            ConfigError: no complete batch per epoch, naming the setting and the fix.
        """
        assert self.train_set is not None, "call setup() first"
        return train_batches_per_epoch(
            self.train_set,
            self.batch_size,
            self.sampler_name,
            self.num_instances,
            num_replicas=num_replicas,
            name=getattr(self, "name", "?"),
        )

    def train_dataloader(self) -> DataLoader:
        """Complete batches in a seeded order per epoch, resumable in the middle of an epoch.

        ``data.sampler=random`` shuffles (:class:`reid.data.samplers.ShuffleSampler`),
        ``identity`` makes P x K batches (:class:`reid.data.samplers.RandomIdentitySampler`).
        """
        assert self.train_set is not None, "call setup() first"
        sampler = build_train_sampler(
            self.train_set, self.sampler_name, self.batch_size, self.num_instances, self.sampler_seed
        )
        loader = train_loader(
            self.train_set,
            sampler,
            self.batch_size,
            self.num_workers,
            self.pin_memory,
            position=self._train_position,
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
        options: keyword options of the data set's loader, ``reid.data.datasets.load(name, root, **options)``
            (CUHK03 protocol, synthetic set size...).
        whole_size, part_size: crop sizes (height, width); the paper's are 384x192 for the whole body
            and 96x192 for each part.
        regions: ``pose`` (Eq. 1-2 from keypoints, canonical-pose fallback) or ``strips``.
        beta: overlap between neighbouring regions as a fraction of the body height (the paper's text:
            1/10; Table 11 varies it from 0 to 6/48).
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
            garbled pixel stream is handled by ``on_bad_sample`` before training (on a thread pool;
            the time it adds is in docs/benchmarks.md); ``header`` reads only the headers: faster,
            but such a file then stops training mid-epoch with a :class:`CorruptImageError`.
        sampler: training sampler, ``random`` (a seeded shuffle) or ``identity`` (P identities x
            ``num_instances`` images per batch); both resume mid-epoch (:mod:`reid.data.samplers`).
        num_instances: K of the identity sampler; ``batch_size`` must be a multiple of it.
        sampler_seed: seed of the training order (per epoch); None draws one, kept in checkpoints.
        test_sets: other ``conf/data`` options whose query/gallery are scored at every validation
            and in ``evaluate.py`` (cross-domain evaluation); built by the runner with this set's
            input settings (:func:`reid.tasks.build_test_sets`).
        pipeline: where the five crops are cut and augmented: ``cpu`` (in the loader workers, with
            OpenCV) or ``device`` (the workers ship the decoded originals, their boxes and the random
            draws, and the crops are cut where the network runs, batched, in
            ``on_after_batch_transfer``; :mod:`reid.data.device_batch`).
        image_cache_dir: the folder of the device path's decoded-image cache (every original decoded
            once, shared by runs, rebuilt when a file changes); None: each worker decodes the files.
    """

    def __init__(
        self,
        name: str,
        root: str | Path,
        options: dict[str, Any] | None = None,
        whole_size: Annotated[tuple[int, int], Ge(16)] = (384, 192),
        part_size: Annotated[tuple[int, int], Ge(8)] = (96, 192),
        regions: RegionMode = "pose",
        beta: Annotated[float, Interval(ge=0, le=0.5)] = 0.1,
        pose: Mapping[str, Any] | None = None,
        strips: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        batch_size: Annotated[int, Ge(1)] = 32,
        eval_batch_size: Annotated[int, Ge(1)] = 128,
        num_workers: Annotated[int, Ge(0)] = 2,
        pin_memory: bool = False,
        on_bad_sample: BadSamplePolicy = "error",
        verify_images: VerifyMode = "decode",
        sampler: Sampler = "random",
        num_instances: Annotated[int, Ge(1)] = 4,
        sampler_seed: Annotated[int | None, Interval(ge=0, le=2**32 - 1)] = None,
        test_sets: tuple[str, ...] = (),
        pipeline: Pipeline = "cpu",
        image_cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_index_options(regions, on_bad_sample, verify_images, pose)
        self.name: str = name  # LightningDataModule declares name as str | None
        self.root = Path(root)
        self.options = dict(options or {})
        # (height, width): the sizes are pairs
        self.whole_size = cast("tuple[int, int]", tuple(int(v) for v in whole_size))
        self.part_size = cast("tuple[int, int]", tuple(int(v) for v in part_size))
        self.regions = regions
        self.beta = float(beta)
        self.pose = pose_options(pose)
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
        if pipeline not in PIPELINES:
            raise ValueError(f"data.pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
        self.pipeline = pipeline
        self.image_cache_dir = image_cache_dir
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
        set-up could have found (with ``verify_images=decode``). See :mod:`reid.data.index`.
        """
        if self.dataset is not None:
            return
        dataset = self._load()
        source = self._keypoint_source(dataset)
        # a set used for evaluation only (data.test_sets): its training images are not read
        train_records = [] if stage in ("validate", "test") else dataset.train
        splits = {
            "train": self._regions("train", train_records, source),
            "query": self._regions("query", dataset.query, source),
            "gallery": self._regions("gallery", dataset.gallery, source),
        }
        self.train_set, self.eval_set = build_crop_sets(
            dataset,
            splits,
            self.on_bad_sample,
            self.whole_size,
            self.part_size,
            self.augment,
            with_confidence=source is not None,
            pipeline=self.pipeline,
            image_cache_dir=self.image_cache_dir,
        )
        self.dataset = dataset
        check_scorable(dataset, splits["query"].records, splits["gallery"].records)

    def _index_options(self) -> IndexOptions:
        return IndexOptions(
            name=self.name,
            regions=self.regions,
            beta=self.beta,
            pose=self.pose,
            strips=self.strips,
            on_bad_sample=self.on_bad_sample,
            verify_images=self.verify_images,
        )

    def _keypoint_source(self, dataset: ReIDDataset) -> Any:
        """The keypoints of ``dataset`` as ``data.pose`` says, or None for strips.

        See :func:`reid.data.index.keypoint_source`.
        """
        return keypoint_source(dataset, self.regions, self.pose)

    def _regions(self, split: str, records: Sequence[Record], source: Any) -> SplitRegions:
        """One split's boxes (:func:`reid.data.index.split_regions`), its counts and keypoint confidence kept."""
        regions = split_regions(self._index_options(), split, records, source)
        self.part_confidence[split] = regions.part_confidence
        self.region_counts[split] = regions.counts
        return regions

    def limit_eval(
        self, limit: int | float, at_least_one: bool = False, setting: str = "trainer.limit_val_batches"
    ) -> dict[str, Any] | None:
        """Keeps a consistent query/gallery subset for ``trainer.limit_val_batches``; None when nothing is cut.

        Whole identities are kept, with their query and gallery images and distractors in the same
        proportion (:func:`reid.evaluation.subsets.limit_eval_set`, which documents the arguments).

        Returns:
            What was kept, for the log and ``metrics.json``: ``queries``, ``gallery``,
            ``identities`` and their totals, and the limit.

        Raises:
            ConfigError: the limit keeps no identity with a query and a match in another camera.
        """
        assert self.eval_set is not None, "call setup() first"
        limited = limit_eval_set(self.eval_set, limit, self.eval_batch_size, at_least_one=at_least_one, setting=setting)
        if limited is None:
            return None
        self.eval_set, subset = limited
        return subset

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``data.pipeline=device``: cut and augment the crops of the batch on its device; paste occluders.

        ``erasing_fill=paste`` fills the erased rectangles from another image of the batch, on
        both pipelines (:func:`reid.data.device_batch.paste_occluders`).
        """
        if not isinstance(batch, dict):
            return batch
        crops = getattr(self.train_set or self.eval_set, "device_crops", None)
        return paste_occluders(crops(batch) if crops is not None else batch)

    @property
    def num_classes(self) -> int:
        """Number of training identities (call after setup)."""
        if self.dataset is None:
            self.setup("fit")
        assert self.dataset is not None
        return self.dataset.num_train_pids
