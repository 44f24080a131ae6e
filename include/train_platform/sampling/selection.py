"""Choosing which samples a person should label next, from a model's scores.

``Scores`` is what ``python -m ml.serving.batch_inference --out FILE.npz`` writes, read back
and checked (``Scores.load``). ``select`` ranks the candidate samples by a strategy and
takes a budget of them (or, for ``below_confidence``, every one under a confidence
threshold), optionally guaranteeing ``min_per_class`` per predicted class first.

Strategies (``STRATEGIES``) and the ``score`` each selected sample reports, always "higher
is picked first":

| strategy | score |
|---|---|
| ``random`` | a seeded uniform draw in [0, 1) (no model needed) |
| ``least_confidence``, ``margin``, ``entropy`` | that uncertainty (``strategies``) |
| ``bald`` | the mutual information from MC-dropout passes |
| ``below_confidence`` | 1 - confidence, for every candidate whose confidence is below the threshold |
| ``diverse`` | BADGE: the squared gradient-embedding distance to the nearest earlier pick when it was picked |

Score ties rank by sample id, so a selection does not depend on the order rows were read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train_platform.sampling import STRATEGIES, strategies
from train_platform.sampling.exceptions import BudgetError, NoCandidatesError, ScoresError, UnknownStrategyError

# What each strategy needs beyond the class probabilities.
NEEDS_MODEL = frozenset(STRATEGIES) - {"random"}
NEEDS_MC = frozenset({"bald"})
NEEDS_EMBEDDINGS = frozenset({"diverse"})
THRESHOLD_STRATEGIES = frozenset({"below_confidence"})
# Runners-up stored with each pre-label (``tp dataset prelabel --alternatives``).
DEFAULT_ALTERNATIVES = 3
# Rows sum to 1 up to float32 rounding of a softmax over a few hundred classes.
_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Scores:
    """A model's scores of a dataset's samples (row i is ``sample_ids[i]``)."""

    sample_ids: np.ndarray  # (N,) str
    classes: np.ndarray  # (K,) str
    probabilities: np.ndarray  # (N, K)
    embeddings: np.ndarray | None = None  # (N, D)
    mc_probabilities: np.ndarray | None = None  # (S, N, K)

    @classmethod
    def load(cls, path: str | Path) -> "Scores":
        """Read and check an ``.npz`` of ``ml.serving.batch_inference``; ``ScoresError``
        names the file and what is wrong with it."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError) as exc:
            raise ScoresError(f"{path}: cannot read model scores: {exc}") from exc
        missing = [k for k in ("sample_ids", "classes", "probabilities") if k not in arrays]
        if missing:
            raise ScoresError(f"{path}: no array {', '.join(missing)} (has {', '.join(sorted(arrays))})")
        scores = cls(
            sample_ids=arrays["sample_ids"].astype(str),
            classes=arrays["classes"].astype(str),
            probabilities=arrays["probabilities"],
            embeddings=arrays.get("embeddings"),
            mc_probabilities=arrays.get("mc_probabilities"),
        )
        scores.check(str(path))
        return scores

    def check(self, where: str = "scores") -> None:
        n, k = len(self.sample_ids), len(self.classes)
        p = self.probabilities
        if self.sample_ids.ndim != 1 or len(set(self.sample_ids.tolist())) != n:
            raise ScoresError(f"{where}: sample_ids must be distinct, one per row")
        if p.ndim != 2 or p.shape != (n, k):
            raise ScoresError(f"{where}: probabilities have shape {p.shape}, expected ({n}, {k})")
        _check_distributions(p, f"{where}: probabilities")
        if self.embeddings is not None:
            e = self.embeddings
            if e.ndim != 2 or e.shape[0] != n:
                raise ScoresError(f"{where}: embeddings have shape {e.shape}, expected ({n}, D)")
            if not np.isfinite(e).all():
                raise ScoresError(f"{where}: embeddings hold non-finite values")
        if self.mc_probabilities is not None:
            mc = self.mc_probabilities
            if mc.ndim != 3 or mc.shape[1:] != (n, k) or mc.shape[0] < 1:
                raise ScoresError(f"{where}: mc_probabilities have shape {mc.shape}, expected (S, {n}, {k})")
            _check_distributions(mc, f"{where}: mc_probabilities")

    @property
    def predicted(self) -> np.ndarray:
        """The predicted class index of each row."""
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    def alternatives(self, k: int = DEFAULT_ALTERNATIVES) -> list[list[dict[str, float | str]]]:
        """For each row, the ``k`` most probable classes after the predicted one, most probable
        first, as ``{"label", "probability"}``: the runners-up a reviewer may pick instead of
        the pre-label. Ties rank by class order, as ``predicted`` does. Fewer than ``k`` when
        the model knows fewer other classes; ``k`` 0 gives empty lists."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise BudgetError(f"the number of alternatives must be a whole number >= 0, got {k!r}")
        n, classes = self.probabilities.shape
        take = min(int(k), max(classes - 1, 0))
        if take == 0:
            return [[] for _ in range(n)]
        # A stable sort on the negated probabilities: the first column is ``predicted``.
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, 1:take + 1]
        picked = np.take_along_axis(self.probabilities, order, axis=1)
        labels = self.classes
        return [[{"label": str(labels[c]), "probability": float(p)} for c, p in zip(row, probs)]
                for row, probs in zip(order.tolist(), picked.tolist())]


def _check_distributions(p: np.ndarray, where: str) -> None:
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ScoresError(f"{where}: values must be finite probabilities in [0, 1]")
    if p.size and np.abs(p.sum(axis=-1) - 1.0).max() > _SUM_TOLERANCE:
        raise ScoresError(f"{where}: rows must sum to 1")


@dataclass(frozen=True)
class Selected:
    sample_id: str
    score: float

    def as_dict(self) -> dict:
        return {"sample_id": self.sample_id, "score": self.score}


@dataclass(frozen=True)
class Selection:
    strategy: str
    budget: int | None  # None: below_confidence without a cap
    threshold: float | None
    min_per_class: int
    pool: int  # candidates the selection was made from
    selected: list[Selected]

    @property
    def ids(self) -> list[str]:
        return [s.sample_id for s in self.selected]

    def as_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "budget": self.budget,
            "threshold": self.threshold,
            "min_per_class": self.min_per_class,
            "pool": self.pool,
            "selected": [s.as_dict() for s in self.selected],
        }


def check_request(
    strategy: str, budget: int | None, threshold: float | None, min_per_class: int, *, pool: int | None = None
) -> None:
    """The checks that need no model scores (with ``pool``, the number of candidates, also
    those of the budget against it): run before any model is run."""
    if strategy not in STRATEGIES:
        raise UnknownStrategyError(f"unknown sampling strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if strategy in THRESHOLD_STRATEGIES:
        if threshold is None:
            raise BudgetError(f"strategy {strategy} needs --threshold F (a confidence in (0, 1])")
        if not 0.0 < threshold <= 1.0:
            raise BudgetError(f"--threshold must be in (0, 1], got {threshold}")
    else:
        if threshold is not None:
            raise BudgetError(f"--threshold applies to {', '.join(sorted(THRESHOLD_STRATEGIES))} only, not {strategy}")
        if budget is None:
            raise BudgetError(f"strategy {strategy} needs --budget N")
    if budget is not None and budget < 1:
        raise BudgetError(f"--budget must be at least 1, got {budget}")
    if min_per_class < 0:
        raise BudgetError(f"--min-per-class must be >= 0, got {min_per_class}")
    if pool is not None:
        if pool == 0:
            raise NoCandidatesError("no candidate samples to select from")
        if budget is not None and budget > pool:
            raise BudgetError(f"--budget {budget} is larger than the pool of {pool} candidate sample(s)")


def select(
    candidates: Sequence[str],
    scores: Scores | None,
    strategy: str,
    *,
    budget: int | None = None,
    threshold: float | None = None,
    min_per_class: int = 0,
    seed: int = 0,
) -> Selection:
    """Choose among ``candidates`` (sample ids) by ``strategy``.

    ``budget`` samples are taken (at most, for ``below_confidence``, where it is optional).
    With ``min_per_class`` K, the K best of every predicted class are taken first (all of a
    class that has fewer), then the rest of the budget by rank. ``scores`` must cover every
    candidate; only ``random`` without ``min_per_class`` works without them."""
    ids = np.array(sorted(set(candidates)), dtype=str)
    check_request(strategy, budget, threshold, min_per_class, pool=int(ids.size))
    rng = np.random.default_rng(seed)
    if scores is None:
        if strategy in NEEDS_MODEL or min_per_class:
            raise ScoresError(f"strategy {strategy}{' with --min-per-class' if min_per_class else ''} needs model scores (--model)")
        keys = rng.random(ids.size)
        order = np.lexsort((ids, -keys))[:budget]
        return Selection(strategy, budget, threshold, min_per_class, int(ids.size),
                         [Selected(str(ids[i]), float(keys[i])) for i in order])

    rows = _rows_of(ids, scores)
    probs = scores.probabilities[rows].astype(np.float64)
    predicted = probs.argmax(axis=1)
    n_classes = len(scores.classes)
    if budget is not None and min_per_class * n_classes > budget:
        raise BudgetError(
            f"--min-per-class {min_per_class} for {n_classes} classes needs {min_per_class * n_classes} samples,"
            f" more than --budget {budget}"
        )
    if strategy == "diverse":
        if scores.embeddings is None:
            raise ScoresError("strategy diverse needs the model's embeddings in the scores")
        chosen, gains = _diverse(probs, scores.embeddings[rows], predicted, n_classes, budget or 0, min_per_class, rng)
        return Selection(strategy, budget, threshold, min_per_class, int(ids.size),
                         [Selected(str(ids[i]), g) for i, g in zip(chosen, gains)])

    score = _score(strategy, probs, scores, rows, rng)
    order = np.lexsort((ids, -score))  # best first, ties by sample id
    fill = order
    if strategy == "below_confidence":
        fill = order[(1.0 - score[order]) < threshold]
    # The per-class minimum first (it fits in the budget, checked above), then by rank.
    taken = _per_class(order, predicted, n_classes, min_per_class)
    seen = set(taken)
    limit = budget if budget is not None else len(order)
    for i in fill:
        if len(taken) >= limit:
            break
        if int(i) not in seen:
            taken.append(int(i))
            seen.add(int(i))
    taken.sort(key=lambda i: (-score[i], ids[i]))
    return Selection(strategy, budget, threshold, min_per_class, int(ids.size),
                     [Selected(str(ids[i]), float(score[i])) for i in taken])


def _rows_of(ids: np.ndarray, scores: Scores) -> np.ndarray:
    index = {sid: row for row, sid in enumerate(scores.sample_ids.tolist())}
    missing = [sid for sid in ids.tolist() if sid not in index]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ScoresError(f"the model scores have no row for candidate sample(s) {shown}")
    return np.array([index[sid] for sid in ids.tolist()], dtype=np.int64)


def _score(strategy: str, probs: np.ndarray, scores: Scores, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if strategy == "random":
        return rng.random(len(probs))
    if strategy in ("least_confidence", "below_confidence"):
        return strategies.least_confidence(probs)
    if strategy == "margin":
        return strategies.margin(probs)
    if strategy == "entropy":
        return strategies.entropy(probs)
    if strategy == "bald":
        if scores.mc_probabilities is None:
            raise ScoresError("strategy bald needs MC-dropout passes (mc_probabilities) in the scores")
        return strategies.bald(scores.mc_probabilities[:, rows].astype(np.float64))
    raise UnknownStrategyError(f"unknown sampling strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


def _per_class(order: np.ndarray, predicted: np.ndarray, n_classes: int, k: int) -> list[int]:
    """The first ``k`` of each predicted class in ``order`` (all of a class with fewer)."""
    if k <= 0:
        return []
    taken: list[int] = []
    counts = np.zeros(n_classes, dtype=np.int64)
    for i in order:
        c = predicted[i]
        if counts[c] < k:
            counts[c] += 1
            taken.append(int(i))
            if (counts >= k).all():
                break
    return taken


def _diverse(probs, embeddings, predicted, n_classes, budget, k, rng) -> tuple[list[int], list[float]]:
    chosen: list[int] = []
    gains: list[float] = []
    if k > 0:
        for c in range(n_classes):
            picks, g = strategies.badge(probs, embeddings, k, allowed=predicted == c, chosen=chosen, rng=rng)
            chosen += picks
            gains += g
    picks, g = strategies.badge(probs, embeddings, budget - len(chosen), allowed=np.ones(len(probs), bool),
                                chosen=chosen, rng=rng)
    return chosen + picks, gains + g


__all__ = ["STRATEGIES", "Scores", "Selected", "Selection", "check_request", "select"]
