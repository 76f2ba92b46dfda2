"""`framehive grid FILE CAMERA`: a camera's latest frame with a grid of frame fractions and the camera's
zones and lines drawn on it, so points for `zones` and `lines` can be read straight off the picture.

The frame comes from the running master (`GET /ports/<port>/latest.jpg`, with the token of the file's
[master] table), or from a local picture with `--image`. The output is a PNG.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common import auth
from common.errors import ConfigError, FramehiveError
from common.imageinfo import MAX_IMAGE_PIXELS, check_image
from master.clusterfile import CameraSpec, ClusterFile

GRID_STEPS = 10  # lines every 0.1 of the frame
_GRID, _ZONE, _LINE, _TEXT_BG = (255, 255, 255), (0, 200, 255), (255, 80, 0), (0, 0, 0)


def latest_frame(cluster: ClusterFile, camera: CameraSpec, timeout_s: float = 5.0) -> bytes:
    """The camera's newest processed frame from its running master (FramehiveError when there is none)."""
    if camera.master:  # several masters: the camera's own
        cluster = cluster.for_master(camera.master)
    url = f"{cluster.master_url}/ports/{camera.port}/latest.jpg"
    token = auth.load_token(cluster.master.get("token_file") or None)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.read(64 * 2**20)
    except urllib.error.HTTPError as e:
        reason = "it has no frame of this camera yet" if e.code == 404 else f"HTTP {e.code}"
        raise FramehiveError(f"the master at {cluster.master_url} gave no frame of camera {camera.name!r}: "
                             f"{reason}") from None
    except OSError as e:
        raise FramehiveError(f"no master answered at {cluster.master_url} ({e}); give a picture with --image") from None


def draw(jpeg: bytes, camera: CameraSpec) -> np.ndarray:
    """The picture with the fraction grid, and the camera's zones and lines, drawn on it."""
    check_image(jpeg, MAX_IMAGE_PIXELS)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError("the picture does not decode as an image")
    h, w = image.shape[:2]
    shade = image.copy()
    for i in range(1, GRID_STEPS):
        x, y = round(w * i / GRID_STEPS), round(h * i / GRID_STEPS)
        cv2.line(shade, (x, 0), (x, h), _GRID, 1)
        cv2.line(shade, (0, y), (w, y), _GRID, 1)
    image = cv2.addWeighted(shade, 0.5, image, 0.5, 0)
    for i in range(1, GRID_STEPS):
        _label(image, f"{i / GRID_STEPS:.1f}", (round(w * i / GRID_STEPS) + 2, 14))
        _label(image, f"{i / GRID_STEPS:.1f}", (2, round(h * i / GRID_STEPS) - 3))
    for zone in camera.zones:
        pts = np.array([(round(x * w), round(y * h)) for x, y in zone.points], np.int32)
        cv2.polylines(image, [pts], True, _ZONE, 2)
        _label(image, f"zone {zone.name}", tuple(pts[0]))
    for line in camera.lines:
        a, b = (round(line.a[0] * w), round(line.a[1] * h)), (round(line.b[0] * w), round(line.b[1] * h))
        cv2.arrowedLine(image, a, b, _LINE, 2, tipLength=0.03)
        _label(image, f"line {line.name} (right of the arrow: {line.directions[0]})", a)
    return image


def _label(image: np.ndarray, text: str, at: Any) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    x, y = min(int(at[0]), image.shape[1] - tw - 3), max(int(at[1]), th + 2)
    cv2.rectangle(image, (x, y - th - 2), (x + tw + 2, y + base), _TEXT_BG, cv2.FILLED)
    cv2.putText(image, text, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def grid(cluster: ClusterFile, name: str, out: Path, image: Path | None = None) -> Path:
    """Write the camera's picture with its grid to `out`."""
    camera = cluster.cameras.get(name)
    if camera is None:
        raise ConfigError(f"no camera named {name!r} in {cluster.path} (cameras: {', '.join(cluster.cameras)})")
    if image is not None:
        try:
            jpeg = image.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read {image}: {e}") from None
    else:
        jpeg = latest_frame(cluster, camera)
    if not cv2.imwrite(str(out), draw(jpeg, camera)):
        raise ConfigError(f"cannot write {out} (the name must end in .png or .jpg)")
    return out
