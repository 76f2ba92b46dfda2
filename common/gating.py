"""When a camera's frames go to the detector: the policy a config names (every, motion, rate). Pure;
the receiver's motion gate (receiver/motion.py) carries it out, the master checks it in a config file."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError

POLICIES = ("every", "motion", "rate")


@dataclass(frozen=True)
class GatePolicy:
    """When a camera's frames go to the detector."""

    mode: str = "every"  # every | motion | rate
    max_per_s: float = 0.0  # rate: at most this many detections per second
    pixel_threshold: int = 20  # grey levels a pixel must differ from the background to count as moving
    min_area: float = 0.003  # fraction of the frame that must move to call it motion
    hold_s: float = 2.0  # keep detecting this long after the last motion (people stop walking)
    keyframe_s: float = 1.0  # detect at least this often in a still scene: someone standing still is still seen
    learn_rate: float = 0.05  # how fast the background absorbs a change

    def __post_init__(self) -> None:
        if self.mode not in POLICIES:
            raise ConfigError(f"detect policy must be one of {', '.join(POLICIES)}, got {self.mode!r}")
        if self.mode == "rate" and self.max_per_s <= 0:
            raise ConfigError("rate policy needs a positive rate, e.g. rate:2 (detections per second)")
        if not 0 < self.min_area < 1 or not 0 < self.learn_rate <= 1 or self.hold_s < 0 or self.keyframe_s < 0:
            raise ConfigError("motion settings out of range")


def parse_policy(text: str) -> GatePolicy:
    """'every', 'motion', 'motion:0.01' (min moving area), or 'rate:2' (detections per second)."""
    mode, _, arg = text.strip().lower().partition(":")
    try:
        if mode == "rate":
            return GatePolicy("rate", max_per_s=float(arg or "0"))
        if mode == "motion" and arg:
            return GatePolicy("motion", min_area=float(arg))
    except ValueError:
        raise ConfigError(f"bad detect policy {text!r}: the argument must be a number") from None
    if arg:
        raise ConfigError(f"detect policy {mode!r} takes no argument, got {text!r}")
    return GatePolicy(mode)
