"""`framehive grid`: a frame with a grid of fractions and the camera's zones and lines, for drawing them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cluster.cli import main
from common.errors import ConfigError
from master.clusterfile import parse

CONFIG = '''[cameras.hall]
source = "synthetic"
[cameras.hall.zones.middle]
points = [[0.3, 0.4], [0.7, 0.4], [0.7, 0.9], [0.3, 0.9]]
[cameras.hall.lines.exit]
a = [0.9, 0.2]
b = [0.9, 1.0]
'''


def test_grid_draws_fractions_zones_and_lines_on_a_picture(tmp_path, capsys):
    (tmp_path / "f.toml").write_text(CONFIG)
    cv2.imwrite(str(tmp_path / "frame.jpg"), np.full((200, 400, 3), 40, np.uint8))
    out = tmp_path / "hall.png"
    assert main(["grid", str(tmp_path / "f.toml"), "hall", "--image", str(tmp_path / "frame.jpg"), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    image = cv2.imread(str(out))
    assert image.shape == (200, 400, 3)
    assert image[100, 40].mean() > 60  # a grid line at x = 0.1 lightens the dark frame
    assert np.abs(image[120, 120].astype(int) - (0, 200, 255)).max() < 40  # the zone's left edge (x = 0.3)
    assert image[150, 360, 0] > 200  # the line at x = 0.9, drawn in blue


def test_grid_names_the_cameras_when_one_is_unknown(tmp_path):
    with pytest.raises(ConfigError, match="no camera named 'porch'.*cameras: hall"):
        from cluster.grid import grid
        grid(parse(CONFIG), "porch", tmp_path / "x.png", tmp_path / "missing.jpg")
