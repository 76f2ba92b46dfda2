"""Pipeline specs: parsing, canonical form, clear errors, and the worker implementing every stage."""

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
])
def test_canonical_form(spec, canonical):
    assert normalize_pipeline(spec) == canonical
    assert normalize_pipeline(canonical) == canonical


@pytest.mark.parametrize("spec,words", [
    ("", "empty"),
    ("cat", "unknown stage 'cat'; known stages: blur, canny, face, gaussian, motion, noop, person, person-hog, "
            "sobel, threshold, onnx:<path>"),
    ("person:abc", "min_score must be float"),
    ("person:2", "min_score must be in"),
    ("face:1:2", "at most 1 argument"),
    ("face:2.5", "min_neighbors must be int"),
    (",".join(["face"] * 17), "max 16"),
    ("x" * 600, "longer than"),
])
def test_bad_specs_get_messages_a_user_understands(spec, words):
    with pytest.raises(PipelineSpecError, match=words.replace("(", r"\(")):
        parse_pipeline(spec)


def test_args_are_typed_with_defaults_filled():
    [p, f] = parse_pipeline("person:0.6,face")
    assert p.args == (0.6,) and f.args == (5,)
