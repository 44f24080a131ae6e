"""The data expectations of an annotation check, run in Great Expectations 1.x.

``run_expectations`` takes one row per sample (the annotation columns plus the per-series
columns of ``features.py``) as a pandas DataFrame, builds an expectation suite over it in an
ephemeral Great Expectations context, validates it through a checkpoint and, when asked,
writes the validation's HTML Data Docs into a folder. Each expectation is one named check;
its failing rows are the samples it names.

great_expectations is imported inside the functions: importing this module costs nothing,
and nothing that parses DAGs ever imports it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train_platform.quality.exceptions import QualityError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SUITE = "annotation-check"
DOCS_SITE = "report"


@dataclass(frozen=True)
class Bounds:
    """What the expectations accept. ``label_set`` is the dataset's label set; unlabelled
    samples (label null) pass the label check, as nulls pass every set check."""

    label_set: tuple[str, ...]
    statuses: tuple[str, ...]
    label_sources: tuple[str, ...]
    min_length: int
    max_length: int
    channels: tuple[int, ...]


@dataclass(frozen=True)
class CheckResult:
    """One check: the expectation it ran and the samples (row positions, ids) it failed."""

    name: str
    expectation: str
    description: str
    success: bool
    rows: tuple[int, ...]
    sample_ids: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "success": self.success, "sample_ids": list(self.sample_ids),
                "expectation": self.expectation, "description": self.description}


# Columns of the frame `run_expectations` validates.
FRAME_COLUMNS = ("sample_id", "label", "status", "label_source", "length", "n_channels", "non_finite",
                 "flat_channels", "outliers", "series_hash", "labels_per_series")


def _suite_expectations(bounds: Bounds) -> list[tuple[str, Any]]:
    """``(check name, expectation)`` pairs, in the order the report lists them."""
    import great_expectations as gx

    E = gx.expectations
    label_set = sorted(bounds.label_set)
    return [
        ("unique_ids", E.ExpectColumnValuesToBeUnique(
            column="sample_id", description="Every sample id occurs once in the snapshot.")),
        ("labels_in_label_set", E.ExpectColumnValuesToBeInSet(
            column="label", value_set=label_set,
            description=f"Every label is one of the dataset's label set: {', '.join(label_set) or '(empty)'}.")),
        ("valid_status", E.ExpectColumnValuesToBeInSet(
            column="status", value_set=list(bounds.statuses),
            description=f"The status is one of {', '.join(bounds.statuses)}.")),
        ("valid_label_source", E.ExpectColumnValuesToBeInSet(
            column="label_source", value_set=list(bounds.label_sources),
            description=f"The label source, when set, is one of {', '.join(bounds.label_sources)}.")),
        ("length_within_bounds", E.ExpectColumnValuesToBeBetween(
            column="length", min_value=bounds.min_length, max_value=bounds.max_length,
            description=f"The series has {bounds.min_length} to {bounds.max_length} time steps.")),
        ("channels_within_bounds", E.ExpectColumnValuesToBeInSet(
            column="n_channels", value_set=list(bounds.channels),
            description=f"The series has {' or '.join(map(str, bounds.channels))} channel(s).")),
        ("finite_values", E.ExpectColumnValuesToBeBetween(
            column="non_finite", min_value=0, max_value=0,
            description="The series holds no NaN or infinite value.")),
        ("no_flat_channels", E.ExpectColumnValuesToBeBetween(
            column="flat_channels", min_value=0, max_value=0,
            description="No channel of the series is flat-lined (constant over the whole series).")),
        ("within_robust_range", E.ExpectColumnValuesToBeBetween(
            column="outliers", min_value=0, max_value=0,
            description="No value lies outside the dataset's robust range of its channel (median ± k·IQR).")),
        ("no_duplicate_series", E.ExpectColumnValuesToBeUnique(
            column="series_hash", description="No two samples hold the same series (every copy is named).")),
        ("duplicates_agree_on_label", E.ExpectColumnValuesToBeBetween(
            column="labels_per_series", min_value=0, max_value=1,
            description="Samples holding the same series do not carry different labels.")),
    ]


def _context(docs_dir: Path | None):  # type: ignore[no-untyped-def]
    # Great Expectations logs its own set-up (hundreds of lines) at INFO; keep its warnings.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def run_expectations(frame: pd.DataFrame, bounds: Bounds, *, title: str, docs_dir: Path | None = None) -> list[CheckResult]:
    """Validate ``frame`` (columns ``FRAME_COLUMNS``, index 0..N-1) against the suite of
    ``bounds``; with ``docs_dir``, write the HTML Data Docs of the validation there
    (``docs_dir/index.html``). ``title`` names the validation in the Data Docs.

    An expectation that raises inside Great Expectations is an error of the check, never a
    failed check: ``QualityError`` names it."""
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise QualityError(f"run_expectations: the frame lacks column(s) {', '.join(missing)}")
    frame = frame.reset_index(drop=True)
    # Great Expectations stores the validation under its name, which may hold no '/' or '\\':
    # a branch such as prelabels/RUN_ID would fail the check before any expectation ran.
    title = title.replace("/", "∕").replace("\\", "∖")
    context = _context(docs_dir)
    import great_expectations as gx

    asset = context.data_sources.add_pandas("samples").add_dataframe_asset(title)
    batch = asset.add_batch_definition_whole_dataframe("snapshot")
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE))
    names: dict[str, str] = {}
    for name, expectation in _suite_expectations(bounds):
        expectation.meta = {"check": name}
        suite.add_expectation(expectation)
        names[name] = type(expectation).__name__
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=title, data=batch, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=[DOCS_SITE])] if docs_dir is not None else []
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="annotation-check", validation_definitions=[validation], actions=actions,
        # COMPLETE lists every failing row (index values, here positions 0..N-1).
        result_format={"result_format": "COMPLETE"},
    ))
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    ids = frame["sample_id"].tolist()
    results: list[CheckResult] = []
    for run in outcome.run_results.values():
        for result in run.results:
            config = result.expectation_config
            name = (config.meta or {}).get("check", config.type)
            info = result.exception_info or {}
            if info.get("raised_exception"):
                raise QualityError(f"expectation {name} ({config.type}) raised: {info.get('exception_message')}")
            rows = tuple(sorted({int(i) for i in result.result.get("unexpected_index_list") or []}))
            results.append(CheckResult(
                name=name, expectation=names.get(name, config.type), description=config.description or "",
                success=bool(result.success), rows=rows, sample_ids=tuple(dict.fromkeys(ids[r] for r in rows)),
            ))
    order = list(names)
    results.sort(key=lambda r: order.index(r.name) if r.name in order else len(order))
    log.info("%s: %d of %d expectations met", title, sum(r.success for r in results), len(results))
    return results
