"""Reviewing pre-labelled samples: the Airflow-free logic behind the review page and the
``review`` pipeline step.

| module | what is in it |
|---|---|
| ``batches`` | a review batch as one reviewer sees it (``load_batch``): samples awaiting review, label set, progress, the snapshots it was read from |
| ``submit`` | committing a reviewer's decisions to their own branch (``submit_review``), refusing bad input and stale pages |
| ``sync`` | keeping a reviewer's branch on top of main (fast-forward or rebase) before a submit |
| ``merging`` | merging the reviewers' branches into main on approval (``merge_reviews``) |
| ``conflicts`` | samples reviewers decided differently |
| ``journal`` | who decided what, and the review steps' requests, in the catalog's database |
| ``findings`` | what an annotation check report says about each sample |
| ``reading`` | the column- and id-filtered Iceberg scans the above use |
| ``exceptions`` | the errors, each with the HTTP status the page's API answers with |

Importing the package loads nothing heavy; pyiceberg loads with the modules that need it.
The room sits above ``datasets`` (import-linter's layers contract) and imports neither
Airflow nor ``operators``; the page is the plugin in ``plugins/``, the waiting step is
``operators/review.py``.
"""
