"""Tests of reid.metrics: ranking metrics against per-query references, CUHK03 sampling, the Metric, re-ranking."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest
import torch

from reid.metrics import ReIDMetric, evaluate_features, evaluate_rank, pairwise_distance, re_ranking
from reid.metrics.rerank import nearest_neighbours

# ----------------------------------------------------------------------------------------------
# independent references: plain per-query loops, as torchreid writes them (stable sort for ties)


def reference_market(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """torchreid's eval_market1501 loop, with a stable argsort and fast-reid's mINP."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int64)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(distmat.shape[0]):
        order = indices[q]
        remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        raw = matches[q][~remove]
        if not raw.any():
            continue
        cum = raw.cumsum()
        last = np.nonzero(raw)[0].max()
        all_inp.append(cum[last] / (last + 1.0))
        cmc = np.ones(max_rank)
        cmc[: min(max_rank, raw.size)] = np.minimum(cum, 1)[:max_rank]
        all_cmc.append(cmc)
        precision = cum / np.arange(1.0, raw.size + 1)
        all_ap.append((precision * raw).sum() / raw.sum())
    return np.mean(all_cmc, 0), float(np.mean(all_ap)), float(np.mean(all_inp))


def brute_force_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Average single-shot CMC over every way of picking one gallery image per identity."""
    per_query = []
    for q in range(distmat.shape[0]):
        keep = np.nonzero(~((g_pids == q_pids[q]) & (g_camids == q_camids[q])))[0]
        if not (g_pids[keep] == q_pids[q]).any():
            continue
        groups = [keep[g_pids[keep] == p] for p in np.unique(g_pids[keep])]
        total, count = np.zeros(max_rank), 0
        for choice in itertools.product(*groups):
            chosen = np.array(choice)
            ranked = chosen[np.lexsort((chosen, distmat[q, chosen]))]  # by distance, then index
            hit = np.minimum(np.cumsum(g_pids[ranked] == q_pids[q]), 1)
            cmc = np.ones(max_rank)
            cmc[: min(max_rank, hit.size)] = hit[:max_rank]
            total += cmc
            count += 1
        per_query.append(total / count)
    return np.mean(per_query, 0)


def sampled_cuhk03_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, num_repeats, seed):
    """The documented sampling (uniforms from default_rng(seed), (query, repeat, identity)-major)."""
    rng = np.random.default_rng(seed)
    identities = np.unique(g_pids)
    per_query = []
    for q in range(distmat.shape[0]):
        u = rng.random((num_repeats, identities.size))
        own = (g_pids == q_pids[q]) & (g_camids != q_camids[q])
        if not own.any():
            continue
        cmc = np.zeros(max_rank)
        for r in range(num_repeats):
            chosen = []
            for j, pid in enumerate(identities):
                members = np.nonzero(own)[0] if pid == q_pids[q] else np.nonzero(g_pids == pid)[0]
                if pid == q_pids[q]:  # true matches in (distance, index) order
                    members = members[np.lexsort((members, distmat[q, members]))]
                chosen.append(members[int(np.floor(u[r, j] * members.size))])
            chosen = np.array(chosen)
            ranked = chosen[np.lexsort((chosen, distmat[q, chosen]))]
            hit = np.minimum(np.cumsum(g_pids[ranked] == q_pids[q]), 1)
            full = np.ones(max_rank)
            full[: min(max_rank, hit.size)] = hit[:max_rank]
            cmc += full
        per_query.append(cmc / num_repeats)
    return np.mean(per_query, 0)


def random_problem(rng, num_q, num_g, num_ids, num_cams, ties=False):
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    if ties:
        dist = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
    else:
        dist = rng.random((num_q, num_g), dtype=np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


# ----------------------------------------------------------------------------------------------
# Market protocol


def test_market_hand_worked_example():
    # query 0: pid 1, camera 0. Valid ranking after dropping g1 (pid 1, camera 0):
    # g0 (pid 2), g2 (match, rank 2), g3 (distractor), g4 (match, rank 4), g5
    #   -> AP = (1/2 + 2/4) / 2 = 0.5, first hit at rank 2, mINP = 2 / 4 = 0.5
    # query 1: pid 3, camera 1, all distances equal: ties go by gallery index, so its only
    # match g5 is at rank 6 -> AP = 1/6, first hit at rank 6, mINP = 1/6
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1.0] * 6])
    g_pids = np.array([2, 1, 1, 0, 1, 3])
    g_cams = np.array([0, 0, 1, 2, 2, 0])
    cmc, mean_ap, minp = evaluate_rank(
        dist, np.array([1, 3]), g_pids, np.array([0, 1]), g_cams, max_rank=7, return_minp=True
    )
    np.testing.assert_allclose(cmc, [0, 0.5, 0.5, 0.5, 0.5, 1, 1])
    assert mean_ap == pytest.approx((0.5 + 1 / 6) / 2)
    assert minp == pytest.approx((0.5 + 1 / 6) / 2)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("num_buckets", [None, 1, 3])
def test_market_matches_reference_on_random_problems(ties, num_buckets):
    rng = np.random.default_rng(7 + ties)
    for _ in range(6):
        dist, q_pids, g_pids, q_cams, g_cams = random_problem(rng, 37, 211, 15, 3, ties=ties)
        g_pids[rng.random(g_pids.size) < 0.1] = 0  # distractors: negatives for everyone
        q_pids = np.where(q_pids == 0, 1, q_pids)
        expected = reference_market(dist, q_pids, g_pids, q_cams, g_cams, 20)
        got = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 20, return_minp=True, num_buckets=num_buckets)
        np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=1e-12)
        assert got[1] == pytest.approx(expected[1], abs=1e-12)
        assert got[2] == pytest.approx(expected[2], abs=1e-12)


def test_market_small_internal_steps_give_the_same_result(monkeypatch):
    import reid.metrics.rank as rank_module

    rng = np.random.default_rng(9)
    dist, q_pids, g_pids, q_cams, g_cams = random_problem(rng, 40, 150, 8, 3, ties=True)
    expected = reference_market(dist, q_pids, g_pids, q_cams, g_cams, 10)
    # 2 query rows per step, and the exact same-bucket comparisons split into many pieces
    monkeypatch.setattr(rank_module, "_ELEMENTS_PER_STEP", 300)
    got = evaluate_rank(torch.from_numpy(dist).half(), q_pids, g_pids, q_cams, g_cams, 10, return_minp=True)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-12)
    assert got[1:] == pytest.approx(expected[1:], abs=1e-12)


def test_thread_setting_is_restored_and_does_not_change_results():
    rng = np.random.default_rng(10)
    problem = random_problem(rng, 12, 60, 4, 2)
    before = torch.get_num_threads()
    single = evaluate_rank(*problem, max_rank=5, num_threads=1)
    assert torch.get_num_threads() == before
    default = evaluate_rank(*problem, max_rank=5, num_threads=None)
    np.testing.assert_array_equal(single[0], default[0])
    assert single[1] == default[1]


def test_market_handles_infinite_distances_float64_and_torch_inputs():
    rng = np.random.default_rng(3)
    dist, q_pids, g_pids, q_cams, g_cams = random_problem(rng, 20, 90, 6, 2)
    dist = dist.astype(np.float64)
    dist[rng.random(dist.shape) < 0.2] = np.inf
    dist[rng.random(dist.shape) < 0.05] = -np.inf
    dist[3] = np.inf  # a row without finite values
    expected = reference_market(dist, q_pids, g_pids, q_cams, g_cams, 10)
    got = evaluate_rank(
        torch.from_numpy(dist),
        torch.from_numpy(q_pids),
        torch.from_numpy(g_pids),
        torch.from_numpy(q_cams),
        torch.from_numpy(g_cams),
        10,
        return_minp=True,
    )
    np.testing.assert_allclose(got[0], expected[0], atol=1e-12)
    assert got[1:] == pytest.approx(expected[1:], abs=1e-12)


def test_market_skips_queries_without_match_and_logs_the_count(caplog):
    dist = np.array([[0.3, 0.1], [0.2, 0.4]])
    with caplog.at_level(logging.WARNING, logger="reid.metrics.rank"):
        cmc, mean_ap = evaluate_rank(
            dist, np.array([5, 9]), np.array([5, 7]), np.array([0, 0]), np.array([1, 1]), max_rank=2
        )
    # query 0 finds its match at rank 2; query 1 (pid 9) has none and is skipped
    np.testing.assert_allclose(cmc, [0.0, 1.0])
    assert mean_ap == pytest.approx(0.5)
    assert "1 of 2 queries" in caplog.text


def test_bad_inputs_raise_clear_errors():
    dist = np.zeros((2, 3))
    ids = (np.array([1, 2]), np.array([1, 2, 3]), np.array([0, 0]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(dist, np.array([8, 9]), *ids[1:])
    with pytest.raises(ValueError, match="g_pids has 2 entries but there are 3 gallery"):
        evaluate_rank(dist, ids[0], np.array([1, 2]), *ids[2:])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.array([[0.0, np.nan, 1.0], [0, 0, 0]]), *ids)
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        evaluate_rank(dist, *ids, protocol="duke")
    with pytest.raises(ValueError, match="2-D"):
        evaluate_rank(np.zeros(3), *ids)


# ----------------------------------------------------------------------------------------------
# CUHK03 classic protocol


def tiny_cuhk03_problem(seed):
    rng = np.random.default_rng(seed)
    g_pids = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    g_cams = np.array([0, 1, 1, 0, 1, 0, 1, 1, 1])
    q_pids = np.array([0, 1, 2, 3, 2])
    q_cams = np.array([0, 0, 1, 0, 0])
    dist = rng.integers(0, 5, (5, 9)).astype(np.float64) if seed % 2 else rng.random((5, 9))
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cuhk03_exact_equals_enumeration_of_all_samplings(seed):
    problem = tiny_cuhk03_problem(seed)
    expected = brute_force_cuhk03(*problem, max_rank=5)
    cmc, mean_ap, minp = evaluate_rank(*problem, max_rank=5, protocol="cuhk03", exact=True, return_minp=True)
    np.testing.assert_allclose(cmc, expected, atol=1e-12)
    assert math.isnan(mean_ap) and math.isnan(minp)


def test_cuhk03_sampling_follows_documented_stream_and_converges_to_exact():
    problem = tiny_cuhk03_problem(1)  # integer distances: ties exercised
    looped = sampled_cuhk03_loop(*problem, max_rank=5, num_repeats=7, seed=11)
    cmc, _ = evaluate_rank(*problem, max_rank=5, protocol="cuhk03", num_repeats=7, seed=11)
    np.testing.assert_allclose(cmc, looped, atol=1e-12)
    again, _ = evaluate_rank(*problem, max_rank=5, protocol="cuhk03", num_repeats=7, seed=11)
    other, _ = evaluate_rank(*problem, max_rank=5, protocol="cuhk03", num_repeats=7, seed=12)
    np.testing.assert_array_equal(cmc, again)
    assert not np.array_equal(cmc, other)

    exact, _ = evaluate_rank(*problem, max_rank=5, protocol="cuhk03", exact=True)
    many, _ = evaluate_rank(*problem, max_rank=5, protocol="cuhk03", num_repeats=20000, seed=0)
    # 5 queries x 20000 draws: the standard error of each entry is below 0.002
    np.testing.assert_allclose(many, exact, atol=0.01)


def test_cuhk03_single_image_per_identity_is_deterministic_and_equals_market_cmc():
    rng = np.random.default_rng(5)
    g_pids = np.arange(12)
    g_cams = np.ones(12, dtype=np.int64)
    q_pids = rng.permutation(12)[:6]
    q_cams = np.zeros(6, dtype=np.int64)
    dist = rng.random((6, 12))
    sampled, _ = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10, "cuhk03", num_repeats=3)
    exact, _ = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10, "cuhk03", exact=True)
    market = reference_market(dist, q_pids, g_pids, q_cams, g_cams, 10)[0]
    np.testing.assert_allclose(sampled, market, atol=1e-12)
    np.testing.assert_allclose(exact, market, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# features -> metrics


def test_pairwise_distance_hand_values():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    torch.testing.assert_close(pairwise_distance(x, y, "euclidean"), torch.tensor([[25.0, 1.0], [20.0, 0.0]]))
    cos = pairwise_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0], [3.0, 0.0], [-1.0, 0.0]]), "cosine")
    torch.testing.assert_close(cos, torch.tensor([[1.0, 0.0, 2.0]]))
    with pytest.raises(ValueError, match="unknown distance metric"):
        pairwise_distance(x, y, "manhattan")


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_evaluate_features_matches_full_distance_matrix(metric):
    rng = np.random.default_rng(2)
    q_feats, g_feats = rng.normal(size=(23, 8)).astype(np.float32), rng.normal(size=(61, 8)).astype(np.float32)
    _, q_pids, g_pids, q_cams, g_cams = random_problem(rng, 23, 61, 5, 3)
    dist = pairwise_distance(torch.from_numpy(q_feats), torch.from_numpy(g_feats), metric).numpy()
    cmc, mean_ap, minp = reference_market(dist, q_pids, g_pids, q_cams, g_cams, 10)
    for chunk_size in (1, 4, None):
        out = evaluate_features(
            q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, metric=metric, max_rank=10, chunk_size=chunk_size
        )
        np.testing.assert_allclose(out["cmc"], cmc, atol=1e-12)
        assert (out["rank1"], out["rank5"], out["rank10"]) == pytest.approx((cmc[0], cmc[4], cmc[9]))
        assert math.isnan(out["rank20"])  # beyond max_rank
        assert (out["mAP"], out["mINP"]) == pytest.approx((mean_ap, minp), abs=1e-12)


def test_evaluate_features_cuhk03_does_not_depend_on_chunking():
    rng = np.random.default_rng(4)
    q_feats, g_feats = rng.normal(size=(9, 4)), rng.normal(size=(30, 4))
    _, q_pids, g_pids, q_cams, g_cams = random_problem(rng, 9, 30, 4, 2)
    results = [
        evaluate_features(
            q_feats,
            g_feats,
            q_pids,
            g_pids,
            q_cams,
            g_cams,
            protocol="cuhk03",
            max_rank=5,
            chunk_size=c,
            num_repeats=4,
            seed=3,
        )["cmc"]
        for c in (1, 2, None)
    ]
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    with pytest.raises(TypeError, match="unknown evaluation options"):
        evaluate_features(q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, repeats=3)


# ----------------------------------------------------------------------------------------------
# the torchmetrics Metric


def metric_inputs(seed=0):
    rng = np.random.default_rng(seed)
    q, g = 14, 40
    feats = torch.from_numpy(rng.normal(size=(q + g, 6)).astype(np.float32))
    pids = torch.from_numpy(np.concatenate([rng.integers(0, 4, q), rng.integers(0, 4, g)]))
    cams = torch.from_numpy(rng.integers(0, 3, q + g))
    is_query = torch.arange(q + g) < q
    indices = torch.cat([torch.arange(q), torch.arange(g)])
    perm = torch.from_numpy(rng.permutation(q + g))  # queries and gallery mixed in batches
    return feats[perm], pids[perm], cams[perm], is_query[perm], indices[perm]


def test_reid_metric_equals_evaluate_rank_and_ignores_batching_and_repeats():
    feats, pids, cams, is_query, indices = metric_inputs()
    q_order = torch.argsort(torch.where(is_query, indices, 10_000))[: int(is_query.sum())]
    g_order = torch.argsort(torch.where(~is_query, indices, 10_000))[: int((~is_query).sum())]
    dist = pairwise_distance(feats[q_order], feats[g_order])
    cmc, mean_ap, minp = evaluate_rank(
        dist, pids[q_order], pids[g_order], cams[q_order], cams[g_order], max_rank=10, return_minp=True
    )

    whole = ReIDMetric(max_rank=10)
    whole.update(feats, pids, cams, is_query, indices)
    result = whole.compute()
    np.testing.assert_allclose(result["cmc"].numpy(), cmc, atol=1e-6)
    assert float(result["mAP"]) == pytest.approx(mean_ap, abs=1e-6)
    assert float(result["mINP"]) == pytest.approx(minp, abs=1e-6)
    assert float(result["rank1"]) == pytest.approx(cmc[0], abs=1e-6)

    batched = ReIDMetric(max_rank=10)
    for part in torch.split(torch.arange(len(feats)), 5):
        batched.update(feats[part], pids[part], cams[part], is_query[part], indices[part])
    # a DistributedSampler pads with repeats: feed the first 7 samples a second time
    batched.update(feats[:7], pids[:7], cams[:7], is_query[:7], indices[:7])
    repeated = batched.compute()
    for key in ("rank1", "rank5", "mAP", "mINP"):
        assert float(repeated[key]) == float(result[key])
    torch.testing.assert_close(repeated["cmc"], result["cmc"])


def test_reid_metric_rejects_conflicting_repeats_and_missing_splits():
    feats, pids, cams, is_query, indices = metric_inputs()
    metric = ReIDMetric(max_rank=5)
    metric.update(feats, pids, cams, is_query, indices)
    metric.update(feats[:1], pids[:1] + 100, cams[:1], is_query[:1], indices[:1])
    with pytest.raises(ValueError, match="different pids"):
        metric.compute()
    only_gallery = ReIDMetric(max_rank=5)
    gallery = ~is_query
    only_gallery.update(feats[gallery], pids[gallery], cams[gallery], is_query[gallery], indices[gallery])
    with pytest.raises(ValueError, match="both query and gallery"):
        only_gallery.compute()


def test_reid_metric_cuhk03_reports_nan_map():
    feats, pids, cams, is_query, indices = metric_inputs(1)
    metric = ReIDMetric(protocol="cuhk03", max_rank=5, exact=True)
    metric.update(feats, pids, cams, is_query, indices)
    out = metric.compute()
    assert math.isnan(float(out["mAP"])) and math.isnan(float(out["mINP"]))
    assert 0.0 < float(out["rank1"]) <= float(out["rank5"]) <= 1.0


# ----------------------------------------------------------------------------------------------
# re-ranking


def loop_re_ranking(q_g, q_q, g_g, k1, k2, lam, strict=False):
    """Straightforward per-sample version of the module's formulation, with Python sets."""
    d = np.block([[q_q, q_g], [q_g.T, g_g]])
    n, nq = len(d), len(q_q)
    ranked = np.argsort(d, axis=1, kind="stable")

    def reciprocal(p, k):
        return {g for g in ranked[p, : k + 1] if p in ranked[g, : k + 1]}

    kernel = d / d.max(1, keepdims=True)
    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for p in range(n):
        base = reciprocal(p, k1)
        expanded = set(base)
        for q in base:
            candidate = reciprocal(q, half)
            shared = len(base & candidate)
            if (3 * shared > 2 * len(candidate)) if strict else (3 * shared >= 2 * len(candidate)):
                expanded |= candidate
        members = sorted(expanded)
        w = np.exp(-kernel[p, members])
        v[p, members] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[ranked[p, :k2]].mean(0) for p in range(n)])
    jaccard = np.array(
        [
            [1 - np.minimum(v[i], v[nq + j]).sum() / np.maximum(v[i], v[nq + j]).sum() for j in range(n - nq)]
            for i in range(nq)
        ]
    )
    return (1 - lam) * jaccard + lam * q_g


