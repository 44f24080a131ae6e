"""Task type ``review``: wait for people to review pre-labels, then merge their work.

The step is the standard provider's ``ApprovalOperator`` (human-in-the-loop): the run
waits in Airflow's ``awaiting_input`` state and the step appears under Airflow's Required
Actions, with a link to the review page of the plugin (``plugins/train_platform_ui``).
Reviewers label there, each onto their own branch; whoever approves in Required Actions
decides what happens next:

* **Approve**: the reviewers' branches are merged into main (``train_platform.review.
  merging.merge_reviews``, as the pipeline's owner). When reviewers disagree on samples, or
  a branch conflicts with main, the step fails naming the samples, and the review page
  shows them; the step's retry then waits for a new approval.
* **Reject**: nothing is merged and every later task of the run is skipped.

An approved step that merged emits an Airflow asset event for ``tp://NAME@main`` (through
the task's outlet, the asset alias ``tp-merges-NAME``, so that a rejection, which also ends
the step as succeeded, emits none; the event's ``extra`` names the merged branches and who
approved), so a pipeline
with ``schedule: {assets: ["tp://NAME@main"]}`` (the incremental-training one) starts on
the confirmed labels with no one pressing a button.

Input ``data`` (the first input when not named so): the review branch as a dataset ref
``tp://NAME@BRANCH``. NAME must be literal (the outlet alias is fixed when the DAG is
parsed); BRANCH may be a template, such as ``review/{{ run_id | replace(':', '-') }}``,
rendered when the task runs. Optional input ``check``: the report folder of an annotation check
(``tp dataset check --report``, the ``annotation_check`` type's output), whose findings the
page shows on each sample. Parameters ``review_batch`` (only samples of that ingestion batch)
and ``allow_new_classes`` (reviewers may type a class the dataset does not have yet;
default false). The task's ``timeout`` is how long to wait for a response; without one it
waits until someone responds.

Nothing of the dataset code is imported when the DAG file is parsed: ``execute`` imports it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import urlencode

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, AssetAlias

if TYPE_CHECKING:
    from airflow.sdk import Context

# tp://NAME@BRANCH, checked without importing the dataset code (parse time stays light).
_REF = re.compile(r"^tp://([a-z][a-z0-9_]{0,62})@([A-Za-z0-9][A-Za-z0-9._/-]{0,127})$")
# The same with a Jinja template as the branch, checked again once rendered.
_TEMPLATED_REF = re.compile(r"^tp://([a-z][a-z0-9_]{0,62})@(.*\{\{.*\}\}.*)$")
PAGE_PATH = "/train-platform/review"


def main_asset(dataset: str) -> Asset:
    """The asset a merge into ``dataset``'s main branch updates: ``tp://NAME@main``."""
    return Asset(f"tp://{dataset}@main")


