"""Training samplers: seeded per epoch, split across DDP ranks, resumable in the middle of an epoch.

Both samplers yield dataset indices. The order of an epoch is a pure function of
``(seed, epoch, rank, num_replicas)``, so a run resumed from a mid-epoch checkpoint can replay
the rest of the interrupted epoch exactly: :meth:`ResumableSampler.resume` makes the next
iteration start after the samples the interrupted run already consumed.

* :class:`ShuffleSampler`: a fresh permutation per epoch; under DDP each rank takes every
  ``num_replicas``-th index of the permutation, padded like torch's ``DistributedSampler``.
* :class:`RandomIdentitySampler`: P identities x K images per batch (torchreid / fast-reid
  style), whole batches dealt out to the ranks.
* :class:`ResumableDataLoader`: the training loader; Lightning saves its ``state_dict`` (sampler
  seed and epoch, batches trained in that epoch) into checkpoints and restores it on resume.

Why the samplers subclass ``DistributedSampler``: under DDP, Lightning (``use_distributed_sampler``,
left on because the validation loader needs its ``DistributedSampler``) replaces the sampler of
every loader whose sampler is not a ``DistributedSampler``, or wraps a custom one in a
``DistributedSamplerWrapper`` that would reshuffle it; being one, ours is kept as it is
(``tests/test_samplers.py`` checks it on 2 DDP processes). They read the rank and world size from
``torch.distributed`` themselves (or take them as arguments) and never call
``DistributedSampler.__init__``, which would need a process group.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)

# data.sampler values: ShuffleSampler, RandomIdentitySampler
Sampler = Literal["random", "identity"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)

# Separate random streams for the two samplers, so that switching sampler never reuses an order.
_SHUFFLE_STREAM = 0
_IDENTITY_STREAM = 1
# per-sample augmentation seeds: one stream per rank from here on
_SAMPLE_SEED_STREAM = 1000


def distributed_context(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(num_replicas, rank)``: the given values, else those of the initialised process group, else ``(1, 0)``."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for {num_replicas} replicas")
    return int(num_replicas), int(rank)


def fresh_seed() -> int:
    """A random 63-bit seed from the OS (touches none of the global random generators)."""
    return secrets.randbits(63)


def epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """The generator of one epoch: independent streams for every ``(seed, epoch, stream)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(stream)]))


