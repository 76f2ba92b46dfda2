"""Filters: shapes and arguments, and tiled output equal to whole-frame output on a real clip."""

import cv2
import numpy as np
import pytest

from cluster.local import packaged_clip
from common.tiling import assemble, cut, plan_tiles
from worker.filters import apply_chain, chain_exact, chain_halo, gaussian, motion, parse_chain, sobel, validate

GRIDS = [(3, 3), (2, 4)]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Consecutive pairs of BGR frames (640x272) from the bikes clip, 5 pairs spread over it."""
    cap = cv2.VideoCapture(str(packaged_clip("bikes.mp4")))
    out, i = [], 0
    while len(out) < 10:
        ok, frame = cap.read()
        if not ok:
            break
        if i % 50 in (0, 1):
            out.append(frame)
        i += 1
    cap.release()
    assert len(out) == 10, "could not read bikes.mp4"
    return out


def tiled(frame, specs, grid, halo, previous=None):
    """Run the chain tile by tile (previous frame cut with the same tile) and reassemble."""
    h, w = frame.shape[:2]
    tiles = plan_tiles(w, h, *grid, halo)
    prev = (lambda t: None) if previous is None else (lambda t: cut(previous, t))
    return assemble(((t, apply_chain(cut(frame, t), specs, prev(t))) for t in tiles), w, h)


EXACT_CHAINS = [
    "blur:3", "blur:31", "gaussian:5", "gaussian:31", "sobel", "threshold", "motion",
    "gaussian:5,sobel", "blur:3,threshold", "blur:5,motion,gaussian:3", "sobel,threshold",
]


@pytest.mark.parametrize("text", EXACT_CHAINS)
def test_local_filters_tile_without_seams(frames, text):
    specs = parse_chain(text)
    assert chain_exact(specs)
    for previous, frame in zip(frames[0::2], frames[1::2]):
        whole = apply_chain(frame, specs, previous)
        assert whole.shape == frame.shape and whole.dtype == np.uint8
        for grid in GRIDS:
            assert np.array_equal(tiled(frame, specs, grid, chain_halo(specs), previous), whole), grid


@pytest.mark.parametrize("text", ["blur:3", "gaussian:5,sobel", "blur:3,threshold"])
def test_a_halo_one_pixel_short_shows_seams(frames, text):
    specs = parse_chain(text)  # proves the equality above is sensitive to the halo
    assert not np.array_equal(tiled(frames[1], specs, (3, 3), chain_halo(specs) - 1), apply_chain(frames[1], specs))


def differing_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.any(a != b, axis=-1)))


# Canny's hysteresis follows edges across tile borders, so tiling cannot be exact. Measured on every
# 10th frame of bikes.mp4, grids 3x3 and 2x4, halo 16: at most 0.078% of pixels differ for canny and
# 0.21% for canny,blur:3 (halo 17); with halo 2 it is 0.12% / 0.37%, with halo 32 0.016% / 0.057%.
# The bounds below keep a ~2.5x margin over those worst cases.
@pytest.mark.parametrize("text, bound", [("canny", 0.002), ("canny,blur:3", 0.005)])
def test_canny_tiled_agrees_closely_but_not_exactly(frames, text, bound):
    specs = parse_chain(text)
    assert not chain_exact(specs) and chain_halo(specs) >= 16
    fractions = [
        differing_fraction(tiled(f, specs, g, chain_halo(specs)), apply_chain(f, specs)) for f in frames for g in GRIDS
    ]
    assert max(fractions) <= bound, fractions


def test_layout_follows_the_input_and_intensity_filters_replicate_gray():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for text in ["canny", "sobel", "threshold", "blur:3", "gaussian:3"]:
        specs = parse_chain(text)
        colour_out, gray_out = apply_chain(bgr, specs), apply_chain(gray, specs)
        assert colour_out.shape == bgr.shape and gray_out.shape == gray.shape
        if text in ("canny", "sobel", "threshold"):
            assert all(np.array_equal(colour_out[..., c], gray_out) for c in range(3))
    assert set(np.unique(apply_chain(bgr, [("canny",)]))) <= {0, 255}
    assert set(np.unique(apply_chain(bgr, [("threshold",)]))) <= {0, 255}


def test_motion_is_black_without_a_previous_frame_and_the_difference_with_one():
    a = np.full((8, 8, 3), 10, np.uint8)
    b = a.copy()
    b[2:4, 2:4] = 250
    assert not motion(a, None).any()
    assert np.array_equal(motion(b, a), np.abs(b.astype(int) - a.astype(int)).astype(np.uint8))
    assert not apply_chain(b, [("motion",)]).any()
    with pytest.raises(ValueError, match="differs"):
        motion(a, a[..., 0])


def test_halos_add_up_along_the_chain():
    assert chain_halo(parse_chain("blur:3")) == 1
    assert chain_halo(parse_chain("gaussian:31")) == 15
    assert chain_halo(parse_chain("sobel,threshold,motion")) == 1 + 5 + 0
    assert chain_halo(parse_chain("canny,blur:3")) == 16 + 1
    assert parse_chain(" Canny:50:150 , blur:5") == [("canny", 50, 150), ("blur", 5)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("edges", "unknown filter"), ("blur", "one argument"), ("blur:4", "odd"), ("gaussian:33", "odd"),
        ("blur:x", "integers"), ("sobel:3", "no arguments"), ("canny:200:100", "low <= high"),
        ("motion,motion", "at most one motion"), ("", "unknown filter"),
    ],
)
def test_bad_chains_are_refused_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_chain(text)


def test_validate_refuses_an_empty_chain_and_non_tuples():
    for specs in ([], ["blur"], [()]):
        with pytest.raises(ValueError):
            validate(specs)


def test_filter_stages_run_in_the_worker_pipeline_in_order():
    from common.pipeline import parse_stage
    from worker.pipeline import StageCache, run_pipeline

    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (120, 160, 3), np.uint8)
    cache = StageCache()
    out = run_pipeline("gaussian:5,sobel,face", image, cache)
    assert np.array_equal(out.image, sobel(gaussian(image, 5)))
    assert list(out.timings_ms) == ["gaussian:5", "sobel", "face"] and out.detections == ()
    assert run_pipeline("face", image, cache).image is None  # detectors alone return no image
    assert cache.get(parse_stage("blur:3")) is cache.get(parse_stage("blur"))  # built once
