"""`make demo`: the platform's main job end to end on the embedded default.

SQLite for Airflow and the catalog, local folders, local processes. Each step says what it
did. Run from the project root with the project's virtualenv (`make demo` does both).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
TP = str(Path(sys.executable).with_name("tp"))


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def run(argv: list[str], *, env: dict[str, str], quiet: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    print("$ " + " ".join(argv), flush=True)
    result = subprocess.run(argv, env=env, cwd=ROOT, text=True, capture_output=True)
    if not quiet or result.returncode:
        sys.stdout.write(result.stdout)
    if result.returncode and check:
        sys.stdout.write(result.stderr[-4000:])
        raise SystemExit(f"demo step failed: {' '.join(argv)} (exit {result.returncode})")
    return result


def task_lines(log: str, needles: tuple[str, ...]) -> list[str]:
    out = []
    for line in log.splitlines():
        for needle in needles:
            if needle in line:
                out.append("  " + line.split("] ", 1)[-1][:200] if "] " in line else line[:200])
                break
    return out


def main() -> int:
    env = {**os.environ}
    env.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("TP_HOME", str(ROOT / ".tp_home"))
    started = time.monotonic()

    step("1. Validate every pipeline file in the dags folder")
    files = sorted(str(p) for p in (ROOT / "dags" / "pipelines").glob("*.y*ml"))
    run([TP, "pipeline", "validate", *files], env=env)
    print(f"{len(files)} pipeline files are valid")

    step("2. What the example pipeline compiles to")
    run([TP, "pipeline", "compile", str(ROOT / "dags" / "pipelines" / "incremental-learning-pipeline.yaml")], env=env)
    run([TP, "pipeline", "list"], env=env)

    step("3. Airflow metadata database (SQLite) under " + env["AIRFLOW_HOME"])
    run([AIRFLOW, "db", "migrate"], env=env, quiet=True)
    print("ready")

    step("4. Run the example command pipeline through Airflow, with samples=300 given at trigger time")
    result = run([AIRFLOW, "dags", "test", "example-command-pipeline", "-c", json.dumps({"samples": 300})],
                 env=env, quiet=True)
    log = result.stdout + result.stderr
    print("\n".join(task_lines(log, ("generated ", "smoothed ", "summary: ", "DagRun Finished"))))
    if "state=success" not in log:
        raise SystemExit("the example command pipeline did not succeed")
    summary = Path(env["TP_HOME"]) / "fs/mnt/demo/summary/summary.json"
    print(f"the last task wrote {summary}:\n{summary.read_text()}")

    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
