"""The grid a file job really uses: detector pipelines travel as whole frames, filters as tiles."""

import numpy as np
import pytest

from common.jobproto import parse_handshake
from common.pipeline import parse_pipeline
from common.rawtile import encode_raw_tile
from receiver.jobs.plan import decode_tile_bytes, encode_tile_bytes, grid_fields, job_grid


@pytest.mark.parametrize("spec", ["canny,blur:3", "gaussian:5,sobel", "blur:3,motion", "threshold"])
def test_filter_pipelines_keep_the_requested_grid(spec):
    assert job_grid(parse_pipeline(spec), (3, 3)) == ((3, 3), "")


@pytest.mark.parametrize("spec, named", [("person", "person"), ("face", "face"), ("blur:3,person", "person"),
                                         ("face,person", "face, person")])
def test_detector_pipelines_travel_as_whole_frames_and_say_why(spec, named):
    grid, note = job_grid(parse_pipeline(spec), (3, 2))
    assert grid == (1, 1) and "whole frames" in note and f"({named})" in note


def test_a_detector_job_asked_for_1x1_has_nothing_to_explain():
    assert job_grid(parse_pipeline("person"), (1, 1)) == ((1, 1), "")


def test_grid_fields_report_used_and_requested_grids():
    hs = parse_handshake({"type": "handshake", "version": 1, "protocol": "file", "path": "/x.mp4", "tiles": "3x3",
                          "filters": "person"})
    fields = grid_fields(hs)
    assert fields["grid"] == "1x1" and fields["grid_requested"] == "3x3" and fields["grid_note"]


@pytest.mark.parametrize("fmt", ["raw", "png"])
def test_tile_bytes_round_trip_losslessly_in_both_formats(fmt):
    pixels = np.random.default_rng(1).integers(0, 256, (37, 51, 3), dtype=np.uint8)
    assert np.array_equal(decode_tile_bytes(encode_tile_bytes(pixels, fmt)), pixels)


def test_tile_bytes_that_are_not_an_image_decode_to_none():
    assert decode_tile_bytes(b"") is None
    assert decode_tile_bytes(b"garbage") is None
    assert decode_tile_bytes(encode_raw_tile(np.zeros((4, 4), np.uint8))[:-3]) is None
