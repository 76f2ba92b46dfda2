"""Choosing onnxruntime execution providers from a device preference."""

from __future__ import annotations

import logging

import pytest

from worker.detectors import providers

CPU_ONLY = ["CPUExecutionProvider"]
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
OPENVINO = ["OpenVINOExecutionProvider", "CPUExecutionProvider"]


def test_auto_takes_an_accelerator_when_the_build_has_one():
    assert providers.choose("auto", CPU_ONLY) == ("cpu", CPU_ONLY)
    assert providers.choose("auto", GPU) == ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers.choose("auto", OPENVINO) == ("openvino", OPENVINO)


def test_an_explicit_device_keeps_the_cpu_as_the_last_resort():
    assert providers.choose("tensorrt", GPU) == ("tensorrt", GPU)
    assert providers.choose("cpu", GPU) == ("cpu", CPU_ONLY)


def test_a_missing_device_falls_back_to_the_cpu_with_one_log_line(caplog):
    providers._warned.discard("openvino")
    with caplog.at_level(logging.WARNING):
        assert providers.choose("openvino", CPU_ONLY) == ("cpu", CPU_ONLY)
        assert providers.choose("openvino", CPU_ONLY) == ("cpu", CPU_ONLY)
    lines = [r.getMessage() for r in caplog.records if "openvino" in r.getMessage()]
    assert len(lines) == 1 and "running on the CPU" in lines[0]


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device must be one of"):
        providers.choose("tpu", CPU_ONLY)


class FakeSession:
    def __init__(self, got: list[str]) -> None:
        self.got = got

    def get_providers(self) -> list[str]:
        return self.got


def test_the_device_is_what_the_session_got_not_what_the_build_lists(caplog):
    """A CUDA build on a host without CUDA's libraries lists CUDAExecutionProvider among the available
    providers, then gives the session only the CPU: the device is the CPU, said once."""
    providers._warned.discard("cuda:session")
    with caplog.at_level(logging.WARNING):
        assert providers.session_device(FakeSession(["CPUExecutionProvider"]), "cuda") == "cpu"
        assert providers.session_device(FakeSession(["CPUExecutionProvider"]), "cuda") == "cpu"
    lines = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
    assert len(lines) == 1 and "device cuda" in lines[0]
    cuda = FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers.session_device(cuda, "cuda") == "cuda"
    assert providers.session_device(cuda, "tensorrt") == "cuda"  # asked for on a CUDA-only build: CUDA runs it
    assert providers.session_device(FakeSession(["CPUExecutionProvider"]), "cpu") == "cpu"
