"""One error tree: every failure the service expects is a ``StreamLearnerError``.

Third-party errors (redis, kafka, pickle) are wrapped where they enter, so callers
catch ours and the CLI can print a message and exit 1 without a traceback.
"""

from __future__ import annotations


class StreamLearnerError(Exception):
    """Base class of every error stream-learner raises on purpose."""


class ConfigError(StreamLearnerError):
    """A setting is missing or invalid; the message names the flag, variable or file key."""


class ModelSpecError(ConfigError):
    """A model spec does not name a River model or factory that can be built."""


class InvalidEvent(StreamLearnerError):
    """A message that must not reach the model; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ModelBroken(StreamLearnerError):
    """The model raised on too many events in a row: its spec is broken, not the events."""


class CheckpointError(StreamLearnerError):
    """A checkpoint could not be written or read."""


class IntegrityError(CheckpointError):
    """A checkpoint is unsigned, tampered with, or from incompatible versions: never unpickled."""


class FencedError(CheckpointError):
    """Another learner took over the model: this one's writes are refused."""


class StoreUnavailable(CheckpointError):
    """The model store (Redis) cannot be reached."""


class OutOfOrder(CheckpointError):
    """A save's version does not follow the store's latest (after a save whose answer was lost,
    the latest may be that very save)."""


class NoCheckpoint(CheckpointError):
    """The store holds no checkpoint (or not the pinned version) for the model."""


class PublishError(StreamLearnerError):
    """Kafka did not acknowledge a prediction or dead letter: the checkpoint must not advance."""
