"""Pure image filters for file jobs: image -> image, each with the halo it needs to tile without seams.

Channel layout: every filter returns the layout it was given. A BGR (HxWx3 uint8) input gives a
BGR output, so chains compose and the encoder always gets colour; filters that compute on
intensity (canny, sobel, threshold) convert to gray and replicate the result into three channels.
A gray (HxW) input gives a gray output.

Names, arguments and halos (the pixels around a tile each filter looks at) live in the shared stage
table, common/pipeline.py; worker/pipeline.py runs these functions as pipeline stages. Every filter
tiles exactly with its halo except canny, whose hysteresis follows edges arbitrarily far: its 16 px
halo is practical, not exact (tests/unit/test_filters.py measures the agreement).
"""

from __future__ import annotations

import cv2
import numpy as np

CANNY_LOW = 100
CANNY_HIGH = 200
THRESHOLD_BLOCK = 11
THRESHOLD_C = 2



def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _like(result: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A gray result in the channel layout of `image`."""
    return result if image.ndim == 2 else cv2.cvtColor(result, cv2.COLOR_GRAY2BGR)


def copy(image: np.ndarray) -> np.ndarray:
    """The image unchanged (a pass-through stage: the job only re-encodes its video)."""
    return image


def canny(image: np.ndarray, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> np.ndarray:
    """Canny edges (255 on edges, 0 elsewhere) with a 3x3 Sobel aperture and L1 gradient."""
    return _like(cv2.Canny(_gray(image), low, high), image)


def blur(image: np.ndarray, k: int) -> np.ndarray:
    """Box blur with an odd k x k kernel."""
    return cv2.blur(image, (k, k))


def gaussian(image: np.ndarray, k: int) -> np.ndarray:
    """Gaussian blur with an odd k x k kernel, sigma derived from k."""
    return cv2.GaussianBlur(image, (k, k), 0)


def sobel(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude sqrt(dx^2 + dy^2) of 3x3 Sobel derivatives, saturated to 8 bits."""
    gray = _gray(image)
    dx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return _like(cv2.convertScaleAbs(cv2.magnitude(dx, dy)), image)


def threshold(image: np.ndarray) -> np.ndarray:
    """Adaptive mean threshold over an 11 x 11 block minus 2, binary 0/255."""
    gray = _gray(image)
    out = cv2.adaptiveThreshold(
        gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, THRESHOLD_BLOCK, THRESHOLD_C
    )
    return _like(out, image)


def motion(image: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Absolute difference with the previous frame; a black frame when there is none."""
    if previous is None:
        return np.zeros_like(image)
    if previous.shape != image.shape or previous.dtype != image.dtype:
        raise ValueError(f"previous frame {previous.shape} {previous.dtype} differs from {image.shape} {image.dtype}")
    return cv2.absdiff(image, previous)
