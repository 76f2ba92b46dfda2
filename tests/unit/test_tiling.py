"""Tiling: cores partition the frame exactly, cuts add a clipped halo, cut/place round-trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.rawtile import RAW_HEADER_BYTES, decode_raw_tile, encode_raw_tile, is_raw_tile
from common.tiling import Rect, assemble, cut, parse_grid, place, plan_tiles


@pytest.mark.parametrize("text, grid", [("3x3", (3, 3)), ("2X4", (2, 4)), (" 16x1 ", (16, 1)), ("1x16", (1, 16))])
def test_parse_grid_accepts_cols_by_rows(text, grid):
    assert parse_grid(text) == grid


@pytest.mark.parametrize("text", ["", "3", "3x", "x3", "3*3", "3x3x3", "-1x2", "a x b", "3.0x3", None])
def test_parse_grid_refuses_malformed_specs(text):
    with pytest.raises(ValueError, match="expected COLSxROWS"):
        parse_grid(text)


@pytest.mark.parametrize("text, word", [("0x3", "columns"), ("17x2", "columns"), ("3x0", "rows"), ("2x99", "rows")])
def test_parse_grid_refuses_out_of_range_counts(text, word):
    with pytest.raises(ValueError, match=f"{word} must be 1..16"):
        parse_grid(text)


@st.composite
def plans(draw):
    cols, rows = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    width, height = draw(st.integers(cols, 200)), draw(st.integers(rows, 200))
    return width, height, cols, rows, draw(st.integers(0, 32))


@settings(max_examples=300, deadline=None)
@given(plans())
def test_cores_partition_the_frame_and_cuts_are_clipped_halos(plan):
    width, height, cols, rows, halo = plan
    tiles = plan_tiles(width, height, cols, rows, halo)
    assert [(t.index, t.col, t.row) for t in tiles] == [(i, i % cols, i // cols) for i in range(cols * rows)]
    cover = np.zeros((height, width), np.int32)
    frame = Rect(0, 0, width, height)
    for t in tiles:
        cover[t.core.y : t.core.y2, t.core.x : t.core.x2] += 1
        assert frame.contains(t.cut) and t.cut.contains(t.core)
        assert t.cut == Rect(
            max(0, t.core.x - halo), max(0, t.core.y - halo),
            min(width, t.core.x2 + halo) - max(0, t.core.x - halo),
            min(height, t.core.y2 + halo) - max(0, t.core.y - halo),
        )
        assert (t.offset_x, t.offset_y) == (t.core.x - t.cut.x, t.core.y - t.cut.y)
    assert (cover == 1).all()  # no gaps, no overlaps
    for sizes in ({t.core.w for t in tiles}, {t.core.h for t in tiles}):
        assert max(sizes) - min(sizes) <= 1


@settings(max_examples=100, deadline=None)
@given(plans(), st.sampled_from([(), (3,)]), st.integers(0, 2**32 - 1))
def test_cut_then_place_rebuilds_the_frame(plan, channels, seed):
    width, height, cols, rows, halo = plan
    frame = np.random.default_rng(seed).integers(0, 256, (height, width, *channels), dtype=np.uint8)
    tiles = plan_tiles(width, height, cols, rows, halo)
    pieces = [(t, cut(frame, t)) for t in tiles]
    assert all(p.shape[:2] == (t.cut.h, t.cut.w) and p.flags.c_contiguous for t, p in pieces)
    assert np.array_equal(assemble(pieces, width, height), frame)


def test_assemble_takes_the_outputs_channel_layout_not_the_inputs():
    frame = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    tiles = plan_tiles(60, 40, 3, 2, 4)
    gray = [(t, cut(frame, t)[..., 1].astype(np.float32)) for t in tiles]  # colour in, gray float out
    out = assemble(gray, 60, 40)
    assert out.shape == (40, 60) and out.dtype == np.float32
    assert np.array_equal(out, frame[..., 1])


def test_place_refuses_mismatched_shapes_and_plan_refuses_bad_inputs():
    tile = plan_tiles(30, 20, 2, 2, 3)[0]
    with pytest.raises(ValueError, match="expected"):
        place(np.zeros((20, 30), np.uint8), tile, np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        place(np.zeros((20, 30), np.uint8), tile, np.zeros((tile.cut.h, tile.cut.w, 3), np.uint8))
    with pytest.raises(ValueError, match="does not contain"):
        cut(np.zeros((5, 5), np.uint8), tile)
    with pytest.raises(ValueError, match="too small"):
        plan_tiles(3, 20, 4, 2, 0)
    with pytest.raises(ValueError, match="halo"):
        plan_tiles(30, 20, 2, 2, -1)
    with pytest.raises(ValueError, match="no tiles"):
        assemble([], 30, 20)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (432, 768), (3, 4, 3), (1, 1, 3), (6, 9, 1)])
def test_raw_tile_round_trips_pixels_and_layout(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    data = encode_raw_tile(image)
    assert is_raw_tile(data) and len(data) == RAW_HEADER_BYTES + image.size
    back = decode_raw_tile(data)
    assert np.array_equal(back, image.reshape(shape[:2]) if image.ndim == 3 and shape[2] == 1 else image)


def test_raw_tile_of_a_non_contiguous_cut_is_the_cut():
    frame = np.arange(20 * 30 * 3, dtype=np.uint32).astype(np.uint8).reshape(20, 30, 3)
    view = frame[3:11, 4:19]
    assert not view.flags["C_CONTIGUOUS"]
    assert np.array_equal(decode_raw_tile(encode_raw_tile(view)), view)


@pytest.mark.parametrize("image, message", [(np.zeros((2, 2), np.uint16), "must be uint8"),
                                            (np.zeros((2, 2, 4), np.uint8), "HxWx3"),
                                            (np.zeros(5, np.uint8), "HxWx3")])
def test_raw_tile_refuses_what_it_cannot_describe(image, message):
    with pytest.raises(ValueError, match=message):
        encode_raw_tile(image)


def test_raw_tile_refuses_truncated_or_foreign_bytes():
    data = encode_raw_tile(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="needs 48 pixel bytes, got 47"):
        decode_raw_tile(data[:-1])
    with pytest.raises(ValueError, match="shorter than"):
        decode_raw_tile(data[:5])
    with pytest.raises(ValueError, match="not a raw tile"):
        decode_raw_tile(b"\x89PNG" + data[4:])
    with pytest.raises(ValueError, match="invalid"):
        decode_raw_tile(data[:12] + b"\x02" + data[13:])
    assert not is_raw_tile(b"\xff\xd8\xff\xe0") and not is_raw_tile(b"\x89PNG\r\n") and not is_raw_tile(b"")
