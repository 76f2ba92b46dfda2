"""Pure image filters for file jobs: image -> image, each with the halo it needs to tile without seams.

Channel layout: every filter returns the layout it was given. A BGR (HxWx3 uint8) input gives a
BGR output, so chains compose and the encoder always gets colour; filters that compute on
intensity (canny, sobel, threshold) convert to gray and replicate the result into three channels.
A gray (HxW) input gives a gray output.

Halo: the radius of influence in pixels. Running a filter on a tile cut with that halo and keeping
the core gives the same pixels as running it on the whole frame; a chain's halo is the sum of its
filters' halos. Every filter is exact in that sense except canny, whose hysteresis follows edges
arbitrarily far: its halo (16 px) is practical, not exact (see `FilterDef.exact` and the tests for
the measured agreement).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

CANNY_LOW = 100
CANNY_HIGH = 200
CANNY_HALO_PX = 16  # 3x3 Sobel + non-max suppression need 2 px; the rest is margin for hysteresis
MAX_KERNEL = 31
THRESHOLD_BLOCK = 11
THRESHOLD_C = 2

FilterSpec = tuple  # (name, *args), e.g. ("blur", 3) or ("canny",)


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _like(result: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A gray result in the channel layout of `image`."""
    return result if image.ndim == 2 else cv2.cvtColor(result, cv2.COLOR_GRAY2BGR)


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


def _odd_kernel(name: str, args: tuple) -> None:
    if len(args) != 1:
        raise ValueError(f"{name} takes one argument, an odd kernel size: '{name}:3'")
    k = args[0]
    if not isinstance(k, int) or isinstance(k, bool) or not (1 <= k <= MAX_KERNEL and k % 2 == 1):
        raise ValueError(f"{name} kernel must be an odd integer 1..{MAX_KERNEL}, got {k!r}")


def _no_args(name: str, args: tuple) -> None:
    if args:
        raise ValueError(f"{name} takes no arguments, got {args!r}")


def _canny_args(name: str, args: tuple) -> None:
    if not args:
        return
    ok = len(args) == 2 and all(isinstance(a, int) and not isinstance(a, bool) for a in args)
    if not ok or not 0 <= args[0] <= args[1] <= 1000:
        raise ValueError(f"canny takes no arguments or two integers 0 <= low <= high <= 1000, got {args!r}")


@dataclass(frozen=True)
class FilterDef:
    """A named filter: how to check its arguments, its halo in px, and whether tiling is exact."""

    check: Callable[[str, tuple], None]
    halo: Callable[[tuple], int]
    exact: bool = True


FILTERS: dict[str, FilterDef] = {
    "canny": FilterDef(_canny_args, lambda a: CANNY_HALO_PX, exact=False),
    "blur": FilterDef(_odd_kernel, lambda a: a[0] // 2),
    "gaussian": FilterDef(_odd_kernel, lambda a: a[0] // 2),
    "sobel": FilterDef(_no_args, lambda a: 1),
    "threshold": FilterDef(_no_args, lambda a: THRESHOLD_BLOCK // 2),
    "motion": FilterDef(_no_args, lambda a: 0),
}


def validate(specs: Sequence[FilterSpec]) -> None:
    """Raise ValueError for an empty chain, an unknown name, bad arguments or a second `motion`."""
    if not specs:
        raise ValueError("empty filter chain")
    for spec in specs:
        if not isinstance(spec, tuple) or not spec or spec[0] not in FILTERS:
            raise ValueError(f"unknown filter {spec!r}; known: {', '.join(sorted(FILTERS))}")
        FILTERS[spec[0]].check(spec[0], spec[1:])
    if sum(spec[0] == "motion" for spec in specs) > 1:
        raise ValueError("at most one motion filter per chain")


def parse_chain(text: str) -> list[FilterSpec]:
    """Parse "canny,blur:3" into validated specs [("canny",), ("blur", 3)]."""
    specs = []
    for part in text.split(","):
        name, *args = part.strip().split(":")
        try:
            specs.append((name.strip().lower(), *(int(a) for a in args)))
        except ValueError as e:
            raise ValueError(f"bad filter {part.strip()!r}: arguments must be integers") from e
    validate(specs)
    return specs


def chain_halo(specs: Sequence[FilterSpec]) -> int:
    """The halo in px a tile needs for the chain: the sum of its filters' halos."""
    validate(specs)
    return sum(FILTERS[spec[0]].halo(spec[1:]) for spec in specs)


def chain_exact(specs: Sequence[FilterSpec]) -> bool:
    """True when tiling with `chain_halo` is pixel-identical to the whole frame."""
    validate(specs)
    return all(FILTERS[spec[0]].exact for spec in specs)


def _apply_one(image: np.ndarray, spec: FilterSpec) -> np.ndarray:
    name, args = spec[0], spec[1:]
    if name == "canny":
        return canny(image, *args)
    if name in ("blur", "gaussian"):
        return blur(image, args[0]) if name == "blur" else gaussian(image, args[0])
    return {"sobel": sobel, "threshold": threshold}[name](image)


def apply_chain(image: np.ndarray, specs: Sequence[FilterSpec], previous: np.ndarray | None = None) -> np.ndarray:
    """Run the filters in order; `motion` compares with `previous` run through the same earlier filters.

    For tiles, `previous` is the previous frame cut with the same tile.
    """
    validate(specs)
    if not any(spec[0] == "motion" for spec in specs):
        previous = None  # nothing compares with it: don't filter it for nothing
    current = image
    for spec in specs:
        if spec[0] == "motion":
            current, previous = motion(current, previous), None
            continue
        current = _apply_one(current, spec)
        if previous is not None:
            previous = _apply_one(previous, spec)
    return current
