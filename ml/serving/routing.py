"""Which model version answers a request: production, or the A/B candidate by weight.

With a ``key`` the choice is a hash of the experiment id and the key, so one client always
sees the same version during an experiment (sticky) and a new experiment reshuffles.
Without a key each request is assigned at random with the same weights.
"""

from __future__ import annotations

import hashlib
import random

from train_platform.registry import ServingState


def ab_bucket(experiment_id: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by (experiment, key)."""
    digest = hashlib.blake2b(f"{experiment_id}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


_RNG = random.Random()


def choose_version(state: ServingState, key: str | None, rng: random.Random = _RNG) -> int:
    exp = state.experiment
    if exp is None:
        return state.production
    u = ab_bucket(exp.id, key) if key else rng.random()
    return exp.candidate_version if u < exp.candidate_weight else exp.control_version
