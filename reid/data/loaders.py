"""The crop loaders without Lightning: sampler options and construction, batches per epoch, DataLoaders."""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from reid.data.samplers import SAMPLERS, RandomIdentitySampler, ResumableDataLoader, ResumableSampler, ShuffleSampler
from reid.errors import ConfigError


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


def check_sampler_options(sampler: str, num_instances: int, batch_size: int) -> None:
    """Checks the training sampler options (``data.sampler``, ``data.num_instances``) against the batch size.

    Raises:
        ConfigError: an unknown sampler, or an identity sampler whose K does not divide the batch.
    """
    if sampler not in SAMPLERS:
        raise ConfigError([f"data.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}"])
    if sampler == "identity" and (int(num_instances) < 1 or batch_size % int(num_instances)):
        raise ConfigError(
            [
                f"data.batch_size={batch_size} must be a multiple of data.num_instances={num_instances} "
                "with data.sampler=identity (a batch is P identities x K images)"
            ]
        )


def train_labels(train_set: Any) -> list[int]:
    """The identity (class) of every training sample, in data set order (``records`` or ``samples``)."""
    records = getattr(train_set, "records", None)
    return [r.pid for r in records] if records is not None else [s[1] for s in train_set.samples]


def train_batches_per_epoch(
    train_set: Any,
    batch_size: int,
    sampler_name: str,
    num_instances: int,
    num_replicas: int = 1,
    name: str = "?",
) -> int:
    """The complete training batches each of ``num_replicas`` processes gets per epoch (at least 1).

    The training loader drops an incomplete last batch (resuming counts whole batches), so a
    ``batch_size`` above the training images a process gets leaves it nothing to train on.

    Raises:
        ConfigError: no complete batch per epoch, naming ``data.batch_size`` (with the number
            of training images) or the identity sampler's P x K, and the fix.
    """
    images = len(train_set)
    if images == 0:
        raise ConfigError(
            [f"data set '{name}' has no training images, so there is nothing to train on: check its train split"]
        )
    if sampler_name == "identity":
        try:
            sampler = RandomIdentitySampler(
                train_labels(train_set), batch_size, num_instances, seed=0, num_replicas=num_replicas, rank=0
            )
        except ValueError as err:  # the sampler's own message names the keys and the fix
            raise ConfigError([f"{err} (data set '{name}', {images} training images)"]) from None
        return sampler.batches_per_rank
    per_process = math.ceil(images / num_replicas)
    batches = per_process // batch_size
    if batches == 0:
        processes = f" ({per_process} per process with {num_replicas} processes)" if num_replicas > 1 else ""
        raise ConfigError(
            [
                f"data.batch_size={batch_size} is more than the {images} training images of data set "
                f"'{name}'{processes}: an epoch has no complete batch (the incomplete last one is dropped), "
                f"so nothing would be trained; lower data.batch_size to at most {per_process}"
            ]
        )
    return batches


def build_train_sampler(
    train_set: Any, sampler_name: str, batch_size: int, num_instances: int, seed: int | None
) -> ResumableSampler:
    """The seeded training sampler: ``identity`` makes P x K batches, anything else shuffles.

    A data set with ``accepts_sample_seeds`` gets ``(index, sample seed)`` pairs, so that its
    augmentation is seeded per sample: reproducible, and resumable exactly.
    """
    sampler: ResumableSampler
    if sampler_name == "identity":
        sampler = RandomIdentitySampler(train_labels(train_set), batch_size, num_instances, seed=seed)
    else:
        sampler = ShuffleSampler(len(train_set), seed=seed)
    if getattr(train_set, "accepts_sample_seeds", False):
        sampler.with_sample_seeds()
    return sampler


def train_loader(
    train_set: Dataset,
    sampler: ResumableSampler,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    position: Callable[[], tuple[int, int]] | None = None,
) -> ResumableDataLoader:
    """Complete batches in the sampler's order, resumable mid-epoch (``position`` says where training is)."""
    return ResumableDataLoader(
        train_set,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        position=position,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        multiprocessing_context=worker_start_method(num_workers),
        collate_fn=getattr(train_set, "collate", None),
        # the workers' base seed comes from this generator, not the global torch RNG: creating
        # the loader again on a resume must not shift the random stream of dropout
        generator=torch.Generator().manual_seed(sampler.seed),
    )


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    shuffle: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A loader in data set order by default, whose workers draw nothing from the global random generators."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        multiprocessing_context=worker_start_method(num_workers),
        collate_fn=getattr(dataset, "collate", None),
        # workers' base seed from a generator of their own (evaluation draws nothing at random):
        # the first validation of a resumed run must not advance the global RNG that dropout
        # draws from, as the uninterrupted run's persistent workers did not
        generator=torch.Generator().manual_seed(0),
    )
