"""NanoDet-g: the pure decoding (made-up outputs with known answers) and the real converted model on
real pictures (the cache `make setup` fills: ~/.cache/framehive/models or $FRAMEHIVE_MODEL_DIR)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cluster.testdata import ASTRONAUT_PERSON, iou, sample_image
from common.errors import PipelineSpecError
from common.labels import COCO80
from common.pipeline import parse_stage
from worker.detectors import StageEnv
from worker.detectors.nanodet import (
    BINS,
    INPUT,
    Found,
    NanoDet,
    crop_windows,
    decode,
    distances,
    input_size,
    merge_crops,
    preprocess,
    thresholds_for,
    to_detections,
    unsure_and_big,
    unsure_windows,
)
from worker.models.store import ModelStore
from worker.pipeline import StageCache

# ----- pure parts ----------------------------------------------------------------------------------


def one_hot_bins(ltrb: tuple[int, int, int, int]) -> np.ndarray:
    """Bin logits whose softmax puts (almost) all weight on bin k for each side."""
    out = np.full((4, BINS), -50.0, np.float32)
    for side, k in enumerate(ltrb):
        out[side, k] = 50.0
    return out.reshape(1, 4 * BINS)


def empty_outputs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    sizes = [(-(-INPUT // s)) ** 2 for s in (8, 16, 32)]
    return [np.zeros((1, n, 80), np.float32) for n in sizes], [np.zeros((1, n, 4 * BINS), np.float32) for n in sizes]


def test_distances_are_the_softmax_expectation_times_the_stride():
    assert distances(one_hot_bins((1, 2, 3, 10)), 8).tolist() == [[8.0, 16.0, 24.0, 80.0]]
    uniform = np.zeros((1, 4 * BINS), np.float32)
    assert np.allclose(distances(uniform, 16), 5 * 16)  # mean of bins 0..10 is 5


def test_decode_places_a_box_around_its_cell_centre():
    scores, dists = empty_outputs()
    n = INPUT // 16  # stride 16: 26 x 26 cells; cell (x=3, y=5) has centre (56, 88)
    row = 5 * n + 3
    scores[1][0, row, COCO80.index("dog")] = 0.9
    dists[1][0, row] = one_hot_bins((1, 2, 3, 4))
    boxes, s, ids = decode(scores, dists, thresholds_for({"dog": 0.5}))
    assert boxes.tolist() == [[56 - 16, 88 - 32, 56 + 48, 88 + 64]]
    # a 416 x 224 input: 26 x 14 cells at stride 16, the same row is now cell (x=3, y=5) still
    small = [np.zeros((1, (416 // st) * (-(-224 // st)), n), np.float32) for st in (8, 16, 32) for n in (80,)]
    small_d = [np.zeros((1, (416 // st) * (-(-224 // st)), 4 * BINS), np.float32) for st in (8, 16, 32)]
    small[1][0, row, COCO80.index("dog")] = 0.9
    small_d[1][0, row] = one_hot_bins((1, 2, 3, 4))
    boxes, _, _ = decode(small, small_d, thresholds_for({"dog": 0.5}), (224, 416))
    assert boxes.tolist() == [[56 - 16, 88 - 32, 56 + 48, 88 + 64]]
    assert s.tolist() == pytest.approx([0.9]) and COCO80[int(ids[0])] == "dog"


def test_decode_keeps_only_the_classes_asked_for_at_their_own_thresholds():
    scores, dists = empty_outputs()
    scores[0][0, 10, COCO80.index("car")] = 0.45
    scores[0][0, 20, COCO80.index("person")] = 0.45
    scores[0][0, 30, COCO80.index("chair")] = 0.99  # not asked for
    _, s, ids = decode(scores, dists, thresholds_for({"car": 0.4, "person": 0.5}))
    assert [COCO80[int(i)] for i in ids] == ["car"]


def test_input_is_the_frame_s_aspect_rounded_up_to_the_stride():
    assert input_size((640, 480)) == (416, 320)
    assert input_size((768, 432)) == (416, 256)
    assert input_size((480, 640)) == (320, 416)
    assert input_size((500, 500)) == (416, 416)
    assert input_size((4000, 100)) == (416, 32)


def test_preprocess_letterboxes_and_normalises():
    frame = np.full((100, 200, 3), 255, np.uint8)
    blob, lb = preprocess(frame)
    assert blob.shape == (1, 3, 224, INPUT) and lb.scale == pytest.approx(INPUT / 200)
    assert lb.top == (224 - 208) // 2 and lb.left == 0
    assert blob[0, 0, lb.top + 5, 5] == pytest.approx((255 - 103.53) / 57.375)  # B channel, inside
    assert blob[0, 2, 0, 0] == pytest.approx(-123.675 / 58.395)  # R channel, padding (pixel 0)


def test_crops_only_for_wide_frames():
    assert crop_windows((480, 270), "auto") == [(0, 270, 270), (210, 270, 210)]
    assert crop_windows((768, 432), "on") == [(0, 432, 432), (336, 432, 336)]
    assert crop_windows((400, 300), "on") == []  # not wide: no crops whatever the mode
    assert crop_windows((480, 270), "off") == []


def test_auto_runs_only_the_crops_that_hold_an_unsure_candidate():
    windows = crop_windows((480, 270), "auto")
    th = thresholds_for({"person": 0.5, "dog": 0.4})
    clear = found((20, 60, 70, 200, 0.8, "person"), (300, 60, 350, 200, 0.45, "dog"))
    assert unsure_windows(windows, clear, th) == []  # both over their own thresholds
    left_unsure = found((20, 60, 70, 200, 0.35, "person"))
    assert unsure_windows(windows, left_unsure, th) == [0]
    middle = found((220, 60, 260, 200, 0.31, "person"))  # centre 240: inside both crops
    assert unsure_windows(windows, middle, th) == [0, 1]


def test_only_a_big_unsure_candidate_asks_for_the_smaller_pass():
    th = thresholds_for({"person": 0.5})
    assert not unsure_and_big((640, 480), found(), th)
    assert not unsure_and_big((640, 480), found((100, 20, 300, 470, 0.8, "person")), th)  # big, but clear
    assert not unsure_and_big((640, 480), found((100, 300, 160, 470, 0.4, "person")), th)  # unsure, 170 px
    assert unsure_and_big((640, 480), found((100, 150, 300, 450, 0.4, "person")), th)  # unsure, 300 >= 0.45 x 640


def found(*rows: tuple[float, float, float, float, float, str]) -> Found:
    return Found(np.array([r[:4] for r in rows], np.float32).reshape(-1, 4), np.array([r[4] for r in rows], np.float32),
                 np.array([COCO80.index(r[5]) for r in rows], np.int64))


def test_a_half_person_at_a_crop_edge_is_dropped_when_seen_whole():
    full = found((180, 50, 260, 250, 0.7, "person"))
    left = found((180, 50, 270, 250, 0.8, "person"))  # cut by the left crop's inner edge at x=270
    merged = to_detections(merge_crops(full, [(left, 270)]))
    assert len(merged) == 1 and merged[0].score == pytest.approx(0.7)


def test_a_person_only_the_crop_sees_is_kept():
    full = found()
    left = found((20, 60, 70, 200, 0.66, "person"))
    right = found((300, 60, 350, 200, 0.61, "person"))
    assert len(merge_crops(full, [(left, 270), (right, 210)])) == 2


def test_duplicates_of_full_and_crop_passes_merge_to_one():
    full = found((20, 60, 70, 200, 0.52, "person"))
    left = found((22, 58, 71, 203, 0.71, "person"))
    merged = to_detections(merge_crops(full, [(left, 270)]))
    assert len(merged) == 1 and merged[0].score == pytest.approx(0.71)


# ----- the real model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path() -> Path:
    store = ModelStore()
    assert store.ready(), f"the NanoDet model is not built ({store.problem()}): `make setup` builds it"
    return store.onnx_path


@pytest.fixture(scope="module")
def net(model_path: Path) -> NanoDet:
    return NanoDet(model_path, device="cpu", threads=1)


def test_the_astronaut_is_a_person(net: NanoDet):
    dets = to_detections(net.find(sample_image("astronaut.png"), thresholds_for({"person": 0.5})))
    assert len(dets) == 1 and dets[0].label == "person" and iou(dets[0].box, ASTRONAUT_PERSON) > 0.9


@pytest.mark.parametrize(("picture", "label", "min_score"), [("chelsea.png", "cat", 0.5),
                                                           ("motorcycle_left.png", "motorcycle", 0.75),
                                                           ("horse.png", "horse", 0.6),
                                                           ("camera.png", "person", 0.8)])
def test_real_pictures_get_their_coco_class(net: NanoDet, picture: str, label: str, min_score: float):
    """scikit-image's photos, each of one obvious thing: the top detection names it."""
    img = sample_image(picture)
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
    dets = to_detections(net.find(img, thresholds_for({name: 0.3 for name in COCO80})))
    assert dets and dets[0].label == label and dets[0].score >= min_score, dets
    x, y, w, h = dets[0].box
    assert 0 <= x and 0 <= y and x + w <= img.shape[1] and y + h <= img.shape[0]
    assert w * h > 0.1 * img.shape[0] * img.shape[1]  # the subject fills the picture