class ResumableSampler(DistributedSampler):
    """Base of the training samplers: epoch, seed, rank, and a pending skip for a mid-epoch resume.

    Subclasses implement :meth:`epoch_order` (this rank's full order of an epoch) and
    :meth:`__len__` (its length, the same every epoch: Lightning reads it once per fit).

    Args:
        seed: seed of the orders; None draws one from the OS (it is saved in the state, so a
            resumed run keeps it).
        num_replicas, rank: the DDP world size and this process's rank; None reads them from
            ``torch.distributed`` when it is initialised, else a single process.
    """

    kind = "base"

    def __init__(self, seed: int | None = None, num_replicas: int | None = None, rank: int | None = None) -> None:
        # DistributedSampler.__init__ is skipped on purpose (it needs a process group); its
        # public attributes are set so that code inspecting a DistributedSampler finds them.
        self.num_replicas, self.rank = distributed_context(num_replicas, rank)
        self.seed = fresh_seed() if seed is None else int(seed)
        # keyed: yield (index, sample seed) pairs, see with_sample_seeds()
        self.keyed = False
        self.epoch = 0
        self.shuffle = True
        self.drop_last = False
        self._skip_epoch: int | None = None
        self._skip_samples = 0

    # ------------------------------------------------------------------ to implement
    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``, in order (no skip applied)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ epochs and resume
    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order the next iteration yields (Lightning calls it every epoch)."""
        self.epoch = int(epoch)

    def resume(self, epoch: int, num_samples: int) -> None:
        """Makes the next iteration of ``epoch`` start after its first ``num_samples`` samples.

        The skip is used once, by the next iteration of that epoch; an iteration of any other
        epoch drops it. Re-setting the same epoch (Lightning does so after a resume) keeps it.
        """
        if num_samples < 0:
            raise ValueError(f"cannot skip {num_samples} samples")
        self.set_epoch(epoch)
        self._skip_epoch = int(epoch)
        self._skip_samples = int(num_samples)

    def with_sample_seeds(self) -> ResumableSampler:
        """Makes the sampler yield ``(index, sample_seed)`` pairs instead of indices; returns it.

        The seed of each position of an epoch comes from ``(seed, epoch, rank)``, so a data set
        that seeds its random augmentation with it draws the same augmentation whatever the
        number of loader workers, and a resumed epoch repeats the interrupted one exactly.
        """
        self.keyed = True
        return self

    def sample_seeds(self, epoch: int, count: int) -> list[int]:
        """The augmentation seeds of the first ``count`` positions of this rank's ``epoch`` order."""
        rng = epoch_rng(self.seed, epoch, _SAMPLE_SEED_STREAM + self.rank)
        return rng.integers(0, 2**63 - 1, size=count, dtype=np.int64).tolist()

    def __iter__(self) -> Iterator[Any]:
        skip = self._skip_samples if self._skip_epoch == self.epoch else 0
        self._skip_epoch, self._skip_samples = None, 0
        order = self.epoch_order(self.epoch)
        if skip > len(order):
            log.warning("asked to skip %d samples of an epoch of %d: the epoch is over", skip, len(order))
        if self.keyed:
            return iter(list(zip(order, self.sample_seeds(self.epoch, len(order)), strict=True))[skip:])
        return iter(order[skip:])

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The plain-container state that fixes the order: kind, seed, epoch, world size."""
        return {"kind": self.kind, "seed": self.seed, "epoch": self.epoch, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Takes the seed and epoch of a saved state (the saved seed wins, so the order continues)."""
        if state.get("kind") != self.kind:
            log.warning(
                "the checkpoint was trained with the %s sampler, this run uses %s: the resumed epoch's order differs",
                state.get("kind"),
                self.kind,
            )
        if int(state.get("num_replicas", self.num_replicas)) != self.num_replicas:
            log.warning(
                "the checkpoint ran on %s processes, this run on %d: the resumed epoch's order differs",
                state.get("num_replicas"),
                self.num_replicas,
            )
        saved_seed = int(state["seed"])
        if saved_seed != self.seed:
            log.info("sampler seed %d restored from the checkpoint (configured: %d)", saved_seed, self.seed)
        self.seed = saved_seed
        self.set_epoch(int(state["epoch"]))


