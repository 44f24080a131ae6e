"""A registration killed with SIGKILL at each point of its work leaves the registry and the
model store consistent, and the next registration works.

Each test runs the real ``tp model register`` (``python -m train_platform.cli``) in a
subprocess, stops it at one point of its code (``tests/_faults.py``) and kills it there:
while the checkpoint is being copied into staging, once it is staged but before the database
transaction, inside the transaction after the copy was renamed into the store, and after the
commit. Then it checks that every registered version has its files in the store, byte for
byte, that no store folder or staging entry is left over once the next registration ran, and
that the next registration takes the next number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests._faults import Point, kill_at, spawn

NAME = "crashy"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def platform(request, tp_home, monkeypatch):
    """TP_* for the subprocesses: a fresh TP_HOME, and on PostgreSQL a fresh database."""
    from train_platform.settings import reload_settings

    monkeypatch.delenv("BENTOML_HOME", raising=False)
    monkeypatch.delenv("TP_USER", raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv("TP_DATABASE_URL", request.getfixturevalue("fresh_postgres"))
    return reload_settings()


def _tp(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "train_platform.cli", *args], capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _register_args(checkpoint: Path) -> list[str]:
    return ["-m", "train_platform.cli", "model", "register", NAME, "--checkpoint", str(checkpoint)]


def _versions() -> list[dict]:
    proc = _tp("model", "list", NAME, "--json", check=False)
    if proc.returncode == 3 and "unknown model" in proc.stderr:
        return []
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _store(settings) -> Path:
    from train_platform.registry.bento_store import bentoml_home

    return bentoml_home(settings) / "models" / NAME


def _staging(settings) -> list[str]:
    from train_platform.registry.bento_store import staging_root

    root = staging_root(settings)
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_consistent(settings, checkpoints: dict[int, Path]) -> None:
    """Every registered version's store folder holds its checkpoint's files exactly, and
    BentoML reads it as that version."""
    from train_platform.registry import ModelRegistry
    from train_platform.registry.bento_store import model_path

    for version in ModelRegistry(settings).list_versions(NAME):
        stored = model_path(settings, version.bento_model_tag)
        assert stored == _store(settings) / f"v{version.version}"
        files = _files(stored)
        assert "model.yaml" in files
        files.pop("model.yaml")
        assert files == _files(checkpoints[version.version]), f"v{version.version} differs from its checkpoint"


CASES = {
    # After the first file of the copy reached the disk: a staging entry, half full.
    "mid-copy": Point("os:fsync", "after", 1),
    # Staged and checked, the database not touched yet.
    "staged": Point("train_platform.registry.schema:transaction", "before", 1),
    # In the write transaction: the copy renamed to models/NAME/vN, no row committed.
    "renamed-uncommitted": Point("train_platform.registry.bento_store:install_staged", "after", 1),
    # Committed; its staging entry not yet removed.
    "committed": Point("train_platform.registry.bento_store:discard_staged", "before", 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_registration_killed_at_any_point_leaves_the_registry_consistent(platform, checkpoints, case, tmp_path):
    if platform.database_url and case in ("mid-copy", "staged"):
        pytest.skip("no database step happens before this point: one backend shows it")
    good, bad = checkpoints["good"], checkpoints["bad"]
    _tp("model", "register", NAME, "--checkpoint", str(good))  # v1, registered normally
    registered = {1: good}

    kill_at(CASES[case], _register_args(bad), tmp_path / "marker")

    committed = case == "committed"
    if committed:
        registered[2] = bad
    assert [v["version"] for v in _versions()] == sorted(registered)
    _check_consistent(platform, registered)
    if case == "mid-copy":
        # Killed while copying: its entry is there, with fewer files than the checkpoint.
        (entry,) = [e for e in _staging(platform) if not e.endswith(".lock")]
        copied = _files(Path(platform.home) / "bentoml" / "staging" / entry / "model")
        assert 0 < len(copied) < len(_files(bad))
    if case == "renamed-uncommitted":
        assert (_store(platform) / "v2" / "model.yaml").is_file()  # in the store, not registered

    # The next registration works, takes the next number, and leaves nothing behind.
    proc = _tp("model", "register", NAME, "--checkpoint", str(bad))
    following = max(registered) + 1
    assert proc.stdout.strip().endswith(str(following)), proc.stdout
    registered[following] = bad
    assert [v["version"] for v in _versions()] == sorted(registered)
    _check_consistent(platform, registered)
    assert sorted(p.name for p in _store(platform).iterdir() if p.name.startswith("v")) == [
        f"v{n}" for n in sorted(registered)]
    assert _staging(platform) == []
    assert (_store(platform) / "latest").read_text() == f"v{following}"
    # And the platform's own processes load it (the reference grammar, the BentoML store).
    shown = json.loads(_tp("model", "show", f"model:{NAME}:v{following}", "--json").stdout)
    assert shown["version"] == following


@pytest.mark.slow
def test_the_copy_holds_no_database_lock_and_a_live_copy_is_never_cleaned(platform, checkpoints, tmp_path):
    """A registration stopped in the middle of its copy blocks nobody: another one of the
    same model registers meanwhile, and its clean-up leaves the live entry alone. Killed
    afterwards, the stopped one's entry is removed by the next registration."""
    good, bad = checkpoints["good"], checkpoints["bad"]
    _tp("model", "register", NAME, "--checkpoint", str(good))
    marker = tmp_path / "marker"
    stopped = spawn(Point("os:fsync", "after", 1), _register_args(bad), marker)
    try:
        _wait_for(marker, stopped)
        live = _staging(platform)
        assert len(live) == 2  # its entry and its lock file
        # The database is free: a registration, a promotion and a read all go through.
        assert _tp("model", "register", NAME, "--checkpoint", str(good)).stdout.strip().endswith("2")
        _tp("model", "promote", NAME, "2")
        assert _staging(platform) == live  # the live entry was not taken for a dead one
    finally:
        stopped.kill()
        stopped.wait()
        stopped.stdout.close()
        stopped.stderr.close()
    assert _tp("model", "register", NAME, "--checkpoint", str(bad)).stdout.strip().endswith("3")
    assert _staging(platform) == []
    _check_consistent(platform, {1: good, 2: good, 3: bad})


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the registration did not reach its copy"
        time.sleep(0.02)


def test_a_checkpoint_rewritten_while_it_is_copied_is_refused(platform, checkpoints, tmp_path):
    """The copy is checked as it is made: a checkpoint.json rewritten between the check of
    the metadata and the copy (a training run writing into the folder) is refused, and
    nothing is registered or left in staging."""
    import shutil

    from train_platform.registry import CheckpointInvalidError, ModelRegistry
    from train_platform.registry import checkpoints as ck

    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints["good"], folder)
    original = ck.read_meta

    def read_then_rewritten(checkpoint):
        meta = original(checkpoint)
        (checkpoint / "checkpoint.json").write_text(json.dumps({**meta, "epochs_completed": 99}))
        return meta

    ck.read_meta = read_then_rewritten
    try:
        with pytest.raises(CheckpointInvalidError, match="changed while the checkpoint was copied"):
            ModelRegistry(platform).register(NAME, folder)
    finally:
        ck.read_meta = original
    assert _staging(platform) == []
    assert ModelRegistry(platform).list_models() == []