def test_boxes_scale_with_the_frame(net: NanoDet):
    """The same picture at two sizes: the box is in each frame's own pixels."""
    img = sample_image("astronaut.png")
    th = thresholds_for({"person": 0.5})
    small = to_detections(net.find(cv2.resize(img, (256, 256)), th))[0].box
    big = to_detections(net.find(img, th))[0].box
    assert iou(tuple(v * 2 for v in small), big) > 0.9


def test_crops_find_small_people_in_a_low_resolution_wide_frame(net: NanoDet):
    """Two small (50 px) astronauts at the sides of a 480x270 frame: one pass scores one of them 0.43,
    under the threshold but over auto's probe, so auto runs that side's crop, which lifts it over 0.5."""
    frame = cv2.resize(sample_image("grass.png"), (480, 270))
    portrait = cv2.resize(sample_image("astronaut.png"), (50, 50), interpolation=cv2.INTER_AREA)
    frame[220:270, 10:60] = portrait
    frame[220:270, 420:470] = portrait
    th = thresholds_for({"person": 0.5})
    with_crops = to_detections(net.find(frame, th, "auto"))
    assert len(with_crops) == 2, with_crops
    assert sorted(d.box[0] < 240 for d in with_crops) == [False, True]
    assert len(to_detections(net.find(frame, th, "off"))) == 1
    assert len(to_detections(net.find(frame, th, "on"))) == 2