def merges_alias(dataset: str) -> AssetAlias:
    """The review step's outlet: events of ``main_asset`` are added to it only on a merge."""
    return AssetAlias(f"tp-merges-{dataset}")


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class ReviewOperator(ApprovalOperator):
    """Waits for the review of ``tp://NAME@BRANCH`` and merges it on approval (see the
    module's docstring). Takes the same arguments the compiler gives every task; ``command``
    and ``outputs`` have no meaning for a review and are refused."""

    task_type = "review"
    ui_color = "#fdf3d8"
    template_fields = (*ApprovalOperator.template_fields, "review_ref", "check_input")

    def __init__(
        self,
        *,
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        image: str | None = None,
        env: Mapping[str, str] | None = None,
        container_resources: Mapping[str, Any] | None = None,
        mounts: Sequence[Any] = (),
        task_mounts: Sequence[Any] = (),
        runner: str = "local",
        pipeline: str = "",
        pipeline_version: str = "",
        execution_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id", "review")
        if command:
            raise ValueError(f"{task_id}: a review task runs no command; remove `command`/`args`")
        if outputs:
            raise ValueError(f"{task_id}: a review task has no outputs; its result is the merge into main")
        inputs = dict(inputs or {})
        if not inputs:
            raise ValueError(f"{task_id}: review needs a `data` input, the review branch as tp://NAME@BRANCH")
        data = inputs.get("data") or next(iter(inputs.values()))
        match = _REF.match(data) or _TEMPLATED_REF.match(data)
        if not match:
            raise ValueError(f"{task_id}: review's `data` input must be a dataset branch tp://NAME@BRANCH, got {data!r}")
        super().__init__(
            subject=f"Review the pre-labels of {match.group(1)}@{match.group(2)}",
            body=None,
            response_timeout=execution_timeout,
            ignore_downstream_trigger_rules=True,
            outlets=kwargs.pop("outlets", None) or [merges_alias(match.group(1))],
            **kwargs,
        )
        self.dataset, self.review_branch = match.group(1), match.group(2)
        self.review_ref = data
        self.check_input = inputs.get("check")
        self.mounts = list(mounts)
        self.task_mounts = list(task_mounts)
        self.pipeline = pipeline
        self.pipeline_version = pipeline_version

    # ----- helpers -----------------------------------------------------------------------
    def _rendered_branch(self) -> None:
        """The review branch once ``review_ref`` is rendered (a templated branch becomes a
        real one, checked like a literal one)."""
        match = _REF.match(self.review_ref or "")
        if not match or match.group(1) != self.dataset:
            raise ValueError(f"{self.task_id}: review's `data` input rendered to {self.review_ref!r}, "
                             f"not a branch of tp://{self.dataset}")
        self.review_branch = match.group(2)
        self.subject = f"Review the pre-labels of {self.dataset}@{self.review_branch}"

    def _check_report(self) -> str | None:
        """The check report folder on this machine (container paths map as for local tasks)."""
        if not self.check_input:
            return None
        from train_platform.execution import paths
        from train_platform.settings import get_settings
        from train_platform.storage import merge_mounts, parse_mounts

        mounts = merge_mounts(parse_mounts(self.mounts), parse_mounts(self.task_mounts)) if (self.mounts or self.task_mounts) else []
        return paths.resolve(self.check_input, "local", get_settings(), mounts)

    def page_url(self, batch: str | None) -> str:
        from airflow.providers.common.compat.sdk import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        query = {"dataset": self.dataset, "branch": self.review_branch, **({"batch": batch} if batch else {})}
        return f"{base}{PAGE_PATH}?{urlencode(query)}"

    @staticmethod
    def _batch_param(context: Context) -> str | None:
        value = (context.get("params") or {}).get("review_batch")
        return str(value) if value not in (None, "") else None

    # ----- the waiting step --------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        from train_platform.datasets.dataset import open_dataset
        from train_platform.review import reading
        from train_platform.review.batches import batch_ids_in_review
        from train_platform.review.journal import ReviewJournal
        from train_platform.settings import get_settings

        self._rendered_branch()
        settings = get_settings()
        params = context.get("params") or {}
        batch = self._batch_param(context)
        ti = context["ti"]
        ds = open_dataset(self.dataset, user=self.owner, settings=settings)
        head = reading.branch_head(ds.refs(), self.dataset, self.review_branch)
        journal = ReviewJournal(settings.catalog_uri)
        ids, _, _ = batch_ids_in_review(ds, reading.load_table(ds), self.review_branch, head, batch, journal)
        request = journal.open_request(
            dataset=self.dataset, review_branch=self.review_branch, batch_id=batch,
            allow_new_classes=_flag(params.get("allow_new_classes", False)), check_report=self._check_report(),
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, created_by=self.owner,
        )
        url = self.page_url(batch)
        decided = {d.sample_id for d in journal.decisions(self.dataset, self.review_branch, sample_ids=ids)
                   if d.outcome is not None}
        where = f"`{self.dataset}@{self.review_branch}`" + (f", batch `{batch}`," if batch else "")
        self.body = (
            f"**{len(ids)} sample(s)** of {where} await review; {len(decided)} have a reviewer's decision so far.\n\n"
            f"[Open the review page]({url})\n\n"
            "**Approve** merges the reviewers' branches into main: if reviewers disagree on a sample, or a branch "
            "conflicts with main, this step fails and names the samples (the review page shows them). "
            "**Reject** stops the run: nothing is merged and the rest of the run is skipped."
        )
        self.log.info("review request %s: %d sample(s) of %s@%s await review at %s", request.id, len(ids),
                      self.dataset, self.review_branch, url)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from train_platform.exceptions import TaskExecutionError, TrainPlatformError
        from train_platform.review.exceptions import ReviewConflictError
        from train_platform.review.journal import ReviewJournal
        from train_platform.review.merging import merge_reviews
        from train_platform.settings import get_settings

        settings = get_settings()
        ti = context["ti"]
        journal = ReviewJournal(settings.catalog_uri)
        request = journal.request_for(ti.dag_id, ti.run_id, ti.task_id)
        self.review_branch = request.review_branch  # the branch execute() rendered and recorded
        if "error" not in event and event.get("chosen_options") == [self.REJECT]:
            # Recorded first: on Reject the approval operator ends the task by skipping
            # the rest of the run, and nothing after its execute_complete runs.
            approver = (event.get("responded_by_user") or {}).get("name")
            message = f"rejected by {approver}: nothing was merged, the rest of the run is skipped"
            journal.finish_request(request.id, "rejected", {"by": approver, "message": message})
            self.log.info("review of %s@%s %s", self.dataset, self.review_branch, message)
            return super().execute_complete(context=context, event=event)
        response = super().execute_complete(context=context, event=event)
        approver = (response.get("responded_by_user") or {}).get("name")
        chosen = response["chosen_options"][0]
        try:
            result = merge_reviews(self.dataset, self.review_branch, actor=self.owner, batch_id=request.batch_id,
                                   approver=approver, settings=settings)
        except ReviewConflictError as exc:
            journal.finish_request(request.id, "conflict", {"by": approver, "message": str(exc), "conflicts": exc.samples,
                                                            "merged": exc.merged})
            raise TaskExecutionError(f"{self.task_id}: {exc}") from None
        except TrainPlatformError as exc:
            journal.finish_request(request.id, "failed", {"by": approver, "message": str(exc)})
            raise TaskExecutionError(f"{self.task_id}: merging the review failed: {exc}") from None
        journal.finish_request(request.id, "merged", {"by": approver, "merged": result.merged,
                                                      "message": f"approved by {approver}: merged "
                                                                 f"{len(result.merged)} reviewer branch(es) into main"})
        for merge in result.merged:
            self.log.info("merged %s (%s): %d added, %d changed, %d removed", merge["branch"], merge["kind"],
                          merge["added"], merge["changed"], merge["removed"])
        if result.merged:
            event_extra = {"dataset": self.dataset, "review_branch": self.review_branch, "approved_by": approver,
                           "merged": [m["branch"] for m in result.merged],
                           "snapshot_id": result.merged[-1]["snapshot_id"]}
            context["outlet_events"][merges_alias(self.dataset)].add(main_asset(self.dataset), extra=event_extra)
            self.log.info("asset event tp://%s@main: %s", self.dataset, event_extra)
        return {"chosen": chosen, "by": approver, "merged": [m["branch"] for m in result.merged]}
