"""The data expectations on real BasicMotions recordings: clean data passes every check; on a
branch holding one fault per check, each check names exactly the samples carrying its fault,
and the check writes nothing to the dataset."""

from __future__ import annotations

import numpy as np

from tests.quality.conftest import OWNER, append_unchecked, rows_by_id, sample_row
from train_platform.datasets import open_dataset
from train_platform.quality.check import CheckConfig, check_dataset

CHECKS = ["unique_ids", "labels_in_label_set", "valid_status", "valid_label_source", "length_within_bounds",
          "channels_within_bounds", "finite_values", "no_flat_channels", "within_robust_range",
          "no_duplicate_series", "duplicates_agree_on_label"]


def sid(n: int) -> str:
    return f"basicmotions-train-{n:05d}"


def test_clean_recordings_pass_every_check(basic_motions, tmp_path):
    result = check_dataset(basic_motions, CheckConfig(), user=OWNER)
    assert [c.name for c in result.checks] == CHECKS
    assert all(c.success and not c.sample_ids for c in result.checks), [c for c in result.checks if not c.success]
    assert result.bounds["label_set"] == ["badminton", "running", "standing", "walking"]
    assert (result.bounds["min_length"], result.bounds["max_length"], result.bounds["channels"]) == (25, 400, [6])
    assert result.labels.considered == 40 and len(result.labels.issues) <= 1
    assert result.passed and result.score >= 0.975


def _damage(name: str) -> dict[str, set[str]]:
    """One fault per check on branch `faults`; returns check -> the samples that carry its fault."""
    dataset = open_dataset(name, user=OWNER)
    dataset.branch("faults")
    rows = rows_by_id(name)
    reversed_of = {n: rows[sid(n)]["series"][::-1].copy() for n in (1, 3, 4)}  # new, in-range, unique series

    truncated = rows[sid(5)]["series"][:10]
    five_channels = rows[sid(6)]["series"][:, :5]
    with_nan = rows[sid(7)]["series"].copy()
    with_nan[50, 0] = np.nan
    flat = rows[sid(8)]["series"].copy()
    flat[:, 2] = 0.5
    spike = rows[sid(9)]["series"].copy()
    spike[10, 1] = 1e4
    import pyarrow as pa

    dataset.upsert(pa.concat_tables([sample_row(rows[sid(5)], truncated), sample_row(rows[sid(6)], five_channels),
                                     sample_row(rows[sid(7)], with_nan), sample_row(rows[sid(8)], flat),
                                     sample_row(rows[sid(9)], spike)]), "faults")
    dataset.label({sid(2): "walkng"}, "faults")  # a typo: a label no other sample carries
    other = {"walking": "running", "running": "walking", "standing": "badminton", "badminton": "standing"}
    dataset.append(pa.concat_tables([
        sample_row(rows[sid(10)], sample_id="copy-a"),  # the same recording twice, same label
        sample_row(rows[sid(11)], sample_id="copy-b", label=other[rows[sid(11)]["label"]]),  # ... another label
    ]), "faults")
    # Past the platform's write checks, as a foreign writer could leave them.
    append_unchecked(name, "faults", sample_row(rows[sid(1)], reversed_of[1]))  # a second row with id 00001
    append_unchecked(name, "faults", sample_row(rows[sid(3)], reversed_of[3], sample_id="bad-status"),
                     status=["archived"])
    append_unchecked(name, "faults", sample_row(rows[sid(4)], reversed_of[4], sample_id="bad-source"),
                     label_source=["crowd"])
    return {
        "unique_ids": {sid(1)},
        "labels_in_label_set": {sid(2)},
        "valid_status": {"bad-status"},
        "valid_label_source": {"bad-source"},
        "length_within_bounds": {sid(5)},
        "channels_within_bounds": {sid(6)},
        "finite_values": {sid(7)},
        "no_flat_channels": {sid(8)},
        "within_robust_range": {sid(9)},
        "no_duplicate_series": {sid(10), "copy-a", sid(11), "copy-b"},
        "duplicates_agree_on_label": {sid(11), "copy-b"},
    }


def test_each_expectation_names_the_samples_carrying_its_fault(basic_motions):
    expected = _damage(basic_motions)
    dataset = open_dataset(basic_motions, user=OWNER)
    refs_before = dataset.refs()
    log_before = [e.snapshot_id for e in dataset.log("faults")]

    result = check_dataset(f"{basic_motions}@faults", CheckConfig(), user=OWNER)

    found = {c.name: set(c.sample_ids) for c in result.checks}
    assert found == expected
    assert all(not c.success for c in result.checks)
    # 40 recordings + copy-a, copy-b, the second 00001, bad-status, bad-source; 14 rows fail a
    # check (both rows of 00001, 00002, 00005-00009, bad-status, bad-source, both pairs of copies).
    assert result.samples == 45
    failing_rows = set().union(*(c.rows for c in result.checks))
    assert len(failing_rows) == 14
    assert result.score <= 31 / 45 and not result.passed
    # Main's label set: the typo is out, the four activities are in.
    assert result.bounds["label_set"] == ["badminton", "running", "standing", "walking"]
    # A check reads only: no ref moved, no snapshot was added.
    assert dataset.refs() == refs_before
    assert [e.snapshot_id for e in dataset.log("faults")] == log_before


def test_an_explicit_label_set_and_bounds_replace_the_derived_ones(basic_motions):
    config = CheckConfig(labels=("running", "walking"), min_length=120, channels=6)
    result = check_dataset(basic_motions, config, user=OWNER)
    checks = {c.name: c for c in result.checks}
    rows = rows_by_id(basic_motions)
    assert set(checks["labels_in_label_set"].sample_ids) == {i for i, r in rows.items() if r["label"] in ("standing", "badminton")}
    assert set(checks["length_within_bounds"].sample_ids) == set(rows)  # every recording has 100 steps
    assert checks["channels_within_bounds"].success


def test_a_branch_with_slashes_is_checked_and_its_data_docs_written(basic_motions, tmp_path):
    """Pipelines pre-label onto branches such as prelabels/RUN_ID; Great Expectations refuses
    '/' in the names it stores, so the check names the validation without them."""
    open_dataset(basic_motions, user=OWNER).branch("prelabels/manual__2026-01-02T03-04-05")
    result = check_dataset(f"{basic_motions}@prelabels/manual__2026-01-02T03-04-05", CheckConfig(), user=OWNER,
                           report_dir=tmp_path / "report")
    assert result.passed and [c.name for c in result.checks] == CHECKS
    pages = [p.read_text() for p in (tmp_path / "report").rglob("*.html")]
    assert any("prelabels\u2215manual__2026-01-02T03-04-05" in page for page in pages)
