"""Both reassembly cores, for the tests that must hold for each: the pure-Python reference
(common/reassembly.py) and the compiled one (common/_datagram.c, built by `make setup`).

The compiled cases are skipped when the core is not built; tests/unit/test_ingestcore.py has the one
test that fails then, so a broken build is seen instead of silently testing half.
"""

from __future__ import annotations

import pytest

from common.reassembly import FrameAssembler
from receiver import ingestcore

BUILT = ingestcore.compiled_module() is not None
NOT_BUILT = "the compiled ingest core is not built (run `make setup`)"


def compiled_assembler() -> type:
    """The compiled assembler class (FrameAssembler's interface)."""
    return ingestcore.assembler_class("compiled")


# parametrize("make", CORES): `make(limits, key=...)` builds an assembler of each core.
CORES = [pytest.param(FrameAssembler, id="python"),
         pytest.param(compiled_assembler() if BUILT else None, id="compiled",
                      marks=pytest.mark.skipif(not BUILT, reason=NOT_BUILT))]
# parametrize("core", CORE_NAMES): for what takes a core by name (UdpIngest).
CORE_NAMES = [pytest.param("python", id="python"),
              pytest.param("compiled", id="compiled", marks=pytest.mark.skipif(not BUILT, reason=NOT_BUILT))]
