"""Where an ONNX model runs: onnxruntime execution providers chosen from a device preference.

`--device auto` (the default) takes the first accelerator the installed onnxruntime build offers
(CUDA, then OpenVINO), else the CPU. Asking for a device the build lacks falls back to the CPU with
one log line per process, never an error: a worker on a box without a GPU still works.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from common.pipeline import DEVICES

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
_PROVIDERS = {
    "cpu": (CPU,),
    "cuda": ("CUDAExecutionProvider",),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider"),  # TensorRT builds engines: slow first run
    "openvino": ("OpenVINOExecutionProvider",),
}
_AUTO_ORDER = ("cuda", "openvino")
_DEVICE_OF = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda",
              "OpenVINOExecutionProvider": "openvino"}
_warned: set[str] = set()


def available_providers() -> list[str]:
    """The execution providers of the installed onnxruntime build."""
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def choose(device: str, available: Sequence[str]) -> tuple[str, list[str]]:
    """(the device actually used, the provider list for a session) for a preference."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        for candidate in _AUTO_ORDER:
            if all(p in available for p in _PROVIDERS[candidate][:1]):
                return candidate, [*_PROVIDERS[candidate], CPU]
        return "cpu", [CPU]
    wanted = [p for p in _PROVIDERS[device] if p in available]
    if not wanted:
        if device not in _warned:
            _warned.add(device)
            log.warning("device %s asked for, but this onnxruntime build offers only %s: running on the CPU "
                        "(docs/DETECTION.md: installing a GPU build)", device, ", ".join(available))
        return "cpu", [CPU]
    return device, [*wanted, CPU] if device != "cpu" else [CPU]


def session_device(session, chosen: str) -> str:  # session: onnxruntime.InferenceSession
    """The device a session really runs on, read from the providers it got. `available_providers()`
    names what the build was compiled with: a CUDA build on a host without the CUDA or cuDNN libraries
    (or without a GPU) lists CUDA there, then quietly gives the session only the CPU, saying so in
    onnxruntime's own log at most. `chosen` is what `choose` picked; when it was an accelerator and the
    session has none, one log line per device says so."""
    got = list(session.get_providers())
    actual = next((_DEVICE_OF[p] for p in got if p in _DEVICE_OF), "cpu")
    if chosen != "cpu" and actual == "cpu" and f"{chosen}:session" not in _warned:
        _warned.add(f"{chosen}:session")
        log.warning("device %s: onnxruntime could not start it here (missing CUDA/cuDNN or OpenVINO libraries, or "
                    "no device): running on the CPU (docs/DETECTION.md: installing a GPU build)", chosen)
    return actual


def session_options(threads: int):  # -> onnxruntime.SessionOptions
    """Options every framehive session uses: no busy spinning (it steals the CPU from the next stage
    in the same process and from other workers on the host), `threads` intra-op threads (0: one per core)."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise to a user
    return opts