class ShuffleSampler(ResumableSampler):
    """A seeded permutation per epoch; under DDP every rank gets ``ceil(n / num_replicas)`` indices.

    As torch's ``DistributedSampler`` (``drop_last=False``): the permutation is padded with its
    own first indices to a multiple of ``num_replicas`` and rank ``r`` takes positions
    ``r, r + num_replicas, ...``. With one process it is the plain permutation.

    Args:
        num_samples: the data set's length.
        seed, num_replicas, rank: see :class:`ResumableSampler`.
    """

    kind = "random"

    def __init__(
        self, num_samples: int, seed: int | None = None, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(seed, num_replicas, rank)
        if num_samples < 1:
            raise ValueError("the training set is empty")
        self.dataset_size = int(num_samples)
        self.num_samples = math.ceil(self.dataset_size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __len__(self) -> int:
        return self.num_samples

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's share of the permutation of ``epoch``."""
        order = epoch_rng(self.seed, epoch, _SHUFFLE_STREAM).permutation(self.dataset_size)
        if self.total_size > len(order):
            order = np.resize(order, self.total_size)  # repeats the permutation from its start
        return order[self.rank : self.total_size : self.num_replicas].tolist()


class RandomIdentitySampler(ResumableSampler):
    """Batches of P identities x K images (``batch_size = P * K``), the same number every epoch.

    Per epoch, from a generator seeded by ``(seed, epoch)``:

    1. each identity's images are shuffled and, when their count is not a multiple of K, padded
       with images of the same identity drawn again (without replacement while it has enough)
       up to the next multiple of K, then cut into groups of K; every image is seen each epoch;
    2. batches are P groups of P distinct identities, chosen uniformly among the identities that
       still have groups, as torchreid does, except that identities with many groups left are
       taken first when leaving them out would make the remaining batches impossible to fill.
       The number of batches is thereby fixed for a data set: the largest B with
       ``sum_i min(groups_i, B) >= P * B`` (an identity cannot appear twice in a batch). torchreid
       instead stops when fewer than P identities have groups left, so its epoch length varies;
       Lightning needs one length. Groups left over at the end are dropped (for data sets with
       balanced identities, fewer than P groups);
    3. under DDP, rank ``r`` takes batches ``r, r + num_replicas, ...`` of the first
       ``B // num_replicas * num_replicas``: disjoint batches, the same number on every rank.

    The paper trains with cross-entropy only and names no sampler (this one is ``data.sampler=identity``).

    Args:
        pids: the identity label of every training sample, in data set order.
        batch_size: images per batch (P * K).
        num_instances: K, images per identity in a batch.
        seed, num_replicas, rank: see :class:`ResumableSampler`.
    """

    kind = "identity"

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int = 4,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(seed, num_replicas, rank)
        if num_instances < 1 or batch_size % num_instances != 0:
            raise ValueError(
                f"data.batch_size={batch_size} must be a multiple of data.num_instances={num_instances} "
                "(a batch is P identities x K images)"
            )
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.num_identities = self.batch_size // self.num_instances
        pid_array = np.asarray(list(pids))
        self.pids = sorted(Counter(pid_array.tolist()))
        self.indices_of = [np.flatnonzero(pid_array == pid) for pid in self.pids]
        if len(self.pids) < self.num_identities:
            raise ValueError(
                f"data.sampler=identity needs {self.num_identities} identities per batch "
                f"(data.batch_size={batch_size} / data.num_instances={num_instances}) but the training set "
                f"has {len(self.pids)}: lower data.batch_size or raise data.num_instances"
            )
        self.groups_per_identity = np.array([math.ceil(len(i) / self.num_instances) for i in self.indices_of])
        self.batches_per_epoch = _max_batches(self.groups_per_identity, self.num_identities)
        self.batches_per_rank = self.batches_per_epoch // self.num_replicas
        if self.batches_per_rank < 1:
            raise ValueError(
                f"the identity sampler makes {self.batches_per_epoch} batches per epoch, fewer than the "
                f"{self.num_replicas} processes: lower data.batch_size"
            )
        self.num_samples = self.batches_per_rank * self.batch_size
        self.total_size = self.num_samples * self.num_replicas
        self.dataset_size = len(pid_array)

    def __len__(self) -> int:
        return self.num_samples

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of ``epoch`` (each P groups of K indices, P distinct identities)."""
        rng = epoch_rng(self.seed, epoch, _IDENTITY_STREAM)
        k, num_batches = self.num_instances, self.batches_per_epoch
        groups: list[list[np.ndarray]] = []
        for indices in self.indices_of:
            order = rng.permutation(indices)
            missing = -len(order) % k
            if missing:
                order = np.concatenate([order, rng.choice(indices, missing, replace=missing > len(indices))])
            groups.append(np.split(order, len(order) // k))
        remaining = np.array([len(g) for g in groups])
        p = self.num_identities
        batches: list[list[int]] = []
        for left in range(num_batches, 0, -1):
            # Feasible while sum_i min(remaining_i, left) >= P * left. Each identity with at least
            # `left` groups that sits this batch out uses up one unit of the slack, so at least
            # (saturated - slack) of them must be taken; the rest of the batch is a uniform pick.
            slack = int(np.minimum(remaining, left).sum()) - p * left
            saturated = np.flatnonzero(remaining >= left)
            must = rng.choice(saturated, max(0, len(saturated) - slack), replace=False)
            others = np.setdiff1d(np.flatnonzero(remaining > 0), must)
            chosen = np.concatenate([must, rng.choice(others, p - len(must), replace=False)])
            batch: list[int] = []
            for identity in rng.permutation(chosen):
                remaining[identity] -= 1
                batch.extend(groups[identity][remaining[identity]].tolist())
            batches.append(batch)
        return batches

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's batches of ``epoch``, flattened."""
        batches = self.epoch_batches(epoch)[: self.batches_per_rank * self.num_replicas]
        return [index for batch in batches[self.rank :: self.num_replicas] for index in batch]

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`ResumableSampler.state_dict`, plus P and K."""
        return {**super().state_dict(), "batch_size": self.batch_size, "num_instances": self.num_instances}


def _max_batches(groups_per_identity: np.ndarray, identities_per_batch: int) -> int:
    """The largest B with ``sum_i min(g_i, B) >= P * B``: batches of P distinct identities that fit."""
    low, high = 0, int(groups_per_identity.sum()) // identities_per_batch
    while low < high:  # the condition holds for B = 0 and, once false, stays false as B grows
        mid = (low + high + 1) // 2
        if np.minimum(groups_per_identity, mid).sum() >= identities_per_batch * mid:
            low = mid
        else:
            high = mid - 1
    return low


class ResumableDataLoader(DataLoader):
    """A training ``DataLoader`` Lightning can checkpoint in the middle of an epoch.

    The state is the sampler's seed, the epoch training resumes in and the batches of that
    epoch already trained on, read from ``position``: a callable returning ``(epoch, batches
    done)`` from the fit loop's progress (not what the loader or its workers prefetched). On
    load, the sampler selects that epoch and skips those batches, so the resumed run continues
    with the very next batch.

    Lightning hands the state back to ``load_state_dict()`` only when it considers the fit loop
    interrupted mid-epoch; the data modules also keep it in their own checkpoint state and apply
    it to the loader they build on resume (``CropLoadersMixin``), because Lightning creates the
    loader's iterator (and workers prefetch its first batches) *before* it sets the new epoch on
    the sampler: without the state, a run resumed from an epoch-end checkpoint would replay the
    previous epoch's order.

    Args:
        *args, **kwargs: ``DataLoader``'s (give ``sampler`` a :class:`ResumableSampler`, and
            ``drop_last=True``: resuming counts in whole batches). The signature is otherwise
            ``DataLoader``'s, so that Lightning can re-create the loader when it swaps the
            sampler (``trainer.overfit_batches``; nothing is resumable then).
        position: ``(epoch, batches done)`` where training goes on; None: the sampler's epoch, 0
            batches (not under a trainer).
    """

    def __init__(self, *args: Any, position: Callable[[], tuple[int, int]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, Any]:
        """Plain-container state: the sampler's, the epoch to resume, the batches done in it, the batch size."""
        if not isinstance(self.sampler, ResumableSampler):
            return {}  # Lightning swapped the sampler (trainer.overfit_batches): nothing to resume
        epoch, done = self.position() if self.position is not None else (self.sampler.epoch, 0)
        return {
            "sampler": self.sampler.state_dict(),
            "epoch": int(epoch),
            "batches_done": int(done),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Makes the next iteration continue the saved epoch after its consumed batches (idempotent)."""
        sampler = self.sampler
        if not state or not isinstance(sampler, ResumableSampler):
            return
        sampler.load_state_dict(state["sampler"])
        assert self.batch_size is not None  # a resumable loader batches automatically
        if int(state.get("batch_size", self.batch_size)) != self.batch_size:
            log.warning(
                "the checkpoint used batches of %s, this run %d: the resumed epoch's order differs",
                state.get("batch_size"),
                self.batch_size,
            )
        # checkpoints from before "epoch" was stored: the sampler's epoch
        epoch = int(state.get("epoch", sampler.epoch))
        done = int(state.get("batches_done", 0))
        sampler.resume(epoch, done * int(self.batch_size))
        log.info("resuming epoch %d of the training data after %d batches", epoch, done)
