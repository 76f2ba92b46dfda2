"""The rooted error hierarchy: every error framehive raises on purpose derives from FramehiveError."""


class FramehiveError(Exception):
    """Base of every error framehive raises on purpose."""


class ConfigError(FramehiveError):
    """A setting is missing, malformed or out of range."""


class DecodeError(FramehiveError):
    """Bytes from the wire could not be decoded."""


class ProtocolError(DecodeError):
    """A peer's bytes or request break one of framehive's wire protocols: a datagram
    (common.protocol.DatagramError), an imagezmq request (receiver.zmqhub.Refused), a local socket's
    frame (common.unixproto.UnixFrameError) or a file-job message (common.jobproto.JobProtocolError).
    `reason` is the short name it is counted under (for file jobs, the error code sent back)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SourceError(FramehiveError):
    """A camera, stream or pipe could not be opened, or stopped delivering frames (the message never
    carries a password)."""


class PipelineSpecError(ConfigError):
    """A pipeline spec names an unknown stage or gives a bad argument."""


class TaskError(FramehiveError):
    """A task operation was refused by the task store."""


class UnknownTask(TaskError):
    """The task id is not known (never added, or already finished and forgotten)."""


class StaleLease(TaskError):
    """The lease token does not match the task's current lease (expired, requeued or finished)."""


class QueueFull(TaskError):
    """The store refused a task because a hard capacity limit is reached."""


class BadRequest(FramehiveError):
    """A request's arguments are malformed (wrong type, out of range, missing field)."""


class MasterUnavailable(FramehiveError):
    """The master could not be reached or did not answer in time."""


class Unauthorized(BadRequest):
    """The server wants a token this client did not present (or presented a wrong one)."""


class UnknownWorker(BadRequest):
    """The worker id was not handed out by this master (it restarted): register again."""
