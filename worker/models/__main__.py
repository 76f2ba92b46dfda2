"""`python -m worker.models`: fetch, convert and check the detector models a worker runs.

    python -m worker.models            fetch and convert what is missing, then print where the model is
    python -m worker.models check      say whether the cached model is sound and loads (exit 1 if not)
    python -m worker.models path       print the model's path (exit 1 when it is not built)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from common.cli import RawDescriptionDefaultsHelpFormatter
from common.errors import ConfigError
from common.runtime import setup_logging
from worker.models.store import MODEL_DIR_ENV, ModelStore, default_model_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m worker.models", description=__doc__,
                                formatter_class=RawDescriptionDefaultsHelpFormatter)
    p.add_argument("command", nargs="?", default="fetch", choices=["fetch", "check", "path"],
                   help="fetch (the default), check or path")
    p.add_argument("--model-dir", type=Path, default=None,
                   help=f"cache directory (default: ${MODEL_DIR_ENV}, else {default_model_dir()})")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="how much to log on stderr")
    return p.parse_args(argv)


def _check(store: ModelStore) -> int:
    problem = store.problem()
    if problem:
        print(f"{store.source.name}: {problem} ({store.dir}); run `python -m worker.models fetch`", file=sys.stderr)
        return 1
    from worker.detectors.nanodet import NanoDet

    net = NanoDet(store.onnx_path, device="cpu")
    print(json.dumps({"model": store.source.name, "path": str(store.onnx_path), "loads": True,
                      "outputs": net.output_shapes, "licence": store.source.licence}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    store = ModelStore(root=args.model_dir)
    try:
        if args.command == "check":
            return _check(store)
        if args.command == "path":
            if not store.ready():
                print(f"{store.source.name}: {store.problem()} ({store.dir})", file=sys.stderr)
                return 1
            print(store.onnx_path)
            return 0
        path = store.ensure()
    except ConfigError as e:
        logging.getLogger("worker.models").error("%s", e)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
