"""Subprocess body of the concurrent first-submit test (run as a script, settings from TP_*):
load the batch as REVIEWER, wait for the start file, then submit accepting SAMPLE_IDS."""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    name, reviewer, start_file, *ids = sys.argv[1:]
    from train_platform.review.batches import load_batch
    from train_platform.review.submit import submit_review

    page = load_batch(name, "main", reviewer=reviewer)
    print("READY", flush=True)
    while not os.path.exists(start_file):  # every reviewer submits at the same moment
        time.sleep(0.005)
    result = submit_review(name, "main", [{"sample_id": i, "action": "accept"} for i in ids], reviewer=reviewer,
                           review_snapshot=page.review_snapshot, branch_snapshot=page.branch_snapshot)
    print(json.dumps({"sync": result.sync["kind"], "snapshot_id": str(result.snapshot_id)}), flush=True)


if __name__ == "__main__":
    main()
