"""Build the compiled datagram core (common/_datagram.c) in place, next to its source.

`make setup` runs this after the virtual environment is ready. It needs a C compiler and the headers
of the Python it runs under, of OpenSSL and of zlib (Debian: build-essential, python3-dev, libssl-dev,
zlib1g-dev; scripts/bootstrap.sh installs what is missing). A failed build is reported and is not
fatal: the receiver and the publisher then run the pure-Python protocol code (common/protocol.py,
common/reassembly.py) and say so once at start-up. Exit code 0 either way, unless --strict."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "common/_datagram.c"
MODULE = "common._datagram"
CFLAGS = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]


def target() -> Path:
    """Where the built module goes: common/_datagram<EXT_SUFFIX>."""
    return ROOT / "common" / f"_datagram{sysconfig.get_config_var('EXT_SUFFIX')}"


def build(*, quiet: bool) -> None:
    """Compile and link with setuptools' build_ext (the compiler and flags this Python was built with)."""
    from setuptools import Distribution, Extension

    ext = Extension(MODULE, [SOURCE], libraries=["crypto", "z"], extra_compile_args=CFLAGS)
    dist = Distribution({"name": "framehive-datagram-core", "ext_modules": [ext], "script_args": []})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True
    cmd.build_temp = str(ROOT / "build" / "datagram-core")
    cmd.force = True
    dist.verbose = 0 if quiet else 1
    cmd.ensure_finalized()
    cmd.run()


def check() -> str:
    """Import the freshly built module in a clean interpreter state; its path."""
    sys.path.insert(0, str(ROOT))
    importlib.invalidate_caches()
    module = importlib.import_module(MODULE)
    return str(module.__file__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strict", action="store_true", help="exit 1 when the core cannot be built")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--stamp", default="", help="a file to touch once the core is built and imports (for make)")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    try:
        build(quiet=not args.verbose)
        path = check()
    except (Exception, SystemExit) as e:  # a compiler or header missing surfaces as many types
        print(f"build_datagram_core: the compiled datagram core was not built ({type(e).__name__}: {e}); "
              "the receiver and publisher will use the pure-Python protocol code. Needs gcc, the Python headers and "
              "libssl-dev (and zlib1g-dev).", file=sys.stderr)
        return 1 if args.strict else 0
    print(f"build_datagram_core: built {Path(path).relative_to(ROOT)}")
    if args.stamp:
        Path(args.stamp).touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
