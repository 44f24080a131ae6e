"""The strategies on hand-made probabilities and embeddings, checked against scikit-activeml
where it computes the same thing; selection with budgets, thresholds and per-class minimums;
the 100,000-sample pool within 30 s."""

from __future__ import annotations

import time

import numpy as np
import pytest

from train_platform.sampling import strategies
from train_platform.sampling.exceptions import BudgetError, NoCandidatesError, ScoresError, UnknownStrategyError
from train_platform.sampling.selection import STRATEGIES, Scores, select

# Rows chosen so that the three uncertainty measures disagree on the order.
HAND = np.array([
    [1.00, 0.00, 0.00],  # a: certain
    [0.50, 0.50, 0.00],  # b: a coin flip between two classes (smallest margin)
    [0.40, 0.30, 0.30],  # c: least confident of the three-way ones
    [0.60, 0.20, 0.20],  # d
    [0.34, 0.33, 0.33],  # e: nearly uniform (most entropy, least confidence)
    [0.47, 0.45, 0.08],  # f: small margin, less entropy than d
])
IDS = ["a", "b", "c", "d", "e", "f"]


def scores_of(p, *, embeddings=None, mc=None, ids=None) -> Scores:
    ids = ids or [f"s{i:03d}" for i in range(len(p))]
    return Scores(np.array(ids), np.array([f"k{i}" for i in range(p.shape[1])]), np.asarray(p, dtype=np.float32),
                  None if embeddings is None else np.asarray(embeddings, dtype=np.float32),
                  None if mc is None else np.asarray(mc, dtype=np.float32))


def ranking(strategy: str, p=HAND, **kw) -> list[str]:
    sel = select(IDS, scores_of(p, ids=IDS, **kw), strategy, budget=len(IDS))
    return sel.ids


def test_uncertainty_rankings_on_hand_made_probabilities():
    assert ranking("least_confidence") == ["e", "c", "f", "b", "d", "a"]
    assert ranking("margin") == ["b", "e", "f", "c", "d", "a"]
    assert ranking("entropy") == ["e", "c", "d", "f", "b", "a"]
    # The certain sample scores 0 under every measure.
    for name in ("least_confidence", "margin", "entropy"):
        sel = select(IDS, scores_of(HAND, ids=IDS), name, budget=6)
        assert sel.selected[-1].sample_id == "a" and sel.selected[-1].score == pytest.approx(0.0, abs=1e-6)


def test_uncertainty_scores_equal_scikit_activeml():
    from skactiveml.pool import uncertainty_scores

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5) * 0.5, size=500)
    np.testing.assert_allclose(strategies.least_confidence(p), uncertainty_scores(p, method="least_confident"), atol=1e-12)
    np.testing.assert_allclose(strategies.margin(p), uncertainty_scores(p, method="margin_sampling"), atol=1e-12)
    np.testing.assert_allclose(strategies.entropy(p), uncertainty_scores(p, method="entropy"), atol=1e-9)


def test_bald_ranks_disagreement_between_passes_above_shared_doubt():
    passes = np.array([
        # sample 0: every pass unsure the same way (aleatoric): no information to gain
        # sample 1: passes confident but contradicting each other: the most to gain
        # sample 2: every pass confident and agreeing
        # sample 3: passes disagree mildly
        [[0.5, 0.5], [1.0, 0.0], [0.95, 0.05], [0.7, 0.3]],
        [[0.5, 0.5], [0.0, 1.0], [0.95, 0.05], [0.4, 0.6]],
        [[0.5, 0.5], [1.0, 0.0], [0.95, 0.05], [0.7, 0.3]],
        [[0.5, 0.5], [0.0, 1.0], [0.95, 0.05], [0.4, 0.6]],
    ])
    scores = strategies.bald(passes)
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert scores[1] == pytest.approx(np.log(2), abs=1e-6)
    assert scores[2] == pytest.approx(0.0, abs=1e-9)
    assert 0 < scores[3] < scores[1]
    ids = ["aleatoric", "contradicting", "agreeing", "mild"]
    sel = select(ids, scores_of(passes.mean(0), mc=passes, ids=ids), "bald", budget=2)
    assert sel.ids == ["contradicting", "mild"]


def test_bald_equals_scikit_activeml():
    from skactiveml.pool import batch_bald

    rng = np.random.default_rng(1)
    mc = rng.dirichlet(np.ones(4), size=(8, 300))  # (S, N, K)
    # batch_bald with a batch of one is BALD itself; it clips probabilities at 1e-7.
    theirs = batch_bald(mc.copy(), batch_size=1)[0]
    np.testing.assert_allclose(strategies.bald(np.clip(mc, 1e-7, 1)), theirs, atol=1e-6)


def test_bald_needs_mc_passes():
    with pytest.raises(ScoresError, match="bald needs MC-dropout passes"):
        select(IDS, scores_of(HAND, ids=IDS), "bald", budget=2)