def test_auto_on_a_clear_wide_frame_is_the_single_pass(net: NanoDet):
    frame = cv2.resize(sample_image("grass.png"), (960, 540))
    frame[140:540, 280:680] = cv2.resize(sample_image("astronaut.png"), (400, 400), interpolation=cv2.INTER_AREA)
    th = thresholds_for({"person": 0.5})
    single = to_detections(net.find(frame, th, "off"))
    assert len(single) == 1 and to_detections(net.find(frame, th, "auto")) == single


def near_camera(background: str) -> np.ndarray:
    """The cameraman 380 px tall at the bottom of a 640x480 frame: near the camera, as a porch or an
    indoor camera sees someone."""
    frame = cv2.resize(sample_image(background), (640, 480))
    person = sample_image("camera.png")
    w = 380 * person.shape[1] // person.shape[0]
    x = (640 - w) // 2
    frame[100:480, x:x + w] = cv2.resize(person, (w, 380), interpolation=cv2.INTER_AREA)
    return frame


@pytest.mark.parametrize("background", ["grass.png", "brick.png"])
def test_a_person_near_the_camera_in_a_4_3_frame_is_found(net: NanoDet, background: str):
    """One pass scores him under the threshold (NanoDet-g's dip for boxes ~210-310 px tall in its 416
    input); auto's probe sees a big unsure candidate and the smaller pass finds him clearly."""
    frame = near_camera(background)
    th = thresholds_for({"person": 0.5})
    assert to_detections(net.find(frame, th, "off")) == []
    for mode in ("auto", "on"):
        dets = to_detections(net.find(frame, th, mode))
        assert [d.label for d in dets] == ["person"] and dets[0].score >= 0.7, (mode, dets)
        x, y, w, h = dets[0].box
        assert h >= 300 and y + h <= 480 and x + w <= 640


