"""Multi-object tracking of each camera's detections: pure, no I/O, no clock reads.

`hub.py` (per-camera reorder windows and trackers, ids), `reorder.py` (results back in frame order),
`tracker.py` (association, track states, `TrackerConfig` with every default), `motion.py`
(constant-velocity alpha-beta filter), `assign.py` (IoU matrix, optimal assignment), `lines.py`
(counting lines: a crossing counted once, by direction and label, with hysteresis against jitter).

Defaults (TrackerConfig): confident detections score >= 0.5, uncertain 0.1..0.5 (below: ignored);
a match needs IoU >= 0.3 (0.5 for an uncertain detection) with the track's predicted box; a track is
confirmed after 3 consecutive hits, a tentative track that misses once is removed, a lost track is
removed after 1.5 s or 45 frames unseen; a result waits at most 1.0 s for earlier frames, at most
64 are held per camera; at most 256 tracks per camera and 1024 cameras.
"""

from master.tracking.hub import TrackedFrame, TrackerHub
from master.tracking.tracker import NO_TRACK, TrackedDetection, TrackerConfig, TrackInfo, TrackState

__all__ = ["NO_TRACK", "TrackInfo", "TrackState", "TrackedDetection", "TrackedFrame", "TrackerConfig",
           "TrackerHub"]