def _clusters(n_per=20, seed=0):
    """Three tight, far-apart clusters of embeddings; every sample uncertain."""
    rng = np.random.default_rng(seed)
    centers = np.array([[100.0, 0, 0, 0], [0, 100.0, 0, 0], [0, 0, 100.0, 0]])
    emb = np.concatenate([c + rng.normal(0, 0.01, (n_per, 4)) for c in centers])
    p = np.tile([0.5, 0.3, 0.2], (len(emb), 1))
    return p, emb, np.repeat([0, 1, 2], n_per)


def test_diverse_takes_one_sample_per_cluster():
    p, emb, cluster = _clusters()
    for seed in range(5):
        sel = select([f"s{i:03d}" for i in range(len(p))], scores_of(p, embeddings=emb), "diverse", budget=3, seed=seed)
        picked = [int(s.sample_id[1:]) for s in sel.selected]
        assert sorted(cluster[picked]) == [0, 1, 2], (seed, picked)
    # An uncertainty-only strategy takes all three from wherever the ties fall.
    sel = select([f"s{i:03d}" for i in range(len(p))], scores_of(p, embeddings=emb), "least_confidence", budget=3)
    assert sorted(cluster[[int(s.sample_id[1:]) for s in sel.selected]]) == [0, 0, 0]


def test_diverse_prefers_uncertain_samples_over_confident_ones():
    # Two far-apart groups of the same size; one the model is sure about (gradient ~0).
    rng = np.random.default_rng(2)
    emb = np.concatenate([rng.normal(0, 1, (50, 8)) + 10, rng.normal(0, 1, (50, 8)) - 10])
    p = np.concatenate([np.tile([0.999, 0.0005, 0.0005], (50, 1)), np.tile([0.4, 0.35, 0.25], (50, 1))])
    ids = [f"s{i:03d}" for i in range(100)]
    sel = select(ids, scores_of(p, embeddings=emb), "diverse", budget=10, seed=0)
    uncertain = [int(i[1:]) >= 50 for i in sel.ids]
    assert sum(uncertain) >= 9, sel.ids
    # The first pick is the longest gradient embedding.
    a = p - np.eye(3)[p.argmax(1)]
    norms = (a * a).sum(1) * (emb * emb).sum(1)
    assert sel.ids[0] == ids[int(np.argmax(norms))]


def test_diverse_distances_are_those_of_explicit_gradient_embeddings():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(4), size=60)
    emb = rng.normal(size=(60, 5))
    picks, gains = strategies.badge(p, emb, 6, allowed=np.ones(60, bool), rng=np.random.default_rng(0))
    a = p - np.eye(4)[p.argmax(1)]
    g = (a[:, :, None] * emb[:, None, :]).reshape(60, -1)  # the (N, K*D) matrix BADGE defines
    assert gains[0] == pytest.approx(float((g[picks[0]] ** 2).sum()), rel=1e-4)
    for k in range(1, 6):
        d2 = ((g[picks[:k]] - g[picks[k]]) ** 2).sum(1).min()
        assert gains[k] == pytest.approx(float(d2), rel=1e-3, abs=1e-6)
    assert len(set(picks)) == 6


def test_diverse_needs_embeddings():
    with pytest.raises(ScoresError, match="diverse needs the model's embeddings"):
        select(IDS, scores_of(HAND, ids=IDS), "diverse", budget=2)


def test_random_is_seeded_and_needs_no_model():
    ids = [f"s{i:03d}" for i in range(50)]
    first = select(ids, None, "random", budget=10, seed=7)
    assert select(list(reversed(ids)), None, "random", budget=10, seed=7).ids == first.ids  # order of reading is irrelevant
    assert select(ids, None, "random", budget=10, seed=8).ids != first.ids
    assert len(set(first.ids)) == 10 and set(first.ids) <= set(ids)


def test_below_confidence_takes_every_sample_under_the_threshold():
    sel = select(IDS, scores_of(HAND, ids=IDS), "below_confidence", threshold=0.5)
    assert sel.ids == ["e", "c", "f"]  # confidences 0.34, 0.40, 0.47; b's 0.50 is not below
    assert [s.score for s in sel.selected] == pytest.approx([0.66, 0.60, 0.53], abs=1e-6)
    capped = select(IDS, scores_of(HAND, ids=IDS), "below_confidence", threshold=0.5, budget=2)
    assert capped.ids == ["e", "c"]


