"""DAG parse time of N pipelines shaped like the example, ours against dag-factory.

Usage: python bench/parse_pipelines.py [--dagfactory-python PYTHON] [--out FILE] N [N ...]

For each N, writes N copies of the example incremental-learning pipeline (four chained
tasks with resources, a GPU on training, four parameters) into a temporary dags folder with
our loader file, and times ``DagBag`` over it in a fresh process of this interpreter (the
product venv). In the same run ``bench/dagfactory_parse.py`` times the equivalent
dag-factory pipelines in the benchmark venv, because dag-factory is a benchmark-only
package (requirements-bench.txt), not a product requirement. That interpreter is
``--dagfactory-python``, else ``$TP_BENCH_PYTHON``, else ``.venv-bench/bin/python``
(``make bench`` creates it from requirements-bench.txt). Results go to ``--out`` (default
``bench/results/parse_pipelines.json``) as
``{"machine", "dagfactory_python", "runs": [{"n", "ours_s", "dagfactory_s", "ratio"}]}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "dags" / "pipelines" / "incremental-learning-pipeline.yaml"
DAGFACTORY_SCRIPT = ROOT / "bench" / "dagfactory_parse.py"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
RESULTS = ROOT / "bench" / "results" / "parse_pipelines.json"

log = logging.getLogger("parse_pipelines")

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


def dagfactory_python(given: str | None) -> str:
    """The interpreter of the dag-factory side: ``given``, else ``$TP_BENCH_PYTHON``, else
    the benchmark venv's; ``SystemExit`` when there is none."""
    python = given or os.environ.get("TP_BENCH_PYTHON")
    if python:
        if shutil.which(python) is None:
            raise SystemExit(f"dag-factory python {python!r} is not an executable")
        return python
    if BENCH_PYTHON.is_file():
        return str(BENCH_PYTHON)
    raise SystemExit(
        f"no benchmark venv at {BENCH_PYTHON.parent.parent}: run `make bench`, which creates it from "
        "requirements-bench.txt, or pass --dagfactory-python (or set TP_BENCH_PYTHON)"
    )


def time_dagfactory(n: int, tmp: Path, python: str) -> float:
    out = subprocess.run([python, str(DAGFACTORY_SCRIPT), str(n), "--folder", str(tmp / f"dagfactory-{n}")],
                         env=_env(tmp), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"dag-factory parse failed ({python}): {out.stdout[-500:]} {out.stderr[-2000:]}")
    try:
        return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    except (IndexError, ValueError, KeyError) as exc:
        raise SystemExit(f"dag-factory parse printed no result ({exc}): {out.stdout[-500:]}") from exc


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="DAG parse time, ours against dag-factory")
    parser.add_argument("sizes", type=int, nargs="*", default=[500, 1000], metavar="N", help="numbers of pipelines")
    parser.add_argument("--dagfactory-python", help="interpreter with dag-factory (default: $TP_BENCH_PYTHON, else .venv-bench/bin/python)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    python = dagfactory_python(args.dagfactory_python)
    if importlib.util.find_spec("dagfactory") is not None:
        log.warning("dag-factory is importable from %s; it belongs in the benchmark venv only "
                    "(run `pip uninstall dag-factory` with that interpreter's pip)", sys.executable)
    runs = []
    with tempfile.TemporaryDirectory(prefix="tp-parse-bench-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=_env(tmp), capture_output=True)
        for n in args.sizes:
            ours = time_ours(n, tmp)
            theirs = time_dagfactory(n, tmp, python)
            run = {"n": n, "ours_s": round(ours, 3), "dagfactory_s": round(theirs, 3), "ratio": round(ours / theirs, 3)}
            print(f"N={n}: ours {ours:.2f} s ({1000 * ours / n:.1f} ms/pipeline), "
                  f"dag-factory {theirs:.2f} s ({1000 * theirs / n:.1f} ms/pipeline), ratio {run['ratio']:.2f}")
            runs.append(run)
    shown = Path(python).relative_to(ROOT) if Path(python).is_absolute() and Path(python).is_relative_to(ROOT) else python
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": f"{os.cpu_count()} cores", "dagfactory_python": str(shown), "runs": runs}, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
