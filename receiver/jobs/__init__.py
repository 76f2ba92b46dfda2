"""File jobs: a video uploaded to a receiver, tiled across the workers, returned as an H.264 MP4.

config (the server's limits), plan (the grid and the tiles' bytes), spool (an upload readable while it
arrives), runner (one job's decode -> tiles -> assemble -> encode), server (the TCP protocol and
admission), video (decoding and H.264/GIF writing), preview (the HTTP progress pages). It runs inside
`python -m receiver --jobs-port` or on its own as `python -m receiver.jobs`.
"""

from receiver.jobs.config import JobConfig
from receiver.jobs.server import JobServer, JobServerThread

__all__ = ["JobConfig", "JobServer", "JobServerThread"]
