"""The repository stands alone: no tracked file points at a path outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Machine-specific absolute paths where development happened.
ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|root|home)/\w")
# A relative path that climbs out of its folder (`../shared/x`); `/mnt/../etc` is a path
# under test, not a reference, and is not matched.
RELATIVE = re.compile(r"(?<![\w./])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)")


def points_outside(line: str, folder: Path, root: Path = ROOT) -> bool:
    """True when ``line`` names an absolute development path, or a relative path that,
    read from its file's folder or from the repository root, is something that exists
    outside the repository (a sibling checkout such as ``../shared``)."""
    if ABSOLUTE.search(line):
        return True
    for match in RELATIVE.finditer(line):
        target = match.group(1).rstrip(".")
        for base in (folder, root):
            resolved = (base / target).resolve()
            if resolved.exists() and not resolved.is_relative_to(root):
                return True
    return False


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    this_file = Path(__file__).resolve()
    return [ROOT / name for name in out.decode().split("\0")
            if name and (ROOT / name).is_file() and (ROOT / name).resolve() != this_file]


def test_no_tracked_file_points_outside_the_repository():
    offenders = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        for number, line in enumerate(text.splitlines(), 1):
            if points_outside(line, path.parent):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)


def test_the_check_catches_what_it_is_for(tmp_path):
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    (repo / "helm" / "chart").mkdir(parents=True)
    (repo / "helm" / "values.yaml").write_text("")
    (tmp_path / "shared" / "anchors").mkdir(parents=True)
    (tmp_path / "shared" / "anchors" / "x.py").write_text("")
    assert points_outside("see ../shared/anchors/x.py.", repo, repo)
    assert points_outside("ANCHOR = ROOT / '../../shared/anchors'", repo / "bench", repo)
    assert points_outside('ANCHOR = "/work/shared/anchors"', repo, repo)
    assert not points_outside("configured by ../values.yaml.", repo / "helm" / "chart", repo)
    assert not points_outside("from ..schema import COLUMNS", repo, repo)
    assert not points_outside('"/mnt/../etc(hostpath):/x"', repo, repo)
    assert not points_outside('files={"../elsewhere.pt": "0"}', repo, repo)
