"""DAG parse time of N pipelines shaped like the example, ours against dag-factory.

Usage: python bench/parse_pipelines.py N [N ...]

For each N, writes N copies of the example incremental-learning pipeline (four chained
tasks with resources, a GPU on training, four parameters) into a temporary dags folder with
our loader file, and times ``DagBag`` over it in a fresh process; in the same run it times
the equivalent dag-factory pipelines with ``../shared/anchors/dagfactory_parse.py``. Results
go to ``bench/results/parse_pipelines.json`` as ``{"runs": [{"n", "ours_s", "dagfactory_s",
"ratio"}]}``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "dags" / "pipelines" / "incremental-learning-pipeline.yaml"
ANCHOR = ROOT.parent / "shared" / "anchors" / "dagfactory_parse.py"
RESULTS = ROOT / "bench" / "results" / "parse_pipelines.json"

_TIMER = """
import os, sys, time
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - start
expected = int(sys.argv[2])
if len(bag.dags) != expected or bag.import_errors:
    sys.exit(f"expected {expected} DAGs, got {len(bag.dags)}; errors: {bag.import_errors}")
print(elapsed)
"""


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "AIRFLOW_HOME": str(tmp / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600", "TP_HOME": str(tmp / "tp")}


def time_ours(n: int, tmp: Path) -> float:
    folder = tmp / f"ours-{n}"
    folder.mkdir()
    shutil.copy(ROOT / "dags" / "train_platform_pipelines.py", folder)
    text = EXAMPLE.read_text()
    for i in range(n):
        (folder / f"p{i}.yaml").write_text(re.sub(r"name: incremental-learning-pipeline",
                                                  f"name: pipeline-{i}", text, count=1))
    out = subprocess.run([sys.executable, "-c", _TIMER, str(folder / "train_platform_pipelines.py"), str(n)],
                         env=_env(tmp), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"our parse failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def time_dagfactory(n: int, tmp: Path) -> float:
    out = subprocess.run([sys.executable, str(ANCHOR), str(n)], env=_env(tmp), capture_output=True, text=True)
    match = re.search(r"parsed in ([0-9.]+) s", out.stdout)
    if out.returncode or not match:
        raise SystemExit(f"dag-factory anchor failed: {out.stdout[-500:]} {out.stderr[-2000:]}")
    return float(match.group(1))


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [500, 1000]
    runs = []
    with tempfile.TemporaryDirectory(prefix="tp-parse-bench-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=_env(tmp), capture_output=True)
        for n in sizes:
            ours = time_ours(n, tmp)
            theirs = time_dagfactory(n, tmp)
            run = {"n": n, "ours_s": round(ours, 3), "dagfactory_s": round(theirs, 3), "ratio": round(ours / theirs, 3)}
            print(f"N={n}: ours {ours:.2f} s ({1000 * ours / n:.1f} ms/pipeline), "
                  f"dag-factory {theirs:.2f} s ({1000 * theirs / n:.1f} ms/pipeline), ratio {run['ratio']:.2f}")
            runs.append(run)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": f"{os.cpu_count()} cores", "runs": runs}, indent=2) + "\n")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
