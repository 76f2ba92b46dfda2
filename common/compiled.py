"""The compiled datagram core (common/_datagram.c), when `make setup` could build it.

It is the fast twin of common/protocol.py (encoding, decoding) and common/reassembly.py, with batched
receive; those stay the reference and the fallback. Both the publisher and the receiver load it here,
and log once why not when it is missing (scripts/build_datagram_core.py builds it).
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType

log = logging.getLogger(__name__)

MODULE = "common._datagram"


@functools.cache
def datagram_core() -> ModuleType | None:
    """The built extension, or None (the reason is logged once per process)."""
    try:
        return importlib.import_module(MODULE)
    except ImportError as e:
        log.warning("the compiled datagram core is not available (%s): using the pure-Python protocol code; "
                    "`make setup` builds it (needs gcc, the Python headers, libssl-dev and zlib1g-dev)", e)
        return None
