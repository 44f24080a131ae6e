"""The repository stands alone: no tracked file points at a path outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Machine-specific absolute paths where development happened.
ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|root|home)/\w")
# A relative path climbing out of its folder, `../shared/x` (`/mnt/../etc` is a path
# under test, not a reference).
RELATIVE = re.compile(r"(?<![\w./])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)")


def points_outside(line: str, folder: Path) -> bool:
    """True when ``line`` names an absolute development path, or a relative path that
    neither exists from its file's folder nor stays inside the repository from its root."""
    if ABSOLUTE.search(line):
        return True
    for match in RELATIVE.finditer(line):
        target = match.group(1).rstrip(".")
        if (folder / target).exists() and (folder / target).resolve().is_relative_to(ROOT):
            continue
        if not (ROOT / target).resolve().is_relative_to(ROOT):
            return True
    return False


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and path.suffix not in {".png", ".jpg", ".whl", ".parquet"}:
            files.append(path)
    return files


def test_no_tracked_file_points_outside_the_repository():
    offenders = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if points_outside(line, path.parent):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)


def test_the_check_catches_what_it_is_for():
    assert points_outside("see ../shared/ARCHITECTURE.md", ROOT)
    assert points_outside("the anchor ../shared/anchors/x.py", ROOT / "bench")
    assert points_outside('ANCHOR = "/work/shared/anchors"', ROOT)
    assert not points_outside("configured by ../airflow-values.yaml.", ROOT / "helm" / "train-platform")
    assert not points_outside("from ..schema import COLUMNS", ROOT)
    assert not points_outside('"/mnt/../etc(hostpath):/x"', ROOT)
