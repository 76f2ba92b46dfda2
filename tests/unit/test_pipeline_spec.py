"""Pipeline specs: parsing, canonical form, clear errors, and the worker implementing every stage."""

import re

import pytest

from common.errors import PipelineSpecError
from common.pipeline import STAGES, normalize_pipeline, parse_pipeline
from worker.detectors import DETECTORS
from worker.pipeline import FILTER_STAGES


def test_every_declared_stage_has_an_implementation_and_no_more():
    assert set(STAGES) == set(DETECTORS) | set(FILTER_STAGES)
    assert {n for n, s in STAGES.items() if s.kind == "filter"} == set(FILTER_STAGES)


@pytest.mark.parametrize("spec,canonical", [
    ("person", "person"),
    (" Person , face ", "person,face"),
    ("person:0.5", "person"),  # the default is dropped
    ("person:0.7,face:3", "person:0.7,face:3"),
    ("person-hog", "person-hog"),
    ("person:0.5:tiles=auto:device=cpu", "person:device=cpu"),  # named defaults dropped too
    ("person:tiles=ON", "person:tiles=on"),
    ("objects", "objects"),
    ("objects:Car+truck+traffic light", "objects:car+truck+traffic_light"),
    ("objects:min_score=0.4", "objects:min_score=0.4"),  # a skipped argument is named from there on
    ("objects:car:0.4:tiles=off", "objects:car:0.4:tiles=off"),
    ("person-ssd:0.6", "person-ssd:0.6"),
])
def test_canonical_form(spec, canonical):
    assert normalize_pipeline(spec) == canonical
    assert normalize_pipeline(canonical) == canonical


@pytest.mark.parametrize("spec,words", [
    ("", "empty"),
    ("cat", "unknown stage 'cat'; known stages: blur, canny, copy, face, gaussian, motion, noop, objects, person, "
            "person-hog, person-ssd, sleep, sobel, threshold, onnx:<path>"),
    ("person:abc", "min_score must be float"),
    ("person:2", "min_score must be in"),
    ("face:1:2", "at most 1 plain argument"),
    ("person:tiles=sometimes", "tiles must be auto, on or off"),
    ("person:device=gpu", "device must be auto, cpu, cuda"),
    ("person:color=red", "has no option 'color'; it takes [:min_score][:tiles=..][:device=..]"),
    ("person:tiles=on:0.4", "a plain argument after a name=value one"),
    ("person:min_score=0.4:min_score=0.5", "min_score given twice"),
    ("objects:car+unicorn", "unknown COCO label(s) ['unicorn']"),
    ("objects:+", "no labels given"),
    ("face:2.5", "min_neighbors must be int"),
    (",".join(["face"] * 17), "max 16"),
    ("x" * 600, "longer than"),
])
def test_bad_specs_get_messages_a_user_understands(spec, words):
    with pytest.raises(PipelineSpecError, match=re.escape(words)):
        parse_pipeline(spec)


def test_args_are_typed_with_defaults_filled():
    [p, f] = parse_pipeline("person:0.6,face")
    assert p.args == (0.6, "auto", None) and f.args == (5,)
    [o] = parse_pipeline("objects:dog+cat:tiles=off")
    assert o.args == ("dog+cat", None, "off", None)


@pytest.mark.parametrize("spec,words", [
    ("sleep:-1", "ms must be in 0..60000"),
    ("sleep:60001", "ms must be in 0..60000"),
    ("sleep:2.5", "ms must be int"),
    ("sleep:20:30", "at most 1 plain argument"),
])
def test_sleep_takes_whole_milliseconds_up_to_a_minute(spec, words):
    with pytest.raises(PipelineSpecError, match=re.escape(words)):
        parse_pipeline(spec)
    assert normalize_pipeline("sleep:50") == "sleep" and normalize_pipeline("sleep:20") == "sleep:20"


def test_sleep_holds_the_task_without_the_cpu_and_finds_nothing():
    import time

    import numpy as np

    from worker.pipeline import StageCache, run_pipeline

    image = np.zeros((48, 64, 3), np.uint8)
    stages = StageCache()
    cpu0 = time.process_time()
    out = run_pipeline("sleep:120", image, stages)
    cpu_ms = (time.process_time() - cpu0) * 1000
    assert out.detections == () and out.image is None
    assert out.timings_ms["sleep:120"] >= 120.0  # sleep never returns early
    assert cpu_ms < 60  # held, not computed: a busy loop would use the whole 120 ms
