"""Which reassembly core the UDP ingest runs: compiled (common/_datagram.c) or the pure-Python reference.

The compiled core reads datagrams in recvmmsg batches and reassembles them without the GIL; the
pure-Python one (common/reassembly.py) is the reference it is tested against and the fallback when it
was not built (`make setup` builds it; scripts/build_datagram_core.py says why when it cannot). Both
take the same limits and key, apply the same checks and count under the same names.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from types import ModuleType
from typing import Any

from common.compiled import datagram_core
from common.reassembly import MALFORMED_REASONS, Frame, FrameAssembler, ReassemblyLimits

log = logging.getLogger(__name__)

CORE_ENV = "FRAMEHIVE_INGEST_CORE"
CORE_CHOICES = ("auto", "compiled", "python")


def compiled_module() -> ModuleType | None:
    """The built extension, or None (common.compiled logs why, once)."""
    return datagram_core()


def resolve(core: str) -> str:
    """'compiled' or 'python': what `core` (one of CORE_CHOICES) runs as on this installation."""
    if core not in CORE_CHOICES:
        raise ValueError(f"ingest core must be one of {', '.join(CORE_CHOICES)}, got {core!r}")
    if core == "python":
        return "python"
    return "compiled" if compiled_module() is not None else "python"


@functools.cache
def _compiled_class() -> type:
    ext = compiled_module()
    if ext is None:
        raise RuntimeError("the compiled ingest core is not built")

    class CompiledAssembler(ext.Assembler):  # type: ignore[name-defined,misc]
        """FrameAssembler's interface over the compiled core; `recv` drains a socket in batches."""

        def __init__(self, limits: ReassemblyLimits | None = None, key: bytes | None = None) -> None:
            lim = limits or ReassemblyLimits()
            super().__init__(Frame, lim.max_frame_bytes, lim.max_chunks, lim.max_frames_in_flight, lim.max_streams,
                             lim.max_buffered_bytes, lim.frame_timeout_s, lim.stream_idle_s, key)
            self.limits, self.key = lim, key

        @property
        def counters(self) -> Counter[str]:
            """A snapshot of the counters (the core keeps them; changing this copy changes nothing)."""
            return Counter(self.counter_values())

        def malformed(self) -> int:
            """Total datagrams dropped as broken, across all reasons."""
            c = self.counter_values()
            return sum(c.get(r, 0) for r in MALFORMED_REASONS)

    return CompiledAssembler


def assembler_class(core: str) -> type[Any]:
    """The assembler class a resolved core ('compiled' or 'python') uses; both are built as
    `cls(limits, key)` and offer FrameAssembler's methods."""
    return _compiled_class() if resolve(core) == "compiled" else FrameAssembler


def recv_batch() -> Any:
    """Receive buffers for one ingest thread's recvmmsg calls (compiled core only)."""
    ext = compiled_module()
    if ext is None:
        raise RuntimeError("the compiled ingest core is not built")
    return ext.RecvBatch()
