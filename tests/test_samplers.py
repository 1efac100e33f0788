"""Training samplers: seeded per epoch, P x K identity batches, DDP shares, mid-epoch resume, the resumable loader."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import ROOT, TINY_OVERRIDES
from resume_helpers import read_steps
from torch.utils.data import Dataset, DistributedSampler

import reid.tasks as runner
from reid.data.datasets import load
from reid.data.samplers import RandomIdentitySampler, ResumableDataLoader, ShuffleSampler, distributed_context

# 10 identities with 1..10 images each (pid i has i + 1 images), in a scrambled data set order
PIDS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), np.arange(1, 11))).tolist()


def _identity(**options):
    return RandomIdentitySampler(PIDS, batch_size=options.pop("batch_size", 12), num_instances=4, **options)


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("make", [lambda **o: ShuffleSampler(len(PIDS), **o), _identity])
def test_order_is_a_function_of_seed_and_epoch(make):
    sampler = make(seed=3)
    epoch0 = list(sampler)
    assert list(make(seed=3)) == epoch0  # another instance, same (seed, epoch)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # going back to an epoch replays it
    assert list(make(seed=4)) != epoch0
    assert len(epoch0) == len(epoch1) == len(sampler)


def test_shuffle_sampler_is_a_permutation_every_epoch():
    sampler = ShuffleSampler(len(PIDS), seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(sampler) == list(range(len(PIDS)))


def test_missing_seed_is_drawn_once_and_kept_in_the_state():
    sampler = ShuffleSampler(100)
    again = ShuffleSampler(100)
    assert sampler.seed != again.seed  # 63 random bits
    again.load_state_dict(sampler.state_dict())
    assert list(again) == list(sampler)


# ---------------------------------------------------------------------------- P x K batches


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_identity_batches_have_p_distinct_identities_with_k_images_each(epoch):
    sampler = _identity(seed=1)
    batches = sampler.epoch_batches(epoch)
    assert len(batches) == sampler.batches_per_epoch > 0
    for batch in batches:
        counts = Counter(PIDS[i] for i in batch)
        assert len(batch) == 12 and len(counts) == 3 and set(counts.values()) == {4}


def test_identity_sampler_pads_identities_with_fewer_images_than_k():
    pids = [0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]  # 1, 2, 3 and 5 images: padded to 4, 4, 4 and 8
    sampler = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=0)
    assert sampler.batches_per_epoch == 2  # 5 groups of 4; at most 2 batches of 2 distinct identities
    order = sampler.epoch_order(0)
    assert len(order) == len(sampler) == 16
    batches = [order[:8], order[8:]]
    for batch in batches:
        assert sorted(Counter(pids[i] for i in batch).values()) == [4, 4]
    # identity 0's single image is repeated 4 times whenever it is drawn
    zero = [i for i in order if pids[i] == 0]
    assert zero in ([], [0, 0, 0, 0])


def test_identity_sampler_uses_every_image_once_when_identities_are_balanced():
    pids = np.repeat(np.arange(8), 4).tolist()
    sampler = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=0)
    for epoch in range(3):
        assert sorted(sampler.epoch_order(epoch)) == list(range(32))


def test_identity_sampler_epoch_length_is_the_same_every_epoch():
    sampler = _identity(seed=5)
    lengths = {len(sampler.epoch_order(epoch)) for epoch in range(20)}
    assert lengths == {len(sampler)}


def test_identity_sampler_with_one_dominant_identity_still_fills_every_batch():
    pids = [0] * 40 + [1, 1, 2, 2, 3, 3, 4, 4]
    sampler = RandomIdentitySampler(pids, batch_size=4, num_instances=2, seed=0)
    # identity 0 has 20 groups but can only be in one slot per batch: 4 other groups + 4 of id 0
    assert sampler.batches_per_epoch == 4
    for batch in sampler.epoch_batches(0):
        assert sorted(Counter(pids[i] for i in batch).values()) == [2, 2]


@pytest.mark.parametrize(
    ("pids", "batch_size", "k", "message"),
    [
        (PIDS, 10, 4, "data.batch_size=10 must be a multiple of data.num_instances=4"),
        ([0, 0, 1, 1], 12, 4, "needs 3 identities per batch"),
    ],
)
def test_identity_sampler_rejects_impossible_settings(pids, batch_size, k, message):
    with pytest.raises(ValueError, match=message):
        RandomIdentitySampler(pids, batch_size=batch_size, num_instances=k, seed=0)


# ---------------------------------------------------------------------------- distributed


def test_shuffle_sampler_ranks_are_disjoint_equal_and_cover_the_data_set():
    n, world = 23, 4
    shares = [ShuffleSampler(n, seed=2, num_replicas=world, rank=r) for r in range(world)]
    orders = [list(s) for s in shares]
    assert {len(o) for o in orders} == {len(shares[0])} == {6}  # ceil(23 / 4)
    flat = [i for o in orders for i in o]
    assert set(flat) == set(range(n))
    assert len(flat) - len(set(flat)) == 6 * world - n  # only the padding repeats
    # the ranks split one permutation padded with its start, as torch's DistributedSampler does
    permutation = ShuffleSampler(n, seed=2).epoch_order(0)
    padded = permutation + permutation[: 6 * world - n]
    assert orders == [padded[r::world] for r in range(world)]


def test_identity_sampler_ranks_get_disjoint_whole_batches_of_equal_number():
    world = 2
    ranks = [_identity(seed=7, num_replicas=world, rank=r) for r in range(world)]
    single = _identity(seed=7)
    all_batches = single.epoch_batches(0)
    orders = [s.epoch_order(0) for s in ranks]
    assert len(orders[0]) == len(orders[1]) == len(ranks[0]) == (single.batches_per_epoch // world) * 12
    per_rank = [[o[i : i + 12] for i in range(0, len(o), 12)] for o in orders]
    used = [tuple(b) for batches in per_rank for b in batches]
    assert len(set(used)) == len(used)  # no batch on two ranks
    assert set(used) <= {tuple(b) for b in all_batches}  # the single-process batches, dealt out
    positions = [i for i, b in enumerate(all_batches) if tuple(b) in set(map(tuple, per_rank[1]))]
    assert positions == list(range(1, 2 * len(per_rank[1]), 2))


def test_rank_and_world_size_default_to_a_single_process_and_are_checked():
    assert distributed_context() == (1, 0)
    assert distributed_context(4, 3) == (4, 3)
    with pytest.raises(ValueError, match="invalid rank 4 for 4 replicas"):
        distributed_context(4, 4)


def test_samplers_are_distributed_samplers_so_lightning_keeps_them():
    # Lightning replaces a train sampler under DDP unless isinstance(sampler, DistributedSampler)
    assert isinstance(ShuffleSampler(5, seed=0), DistributedSampler)
    assert isinstance(_identity(seed=0), DistributedSampler)


# ---------------------------------------------------------------------------- resume


@pytest.mark.parametrize("make", [lambda **o: ShuffleSampler(len(PIDS), **o), _identity])
@pytest.mark.parametrize("skip", [0, 5, 12, 24])
def test_resume_yields_exactly_the_tail_of_the_uninterrupted_epoch(make, skip):
    uninterrupted = make(seed=9)
    uninterrupted.set_epoch(2)
    full = list(uninterrupted)
    resumed = make(seed=9)
    resumed.resume(2, skip)
    resumed.set_epoch(2)  # Lightning sets the epoch again after restoring: the skip survives it
    assert list(resumed) == full[skip:]
    assert list(resumed) == full  # the skip is used once
    assert len(resumed) == len(full)  # the length stays that of a whole epoch


def test_a_skip_for_another_epoch_is_dropped():
    sampler = ShuffleSampler(20, seed=0)
    sampler.resume(0, 8)
    sampler.set_epoch(1)  # e.g. the checkpoint was taken at the end of epoch 0
    assert len(list(sampler)) == 20


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"index": i}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_state_resumes_after_the_batches_the_consumer_processed(num_workers):
    done = {"batches": 0}

    def loader() -> ResumableDataLoader:
        sampler = ShuffleSampler(40, seed=1)
        return ResumableDataLoader(
            _Indices(40),
            batch_size=4,
            sampler=sampler,
            drop_last=True,
            position=lambda: (1, done["batches"]),
            num_workers=num_workers,
        )

    first = loader()
    first.sampler.set_epoch(1)
    full = [b["index"].tolist() for b in first]
    iterator = iter(first)
    for _ in range(3):
        next(iterator)  # the workers have prefetched further than this
    done["batches"] = 3
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batches_done"] == 3 and state["batch_size"] == 4
    assert state["sampler"] == {"kind": "random", "seed": 1, "epoch": 1, "num_replicas": 1}
    del iterator
    second = loader()
    second.load_state_dict(state)
    assert [b["index"].tolist() for b in second] == full[3:]
    assert len(second) == 10  # Lightning counts from the whole epoch's length


# ---------------------------------------------------------------------------- data module options


def test_data_sampler_identity_serves_p_by_k_batches_from_the_config(make_cfg):
    cfg = make_cfg("data.sampler=identity", "data.num_instances=4", "data.batch_size=8")
    datamodule = runner.build_datamodule(cfg)
    loader = datamodule.train_dataloader()
    assert isinstance(loader.sampler, RandomIdentitySampler) and loader.sampler.seed == cfg.seed
    batches = list(loader)
    assert len(batches) == len(loader) > 0
    for batch in batches:
        assert sorted(Counter(batch["pid"].tolist()).values()) == [4, 4]
    assert runner.train(make_cfg("data.sampler=identity", "trainer.fast_dev_run=true"))["mAP"] >= 0.0


def test_data_sampler_random_is_the_seeded_shuffle(make_cfg):
    loader = runner.build_datamodule(make_cfg("seed=11")).train_dataloader()
    assert isinstance(loader.sampler, ShuffleSampler) and loader.sampler.seed == 11
    assert loader.drop_last and len(loader) == len(loader.dataset) // loader.batch_size


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.sampler=identity", "data.num_instances=3"],
            "data.batch_size=8 must be a multiple of data.num_instances=3",
        ),
        (["data.sampler=balanced"], "data.sampler must be one of random, identity, got 'balanced'"),
    ],
)
def test_bad_sampler_options_name_the_keys(make_cfg, overrides, message):
    with pytest.raises(Exception, match=message):
        runner.build_datamodule(make_cfg(*overrides))


# ---------------------------------------------------------------------------- under Lightning DDP


@pytest.mark.slow
def test_lightning_ddp_keeps_our_sampler_and_each_rank_trains_its_own_batches(tmp_path, data_dir):
    """2 CPU processes (`python train.py trainer=ddp`, a subprocess: the DDP launcher re-runs the command)."""
    record = tmp_path / "steps.jsonl"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.batch_size=")]
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *tiny,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "seed=7",
        "data.sampler=identity",
        "data.batch_size=4",
        "data.num_instances=2",
        "+callbacks.recorder._target_=resume_helpers.StepRecorder",
        f"+callbacks.recorder.path={record}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    pids = [
        r.pid
        for r in load(
            "synthetic",
            data_dir,
            num_train_ids=6,
            num_test_ids=4,
            images_per_train_id=4,
            images_per_test_id=4,
            num_distractors=3,
            num_junk=2,
        ).train
    ]
    ranks = [read_steps(record), read_steps(record.with_name(record.name + ".rank1"))]
    assert len(ranks[0]) == len(ranks[1]) == 6  # 6 batches of 2 x 2 per epoch, 3 per rank, 2 epochs
    for rank, steps in enumerate(ranks):
        # exactly the batches our sampler deals this rank: Lightning did not swap in its own sampler
        expected = RandomIdentitySampler(pids, batch_size=4, num_instances=2, seed=7, num_replicas=2, rank=rank)
        assert [i for _, batch in steps for i in batch] == expected.epoch_order(0) + expected.epoch_order(1)
    for epoch in range(2):
        seen = [set(i for _, b in steps[3 * epoch : 3 * epoch + 3] for i in b) for steps in ranks]
        assert not seen[0] & seen[1]  # the ranks never share an image within an epoch here
