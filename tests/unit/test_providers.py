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
