"""The motion model of a track: constant velocity of the box centre and size, an alpha-beta filter.

State: centre x, centre y, width, height (pixels) and their rates (pixels per second of the
camera's clock, `captured_at`). A prediction is the centre moved on by rate x elapsed time, so a
gap of any length (frames skipped, dropped or failed) is crossed in one step; the size is held at
its last estimate, not extrapolated: a box that shrank while its object was being hidden would
otherwise keep shrinking while it is unseen, and no longer overlap the object when it reappears
(bench/tracking_accuracy.py measured the switches that caused). Inside an update the size's rate
is used as usual, so a box growing steadily as someone approaches is followed without lag. An update blends
the prediction with the measured box: position += alpha * residual, rate += beta * residual / dt.
The second measurement sets the rates directly from the first two boxes, so a track needs no
warm-up frames to follow an object that is already moving. A Kalman filter would weigh the gains
by noise estimates; with boxes from one detector at a steady frame rate, fixed gains do as well
and cost a few float operations.
"""

from __future__ import annotations

from master.tracking.assign import Box

MIN_SIDE_PX = 1.0  # a predicted box never shrinks below this, however fast it was shrinking


class BoxFilter:
    """Alpha-beta filter over (cx, cy, w, h); times are seconds on the camera's clock."""

    __slots__ = ("alpha", "beta", "state", "rate", "t", "updates")

    def __init__(self, box: Box, t: float, *, alpha: float, beta: float) -> None:
        self.alpha, self.beta = alpha, beta
        self.state = _centre(box)
        self.rate = [0.0, 0.0, 0.0, 0.0]
        self.t = t
        self.updates = 1

    def predict(self, t: float) -> list[float]:
        """The state at time `t` (never before the last update): the centre moved on, the size kept."""
        dt = max(t - self.t, 0.0)
        cx, cy, w, h = self.state
        return [cx + self.rate[0] * dt, cy + self.rate[1] * dt, w, h]

    def box(self, t: float) -> Box:
        """The predicted box at `t` as x, y, w, h."""
        cx, cy, w, h = self.predict(t)
        w, h = max(w, MIN_SIDE_PX), max(h, MIN_SIDE_PX)
        return (cx - w / 2, cy - h / 2, w, h)

    def update(self, box: Box, t: float) -> None:
        """Take in a measured box at time `t`."""
        z = _centre(box)
        dt = t - self.t
        if dt <= 0:  # same capture time (or the camera's clock stepped back): blend, keep the rates
            self.state = [s + self.alpha * (m - s) for s, m in zip(self.state, z)]
            return
        if self.updates == 1:
            self.rate = [(m - s) / dt for s, m in zip(self.state, z)]
            self.state = z
        else:
            pred = [s + r * dt for s, r in zip(self.state, self.rate)]
            res = [m - p for m, p in zip(z, pred)]
            self.state = [p + self.alpha * e for p, e in zip(pred, res)]
            self.rate = [r + self.beta * e / dt for r, e in zip(self.rate, res)]
        self.t = t
        self.updates += 1


def _centre(box: Box) -> list[float]:
    x, y, w, h = box
    return [x + w / 2, y + h / 2, float(w), float(h)]