def test_min_per_class_guarantees_each_predicted_class():
    # 30 samples predicted class 0 and very uncertain, 5 predicted class 1, 2 predicted class
    # 2, both fairly confident: margin alone would take only class 0.
    p = np.concatenate([np.tile([0.40, 0.35, 0.25], (30, 1)), np.tile([0.1, 0.8, 0.1], (5, 1)),
                        np.tile([0.05, 0.05, 0.9], (2, 1))])
    p[30:35, 1] -= np.linspace(0, 0.04, 5)
    p[30:35, 0] += np.linspace(0, 0.04, 5)
    ids = [f"s{i:03d}" for i in range(len(p))]
    plain = select(ids, scores_of(p), "margin", budget=9)
    assert all(int(i[1:]) < 30 for i in plain.ids)
    for strategy in ("margin", "least_confidence", "entropy", "random", "diverse"):
        emb = np.random.default_rng(0).normal(size=(len(p), 4))
        sel = select(ids, scores_of(p, embeddings=emb), strategy, budget=9, min_per_class=3)
        predicted = p.argmax(1)[[int(i[1:]) for i in sel.ids]]
        counts = np.bincount(predicted, minlength=3)
        # Class 2 has only two samples: both are taken ("where possible").
        assert counts[0] >= 3 and counts[1] >= 3 and counts[2] == 2, (strategy, counts)
        assert len(sel.ids) == 9 and len(set(sel.ids)) == 9
    # Among class 1, margin takes its least certain three.
    sel = select(ids, scores_of(p), "margin", budget=9, min_per_class=3)
    assert [i for i in sel.ids if 30 <= int(i[1:]) < 35] == ["s034", "s033", "s032"]
    # A threshold strategy adds the per-class minimum to what falls under the threshold.
    sel = select(ids, scores_of(p), "below_confidence", threshold=0.5, min_per_class=1)
    predicted = p.argmax(1)[[int(i[1:]) for i in sel.ids]]
    assert np.bincount(predicted, minlength=3).tolist() == [30, 1, 1]


def test_selection_refuses_bad_requests_by_name():
    sc = scores_of(HAND, ids=IDS)
    with pytest.raises(UnknownStrategyError, match="unknown sampling strategy 'smart'; known: random, least_confidence"):
        select(IDS, sc, "smart", budget=2)
    with pytest.raises(BudgetError, match="--budget 7 is larger than the pool of 6 candidate"):
        select(IDS, sc, "margin", budget=7)
    with pytest.raises(BudgetError, match="--budget must be at least 1"):
        select(IDS, sc, "margin", budget=0)
    with pytest.raises(BudgetError, match="strategy margin needs --budget"):
        select(IDS, sc, "margin")
    with pytest.raises(BudgetError, match="below_confidence needs --threshold"):
        select(IDS, sc, "below_confidence")
    with pytest.raises(BudgetError, match="--threshold applies to below_confidence only"):
        select(IDS, sc, "margin", budget=2, threshold=0.5)
    with pytest.raises(BudgetError, match=r"--min-per-class 2 for 3 classes needs 6 samples, more than --budget 5"):
        select(IDS, sc, "margin", budget=5, min_per_class=2)
    with pytest.raises(NoCandidatesError):
        select([], sc, "margin", budget=1)
    with pytest.raises(ScoresError, match="no row for candidate sample"):
        select(["a", "zz"], sc, "margin", budget=1)
    with pytest.raises(ScoresError, match="strategy margin needs model scores"):
        select(IDS, None, "margin", budget=1)


def test_scores_file_is_checked(tmp_path):
    good = dict(sample_ids=np.array(IDS), classes=np.array(["x", "y", "z"]), probabilities=HAND)
    np.savez(tmp_path / "ok.npz", **good)
    assert Scores.load(tmp_path / "ok.npz").probabilities.shape == (6, 3)
    np.savez(tmp_path / "sum.npz", **{**good, "probabilities": HAND * 0.5})
    with pytest.raises(ScoresError, match="sum.npz: probabilities: rows must sum to 1"):
        Scores.load(tmp_path / "sum.npz")
    np.savez(tmp_path / "shape.npz", **{**good, "classes": np.array(["x", "y"])})
    with pytest.raises(ScoresError, match=r"probabilities have shape \(6, 3\), expected \(6, 2\)"):
        Scores.load(tmp_path / "shape.npz")
    np.savez(tmp_path / "missing.npz", sample_ids=np.array(IDS))
    with pytest.raises(ScoresError, match="no array classes, probabilities"):
        Scores.load(tmp_path / "missing.npz")
    with pytest.raises(ScoresError, match="cannot read model scores"):
        Scores.load(tmp_path / "absent.npz")


@pytest.mark.slow
def test_a_budget_from_100k_scored_samples_within_30_seconds():
    rng = np.random.default_rng(0)
    n, k, d, s = 100_000, 10, 64, 20
    logits = rng.normal(0, 2, (n, k))
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    mc = np.exp(logits[None] + rng.normal(0, 1, (s, n, k)))
    mc /= mc.sum(-1, keepdims=True)
    ids = [f"s{i:06d}" for i in range(n)]
    sc = scores_of(p, embeddings=rng.normal(size=(n, d)), mc=mc, ids=ids)
    for strategy in STRATEGIES:
        kw = {"threshold": 0.3} if strategy == "below_confidence" else {"budget": 1000}
        started = time.perf_counter()
        sel = select(ids, sc, strategy, min_per_class=10, **kw)
        took = time.perf_counter() - started
        assert took <= 30.0, f"{strategy}: {took:.1f} s"
        assert len(sel.ids) == len(set(sel.ids)) and (strategy == "below_confidence" or len(sel.ids) == 1000)
