"""JPEG sizes from headers."""

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.jpeginfo import jpeg_size


@pytest.mark.parametrize("w,h", [(640, 480), (1, 1), (1920, 1080), (33, 7)])
@pytest.mark.parametrize("progressive", [0, 1])
def test_sizes_of_real_jpegs(w, h, progressive):
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])[1].tobytes()
    assert jpeg_size(data) == (w, h)


@given(st.binary(max_size=200))
def test_garbage_gives_none_or_a_size_never_an_error(data):
    out = jpeg_size(data)
    assert out is None or (isinstance(out, tuple) and len(out) == 2)


def test_truncated_and_png():
    data = cv2.imencode(".jpg", np.zeros((10, 20, 3), np.uint8))[1].tobytes()
    assert jpeg_size(data[:20]) is None
    assert jpeg_size(cv2.imencode(".png", np.zeros((10, 20, 3), np.uint8))[1].tobytes()) is None