def split_distances(points, num_q):
    d = ((points[:, None] - points[None]) ** 2).sum(-1)
    return d[:num_q, num_q:], d[:num_q, :num_q], d[num_q:, num_q:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_re_ranking_agrees_with_loop_implementation(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(26, 3))
    if seed == 2:
        points = np.round(points)  # duplicate points: ties in the neighbour lists
    parts = split_distances(points, 7)
    for k1, k2, lam, strict in [(4, 2, 0.3, False), (5, 1, 0.0, True), (20, 6, 0.3, False)]:
        got = re_ranking(*parts, k1=k1, k2=k2, lambda_value=lam, strict_expansion=strict)
        np.testing.assert_allclose(got, loop_re_ranking(*parts, k1, k2, lam, strict), atol=1e-12)


def test_re_ranking_lambda_one_returns_original_distance():
    parts = split_distances(np.random.default_rng(3).normal(size=(12, 4)), 4)
    np.testing.assert_array_equal(re_ranking(*parts, k1=3, k2=2, lambda_value=1.0), parts[0])


def test_re_ranking_pulls_a_true_neighbour_closer():
    # probe p with its identity's images a1, a2, t; a false match f beside another cluster (b1-b3).
    # f is nearer to p than t is (2.0 < 2.2), but with k1 = 3:
    #  - R(p) = {p, a1, a2}; f is not reciprocal (p is not among f's 3 nearest: b3, b1, b2);
    #  - R(a2, 2) = {a2, t, a1} shares 2 >= 2/3 * 3 samples with R(p), so t joins R*(p);
    #  - nothing of f's neighbourhood meets p's: d_J(p, f) = 1, final = 0.7 * 1 + 0.3 * 2.0 = 1.3.
    names = ["p", "t", "a1", "a2", "f", "b1", "b2", "b3"]
    points = np.array([(0, 0), (2.2, 0), (1.0, 0.6), (1.2, -0.6), (-2.0, 0), (-3.0, 0.5), (-3.0, -0.5), (-2.6, 0.0)])
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    assert [names[i] for i in nearest_neighbours(d, 4)[4]] == ["f", "b3", "b1", "b2"]
    q_g, q_q, g_g = d[:1, 1:], d[:1, :1], d[1:, 1:]
    t, f = names.index("t") - 1, names.index("f") - 1
    assert q_g[0, f] < q_g[0, t]
    final = re_ranking(q_g, q_q, g_g, k1=3, k2=1, lambda_value=0.3)
    assert final[0, f] == pytest.approx(1.3)
    assert final[0, t] < final[0, f]
    # with the authors' strict ">" rule t is not added to R*(p): it still shares a1, a2 with p,
    # but is pulled less
    strict = re_ranking(q_g, q_q, g_g, k1=3, k2=1, lambda_value=0.3, strict_expansion=True)
    assert final[0, t] < strict[0, t] < strict[0, f] == pytest.approx(1.3)


def test_re_ranking_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="q_q_dist must be"):
        re_ranking(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((3, 3)))
