"""The `onnx:<path>` stage on tiny ONNX graphs built here, whose output is a known set of candidates.

Each graph's output is a constant plus 0 * mean(input), so it depends on the input (cv2.dnn drops a
graph whose output does not) and always equals the constant. Frames are 640x360 and models 320x320,
so every box goes through letterbox scaling (factor 0.5) and padding (70 rows on top).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx  # noqa: E402  (pinned in requirements.txt: the tests build their models with it)
import pytest
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from common.errors import PipelineSpecError
from common.pipeline import normalize_pipeline, parse_pipeline
from worker.detectors import onnx_yolo
from worker.detectors.onnx_yolo import COCO80, V5, V8, choose_layout, first_output, input_shape, letterbox, load
from worker.pipeline import StageCache, run_pipeline

FRAME_W, FRAME_H = 640, 360
SCALE, LEFT, TOP = 0.5, 0, 70  # 640x360 fitted into 320x320
CANDIDATES = 32  # columns/rows in each output; those not filled in score 0
NAMES = ("cat", "dog", "bird")

RUNTIMES = ["cv2", "onnxruntime"]  # both pinned in requirements.txt
LAYOUTS = [V5, V8]


def candidates(dets: list[tuple], n_classes: int, layout: str) -> np.ndarray:
    """An output tensor holding `dets`: (frame box x, y, w, h, class id, class score[, objectness])."""
    rows = np.zeros((CANDIDATES, 4 + n_classes + (layout == V5)), np.float32)
    for i, (x, y, w, h, cls, score, *obj) in enumerate(dets):
        cx, cy = (x + w / 2) * SCALE + LEFT, (y + h / 2) * SCALE + TOP
        rows[i, :4] = cx, cy, w * SCALE, h * SCALE
        if layout == V5:
            rows[i, 4] = obj[0] if obj else 1.0
            rows[i, 5 + cls] = score
        else:
            rows[i, 4 + cls] = score
    return rows[None] if layout == V5 else rows.T[None].copy()


def save_model(path: Path, output: np.ndarray, *, dims: list = (1, 3, 320, 320), trilu: bool = False,
               aux: bool = False) -> Path:
    """An ONNX model whose output is `output` whatever the input; `trilu` adds an op cv2.dnn lacks,
    `aux` a second output (2 * output0) computed after the first, as older YOLOv5 exports have."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, list(dims))
    y = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(output.shape))
         for name in ("output0", "aux")[:1 + aux]]
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=1)]
    last = "mean"
    if trilu:
        nodes.append(helper.make_node("Trilu", ["mean"], ["tri"]))
        last = "tri"
    nodes += [helper.make_node("Mul", [last, "zero"], ["nothing"]),
              helper.make_node("Reshape", ["nothing", "shape"], ["flat"]),
              helper.make_node("Add", ["const", "flat"], ["output0"])]
    if aux:
        nodes.append(helper.make_node("Add", ["output0", "output0"], ["aux"]))
    weights = [numpy_helper.from_array(output.astype(np.float32), "const"),
               numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
               numpy_helper.from_array(np.ones(output.ndim, np.int64), "shape")]
    graph = helper.make_graph(nodes, "yolo-stub", [x], y, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def with_names(path: Path, names=NAMES, suffix: str = ".names") -> Path:
    path.with_suffix(suffix).write_text("\n".join(names) + "\n")
    return path


def sidecar(path: Path, **keys) -> Path:
    path.with_suffix(".json").write_text(json.dumps(keys))
    return path


def frame() -> np.ndarray:
    return np.full((FRAME_H, FRAME_W, 3), 90, np.uint8)


def assert_box(found, expected, tol: int = 2) -> None:
    assert np.all(np.abs(np.array(found) - np.array(expected)) <= tol), (found, expected)


# --- decoding and scaling ---------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_known_boxes_map_back_to_frame_pixels(tmp_path, layout, runtime):
    out = candidates([(100, 50, 80, 120, 1, 0.9), (400, 200, 200, 100, 2, 0.7)], len(NAMES), layout)
    model = load(with_names(save_model(tmp_path / "m.onnx", out)), runtime=runtime)
    assert (model.layout, model.runtime, model.input_wh) == (layout, runtime, (320, 320))
    dets = sorted(model(frame()), key=lambda d: -d.score)
    assert [(d.label, d.score) for d in dets] == [("dog", 0.9), ("bird", 0.7)]
    assert_box(dets[0].box, (100, 50, 80, 120))
    assert_box(dets[1].box, (400, 200, 200, 100))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_coco_names_by_default(tmp_path, layout):
    out = candidates([(10, 10, 50, 50, 0, 0.8), (300, 100, 50, 50, 79, 0.6)], 80, layout)
    dets = load(save_model(tmp_path / "m.onnx", out))(frame())
    assert {d.label for d in dets} == {"person", "toothbrush"} and len(COCO80) == 80


def test_v5_score_is_objectness_times_class_score(tmp_path):
    out = candidates([(10, 10, 50, 50, 0, 0.9, 0.5), (300, 100, 50, 50, 1, 0.9, 0.2)], len(NAMES), V5)
    dets = load(with_names(save_model(tmp_path / "m.onnx", out)))(frame())
    assert [(d.label, d.score) for d in dets] == [("cat", 0.45)]  # 0.9 * 0.2 = 0.18 < 0.25


@pytest.mark.parametrize("layout", LAYOUTS)
def test_boxes_are_clipped_to_the_frame_and_boxes_in_the_padding_dropped(tmp_path, layout):
    out = candidates([(600, 300, 100, 100, 0, 0.9)], len(NAMES), layout)
    if layout == V5:  # and a box wholly in the grey band above the frame
        out[0, 1, :6] = 100, 20, 20, 20, 1.0, 0.9
    else:
        out[0, :5, 1] = 100, 20, 20, 20, 0.9
    dets = load(with_names(save_model(tmp_path / "m.onnx", out)))(frame())
    assert len(dets) == 1
    assert_box(dets[0].box, (600, 300, 40, 60), tol=1)


# --- thresholds and NMS -----------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nms_is_class_aware(tmp_path, layout, runtime):
    out = candidates([(100, 100, 100, 100, 0, 0.9),   # kept
                      (105, 105, 100, 100, 0, 0.8),   # same class, IoU ~0.8: suppressed
                      (102, 102, 100, 100, 1, 0.7),   # other class, same place: kept
                      (400, 100, 100, 100, 0, 0.6)],  # same class, far away: kept
                     len(NAMES), layout)
    dets = load(with_names(save_model(tmp_path / "m.onnx", out)), runtime=runtime)(frame())
    assert sorted((d.label, d.score) for d in dets) == [("cat", 0.6), ("cat", 0.9), ("dog", 0.7)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scores_below_the_threshold_are_dropped(tmp_path, layout):
    out = candidates([(100, 100, 50, 50, 0, 0.3), (300, 100, 50, 50, 1, 0.2)], len(NAMES), layout)
    path = with_names(save_model(tmp_path / "m.onnx", out))
    assert [d.score for d in load(path)(frame())] == [0.3]  # default 0.25
    assert sorted(d.score for d in load(path, min_score=0.1)(frame())) == [0.2, 0.3]
    assert load(path, min_score=0.5)(frame()) == []
    sidecar(path, min_score=0.1)
    assert len(load(path)(frame())) == 2
    assert len(load(path, min_score=0.25)(frame())) == 1  # the spec's argument wins over the sidecar


def test_iou_threshold_from_the_spec(tmp_path):
    out = candidates([(100, 100, 100, 100, 0, 0.9), (130, 100, 100, 100, 0, 0.8)], len(NAMES), V8)  # IoU 0.54
    path = with_names(save_model(tmp_path / "m.onnx", out))
    assert len(load(path)(frame())) == 1  # default IoU 0.45
    assert len(load(path, iou=0.6)(frame())) == 2


# --- names, labels and the sidecar ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["names", "txt", "sidecar"])
def test_class_names_from_a_file_beside_the_model(tmp_path, how):
    names = ("red car", "blue car", "van")
    out = candidates([(100, 100, 50, 50, 2, 0.9)], len(names), V8)
    path = save_model(tmp_path / "m.onnx", out)
    if how == "sidecar":
        sidecar(path, names=list(names))
    else:
        with_names(path, names, suffix=f".{how}")
    assert [d.label for d in load(path)(frame())] == ["van"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_labels_filter_keeps_only_the_named_classes(tmp_path, layout):
    out = candidates([(100, 100, 50, 50, 0, 0.9), (300, 100, 50, 50, 1, 0.8), (500, 100, 50, 50, 2, 0.7)],
                     len(NAMES), layout)
    path = sidecar(save_model(tmp_path / "m.onnx", out), names=list(NAMES), labels=["cat", "bird"])
    assert sorted(d.label for d in load(path)(frame())) == ["bird", "cat"]


def test_names_count_settles_an_ambiguous_shape():
    # [1, 84, 86]: 84 candidates of 5+81 (v5) or 86 candidates of 4+80 (v8)
    assert choose_layout((1, 84, 86), 81, names_given=True) == (V5, 81)
    assert choose_layout((1, 84, 86), 80, names_given=True) == (V8, 80)
    assert choose_layout((1, 84, 86), 3, names_given=False) == (V8, 80)  # no names: the smaller axis
    assert choose_layout((1, 12, 8400), 8, names_given=True) == (V8, 8)
    assert choose_layout((1, 25200, 13), 8, names_given=True) == (V5, 8)
    assert choose_layout((1, 7, 30), 80, names_given=False) == (V8, 3)  # COCO default, custom model
    assert choose_layout((1, 30, 8), 80, names_given=False) == (V5, 3)


def test_dynamic_input_takes_its_size_from_the_sidecar(tmp_path):
    out = candidates([(100, 50, 80, 120, 1, 0.9)], len(NAMES), V8)
    path = save_model(tmp_path / "m.onnx", out, dims=["batch", 3, "height", "width"])
    assert input_shape(path.read_bytes()) == ("images", [None, 3, None, None])
    assert load(with_names(path)).input_wh == (640, 640)
    sidecar(path, input_size=[320, 320])
    dets = load(path)(frame())
    assert_box(dets[0].box, (100, 50, 80, 120))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_first_output_is_decoded_when_there_are_several(tmp_path, runtime):
    out = candidates([(100, 50, 80, 120, 1, 0.45)], len(NAMES), V5)
    path = with_names(save_model(tmp_path / "m.onnx", out, aux=True))
    assert first_output(path.read_bytes()) == "output0"
    dets = load(path, runtime=runtime)(frame())
    assert [(d.label, d.score) for d in dets] == [("dog", 0.45)]
    assert_box(dets[0].box, (100, 50, 80, 120))


def test_input_shape_skips_weights_listed_as_inputs(tmp_path):
    path = save_model(tmp_path / "m.onnx", candidates([], 3, V8), dims=[1, 3, 256, 320])
    model = onnx.load(str(path))
    weight = model.graph.initializer[0]
    model.graph.input.insert(0, helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims)))
    onnx.save(model, str(path))
    assert input_shape(path.read_bytes()) == ("images", [1, 3, 256, 320])


def test_letterbox_keeps_aspect_pads_grey_and_gives_rgb_nchw():
    image = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    image[..., 0] = 255  # pure blue in BGR
    blob, lb = letterbox(image, (320, 320))
    assert blob.shape == (1, 3, 320, 320) and blob.dtype == np.float32
    assert (lb.scale, lb.left, lb.top) == (SCALE, LEFT, TOP)
    assert blob[0, :, 0, 0] == pytest.approx([114 / 255] * 3)  # the band above the frame
    assert blob[0, :, 160, 160] == pytest.approx([0.0, 0.0, 1.0])  # blue is the last RGB channel


# --- runtimes ----------------------------------------------------------------------------------------


def test_falls_back_to_onnxruntime_when_cv2_cannot_run_the_graph(tmp_path):
    out = candidates([(100, 50, 80, 120, 1, 0.9)], len(NAMES), V8)
    path = with_names(save_model(tmp_path / "m.onnx", out, trilu=True))
    model = load(path)
    assert model.runtime == "onnxruntime"
    assert_box(model(frame())[0].box, (100, 50, 80, 120))
    with pytest.raises(PipelineSpecError, match="m.onnx: no runtime can run it: cv2.dnn: "):
        load(path, runtime="cv2")


def test_without_onnxruntime_the_error_says_what_to_install(tmp_path, monkeypatch):
    path = with_names(save_model(tmp_path / "m.onnx", candidates([], 3, V8), trilu=True))
    monkeypatch.setattr(onnx_yolo, "have_onnxruntime", lambda: False)
    with pytest.raises(PipelineSpecError, match=r"m.onnx: .*cv2.dnn: .*pip install onnxruntime"):
        load(path)


# --- errors -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(PipelineSpecError, match=r"nope.onnx: no such file"):
        load(tmp_path / "nope.onnx")


def test_a_file_that_is_not_onnx(tmp_path):
    path = tmp_path / "fake.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(PipelineSpecError, match=r"fake.onnx: not a readable ONNX model"):
        load(path)


@pytest.mark.parametrize("shape", [(1, 84), (1, 84, 30, 1), (2, 84, 30)])
def test_wrong_output_shape(tmp_path, shape):
    path = save_model(tmp_path / "m.onnx", np.zeros(shape, np.float32))
    with pytest.raises(PipelineSpecError, match=r"m.onnx: output shape .* is not \[1, N, 5\+C\]"):
        load(path)


def test_names_that_fit_neither_layout(tmp_path):
    path = with_names(save_model(tmp_path / "m.onnx", candidates([], 5, V8)))  # 5 classes, 3 names
    with pytest.raises(PipelineSpecError, match=r"m.onnx: output shape \[1, 9, 32\] fits neither"):
        load(path)


@pytest.mark.parametrize("keys,words", [
    ({"nmes": ["a"]}, "unknown key"),
    ({"labels": "cat"}, "'labels' must be a list"),
    ({"input_size": [300, 300]}, "multiples of 32"),
    ({"iou": 2}, "'iou' must be a number in 0..1"),
    ({"runtime": "tensorrt"}, "'runtime' must be one of"),
    ({"labels": ["cat", "cow"]}, r"labels \['cow'\] are not among its class names"),
])
def test_bad_sidecar(tmp_path, keys, words):
    path = sidecar(with_names(save_model(tmp_path / "m.onnx", candidates([], 3, V8))), **keys)
    with pytest.raises(PipelineSpecError, match=words):
        load(path)


# --- as a pipeline stage ----------------------------------------------------------------------------


def test_spec_grammar():
    assert normalize_pipeline("ONNX:/models/My.onnx") == "onnx:/models/My.onnx"
    assert normalize_pipeline("onnx:/m/a.onnx:0.4:0.5, face") == "onnx:/m/a.onnx:0.4:0.5,face"
    assert parse_pipeline("onnx:/m/a.onnx:0.4")[0].args == ("/m/a.onnx", 0.4, None, None)
    assert parse_pipeline("onnx:/m/a.onnx:device=cuda")[0].args == ("/m/a.onnx", None, None, "cuda")
    for spec, words in [("onnx", "needs path: onnx:<path>"), ("onnx:/m/a.pt", "path to a .onnx file"),
                        ("onnx:/m/a.onnx:1.5", "min_score must be in"), ("onnx:a.onnx:0.3:0.4:1", "at most 3"),
                        ("cat", "known stages: .*person-hog.*onnx:<path>")]:
        with pytest.raises(PipelineSpecError, match=words):
            parse_pipeline(spec)


def test_runs_in_the_pipeline_and_is_timed(tmp_path):
    out = candidates([(100, 50, 80, 120, 1, 0.9)], len(NAMES), V5)
    path = with_names(save_model(tmp_path / "m.onnx", out))
    result = run_pipeline(f"onnx:{path}:0.5", frame(), StageCache())
    assert [d.label for d in result.detections] == ["dog"]
    assert list(result.timings_ms) == [f"onnx:{path}:0.5"]
