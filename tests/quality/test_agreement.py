"""Annotator agreement: kappa on hand-made annotations, worked out by hand; the annotations
of several annotators found on a dataset's branches."""

from __future__ import annotations

import pytest

from tests.quality.conftest import OWNER
from train_platform.datasets import open_dataset
from train_platform.quality.agreement import agreement, collect

W, R = "walking", "running"


def test_cohen_kappa_of_a_textbook_table():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15.
    # p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.2 / 0.5 = 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    result = agreement({f"s{i}": {"A": a, "B": b} for i, (a, b) in enumerate(pairs)})
    assert result.method == "cohen" and result.kappa == pytest.approx(0.4)
    assert result.samples == 50 and len(result.disagreements) == 15


def test_fleiss_kappa_of_the_classic_fourteen_rater_table():
    # Fleiss (1971) as worked out on Wikipedia: 10 subjects, 14 raters, 5 categories: 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    labels = {}
    for i, counts in enumerate(table):
        ratings = [category for category, n in zip("12345", counts) for _ in range(n)]
        labels[f"s{i}"] = {f"rater{j}": label for j, label in enumerate(ratings)}
    result = agreement(labels)
    assert result.method == "fleiss" and result.raters == 14 and result.samples == 10
    assert result.kappa == pytest.approx(0.210, abs=5e-4)


def test_fleiss_uses_the_most_common_number_of_raters_and_lists_pairs():
    labels = {"s1": {"a": W, "b": W, "c": W}, "s2": {"a": R, "b": R, "c": W}, "s3": {"a": R, "b": R, "c": R},
              "s4": {"a": W, "b": R}}
    result = agreement(labels)
    # Over s1..s3 (three raters each): P = (1 + 1/3 + 1) / 3 = 7/9; p_W = 4/9, p_R = 5/9;
    # P_e = 41/81; kappa = (7/9 - 41/81) / (1 - 41/81) = 22/40
    assert result.raters == 3 and result.samples == 3 and result.kappa == pytest.approx(22 / 40)
    assert result.disagreements == ("s2", "s4") and result.annotated_by_several == 4
    assert {tuple(p["annotators"]) for p in result.pairs} == {("a", "b"), ("a", "c"), ("b", "c")}


def test_kappa_is_undefined_when_every_rating_is_one_label():
    result = agreement({"s1": {"a": W, "b": W}, "s2": {"a": W, "b": W}})
    assert result.kappa is None and "undefined" in result.reason
    assert agreement({"s1": {"a": W}}).method is None


def _label(name: str, user: str, labels: dict[str, str], branch: str | None = None) -> None:
    open_dataset(name, user=user).label(labels, branch)


def test_annotations_of_several_annotators_come_from_the_branches(basic_motions):
    name = basic_motions
    owner = open_dataset(name, user=OWNER)
    for user in ("bob", "carol"):
        owner.grant(user, "writer")
    ids = [f"basicmotions-train-{n:05d}" for n in range(10)]
    alice = [W, W, W, W, W, R, R, R, R, R]
    bob = [W, W, W, W, R, R, R, R, R, W]
    _label(name, OWNER, dict(zip(ids, alice)))  # on user/alice
    owner.merge("user/alice")  # main now carries alice's labels too
    _label(name, "bob", dict(zip(ids, bob)))  # user/bob, branched from main after the merge

    found = collect(owner, set(ids) | {"basicmotions-train-00020"})
    assert set(found) == set(ids)  # imported labels are no annotator's
    assert found[ids[4]] == {"alice": W, "bob": R}
    # Hand count: agree on 8 of 10 (p_o 0.8); both say walking half the time (p_e 0.5): 0.6.
    two = agreement(found)
    assert (two.method, two.annotators, two.samples) == ("cohen", ("alice", "bob"), 10)
    assert two.kappa == pytest.approx(0.6) and two.disagreements == (ids[4], ids[9])

    # bob changes his mind on sample 9 on a newer branch: the newest head's label counts.
    owner_bob = open_dataset(name, user="bob")
    owner_bob.branch("bob-second", "user/bob")
    _label(name, "bob", {ids[9]: R}, "bob-second")
    # agree on 9 of 10; alice W 5/10, bob W 4/10: p_e = 0.5 * 0.4 + 0.5 * 0.6 = 0.5; kappa 0.8
    assert agreement(collect(owner, set(ids))).kappa == pytest.approx(0.8)

    carol = [W, W, W, R, R, R, R, R, R, W]
    _label(name, "carol", dict(zip(ids, carol)))
    three = agreement(collect(owner, set(ids)))
    # Ratings (alice, bob, carol): 7 samples unanimous, 3 split 2:1 -> P = (7 + 3/3) / 10 = 0.8;
    # walking 13 of 30 -> P_e = (13^2 + 17^2) / 900 = 458/900; kappa = (0.8 - 458/900) / (442/900)
    assert (three.method, three.raters, three.samples) == ("fleiss", 3, 10)
    assert three.kappa == pytest.approx((0.8 - 458 / 900) / (442 / 900))