SHARED_HALL = Path(__file__).resolve().parents[3] / "shared" / "samples" / "one-by-one-person-detection.mp4"


@pytest.mark.skipif(not SHARED_HALL.is_file(), reason="needs the shared hall clip next to the checkout")
def test_someone_seen_from_behind_filling_a_640x480_frame_is_found(net: NanoDet):
    """Frame 300 of the hall clip, mirrored and cut to 4:3 (576x432, then 640x480): a man standing with
    his back to the camera, 85 % of the frame's height. One pass scores him ~0.45; auto finds him."""
    cap = cv2.VideoCapture(str(SHARED_HALL))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 300)
    ok, frame = cap.read()
    cap.release()
    assert ok
    frame = cv2.resize(cv2.flip(frame, 1)[:, 96:672], (640, 480))
    th = thresholds_for({"person": 0.5})
    assert to_detections(net.find(frame, th, "off")) == []
    dets = to_detections(net.find(frame, th, "auto"))
    assert [d.label for d in dets] == ["person"] and dets[0].score >= 0.7 and dets[0].box[3] >= 0.7 * 480, dets


def test_stages_share_one_session_and_report_coco_names(model_path: Path):
    cache = StageCache(StageEnv(device="cpu", threads=1))
    frame = sample_image("astronaut.png")
    assert [d.label for d in cache.get(parse_stage("person"))(frame)] == ["person"]
    assert [d.label for d in cache.get(parse_stage("objects:person+cup"))(frame)] == ["person"]
    assert cache.get(parse_stage("objects:cup+dog"))(frame) == []
    assert len([k for k in cache.env._shared if k[0] == "nanodet"]) == 1


def test_person_falls_back_to_person_ssd_when_the_model_is_missing(tmp_path: Path, caplog):
    cache = StageCache(StageEnv(model_dir=tmp_path))
    frame = sample_image("astronaut.png")
    with caplog.at_level("WARNING"):
        first = cache.get(parse_stage("person"))(frame)
        cache.get(parse_stage("person:0.6"))
    assert [d.label for d in first] == ["person"] and iou(first[0].box, ASTRONAUT_PERSON) > 0.8
    warnings = [r for r in caplog.records if "person-ssd" in r.getMessage()]
    assert len(warnings) == 1 and "python -m worker.models" in warnings[0].getMessage()
    with pytest.raises(PipelineSpecError, match="not installed"):
        cache.get(parse_stage("objects"))


def test_person_takes_the_model_once_it_is_installed_without_a_restart(model_path: Path, tmp_path: Path,
                                                                         monkeypatch, caplog):
    """A worker started before `python -m worker.models` ran: `person` runs person-ssd, looks at the
    cache again every MODEL_RECHECK_S, and runs NanoDet-g from the frame after the model appears; the
    capability report offers `objects` from then on too."""
    import shutil

    import worker.detectors as detectors
    from worker.capability import Capabilities

    env = StageEnv(model_dir=tmp_path, device="cpu", threads=1)
    now = [0.0]
    caps = Capabilities(env, clock=lambda: now[0])
    assert caps.report()["model"] == "" and "objects" not in caps.report()["stages"]
    monkeypatch.setattr(detectors, "MODEL_RECHECK_S", 0.0)  # look on every frame (the clock is real here)
    person = StageCache(env).get(parse_stage("person"))
    frame = sample_image("astronaut.png")
    assert [d.label for d in person(frame)] == ["person"]
    assert not [k for k in env._shared if k[0] == "nanodet"], "still on person-ssd"
    shutil.copytree(ModelStore().dir, ModelStore(root=tmp_path).dir)  # what `python -m worker.models` writes
    with caplog.at_level("INFO"):
        found = person(frame)
    assert [k for k in env._shared if k[0] == "nanodet"], "NanoDet-g loaded"
    assert any("installed now" in r.getMessage() for r in caplog.records)
    assert [d.label for d in found] == ["person"] and iou(found[0].box, ASTRONAUT_PERSON) > 0.9
    now[0] += 59.0
    assert caps.report()["model"] == "", "the report probes the cache at most once a minute"
    now[0] += 1.0
    report = caps.report()
    assert report["model"] == "nanodet-g-416" and "objects" in report["stages"]
