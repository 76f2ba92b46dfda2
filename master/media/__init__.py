"""Event media: clips of events (pre-roll + event + post-roll) as H.264 MP4s, and the directory they live in.

`clips.py` (pure: per-camera pre-roll rings, one recording per open event, ClipConfig with every
default), `encoder.py` (a Component turning finished recordings into MP4s, one at a time, with boxes
and track ids drawn), `store.py` (the media directory: safe paths, atomic writes, an index of what is
on disk, retention by age and total size).
"""

from master.media.clips import ClipConfig, ClipFrame, ClipJob, ClipRecorder

__all__ = ["ClipConfig", "ClipFrame", "ClipJob", "ClipRecorder"]
