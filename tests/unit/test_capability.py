"""What a worker says it can run, and what the master keeps of what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from master.core.workers import MAX_CAPABILITY_STAGES, WorkerRegistry, clean_capabilities
from worker.capability import Capabilities, StageTimes, runnable_stages
from worker.detectors import StageEnv


def test_stage_times_average_per_stage_name():
    t = StageTimes()
    t.observe({"decode": 1.0, "person": 20.0, "onnx:/m/a.onnx:0.3": 50.0, "bogus": 9.0})
    t.observe({"person": 30.0})
    snap = t.snapshot()
    assert set(snap) == {"person", "onnx"}  # decode and unknown names are not stages
    assert 20.0 < snap["person"] < 30.0 and snap["onnx"] == 50.0


def test_without_the_model_objects_is_not_offered_but_person_is(tmp_path: Path):
    stages = runnable_stages(StageEnv(model_dir=tmp_path))
    assert "objects" not in stages and "person" in stages and "person-ssd" in stages and "canny" in stages


def test_report_has_device_stages_and_times():
    caps = Capabilities(StageEnv(device="cpu"))
    caps.times.observe({"face": 12.5})
    r = caps.report()
    assert r["device"] == "cpu" and "face" in r["stages"] and r["ms"] == {"face": 12.5}


def test_the_master_keeps_only_well_formed_bounded_reports():
    raw = {"device": "cpu", "model": "nanodet-g-416", "stages": ["person", "Objects!", 7, "x" * 40],
           "ms": {"person": 23.456, "nan": float("nan"), "face": -1.0, "blur": True, "canny": 1e12, "sobel": 2}}
    assert clean_capabilities(raw) == {"device": "cpu", "model": "nanodet-g-416", "stages": ["person"],
                                       "ms": {"person": 23.46, "sobel": 2.0}}
    assert clean_capabilities("person") == {} and clean_capabilities({"device": "../../etc"}) == {}
    many = clean_capabilities({"stages": [f"s{i}" for i in range(500)]})
    assert len(many["stages"]) == MAX_CAPABILITY_STAGES


def test_heartbeat_capabilities_reach_the_snapshot():
    reg = WorkerRegistry(5.0)
    wid = reg.register("w", 0.0)
    reg.seen(wid, 1.0, {"cpu_percent": 5.0, "capabilities": {"device": "cuda", "stages": ["person"],
                                                              "ms": {"person": 4.0}}})
    [w] = reg.snapshot(1.0)
    assert w["capabilities"] == {"device": "cuda", "stages": ["person"], "ms": {"person": 4.0}}
    assert "capabilities" not in w["stats"]  # not a flat stat


@pytest.mark.filterwarnings("ignore:Specified provider")  # onnxruntime's own note that CUDA is not there
def test_the_reported_device_is_the_loaded_session_s(monkeypatch, caplog):
    """The build claims CUDA (as onnxruntime-gpu does on a host without CUDA's libraries); the session
    onnxruntime makes runs on the CPU. The heartbeat says cpu, not cuda, once the model is loaded."""
    from common.pipeline import parse_stage
    from worker.detectors import providers
    from worker.models.store import ModelStore
    from worker.pipeline import StageCache

    if not ModelStore().ready():
        pytest.skip("the NanoDet model is not built (`make setup`)")
    monkeypatch.setattr(providers, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    providers._warned.discard("cuda:session")
    env = StageEnv(device="auto", threads=1)
    caps = Capabilities(env)
    assert caps.report()["device"] == "cuda"  # what the build claims, before any session exists
    with caplog.at_level("WARNING"):
        StageCache(env).get(parse_stage("person"))
    assert caps.report()["device"] == "cpu"
    assert any("could not start" in r.getMessage() for r in caplog.records)
