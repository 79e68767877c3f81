"""The small interface every checkpointer implements, so the trainer swaps them by flag."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Protocol


@dataclass
class Loaded:
    """A checkpoint read back: the step it was taken at, the state, and where it came from."""

    step: int
    state: dict[str, Any]
    source: str


class SaveHandle(Protocol):
    step: int

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the checkpoint is durable (True) or the timeout passes (False); raises on failure."""

    def done(self) -> bool: ...


class CheckpointerLike(Protocol):
    last_saved_step: Optional[int]  # the step of the newest save() call

    def prepare(self, state: Mapping[str, Any]) -> None:
        """Reserves storage for states shaped like `state`, so a full disk fails at start, not mid-training."""

    def save(self, step: int, state: Mapping[str, Any]) -> SaveHandle:
        """Returns once `state` may be modified again; the handle tells when the checkpoint is durable."""

    def before_update(self) -> None:
        """Called before the optimizer changes the weights: waits for any snapshot copy still reading them."""

    def wait(self) -> None:
        """Blocks until every checkpoint saved so far is durable (or dropped as superseded)."""

    def load_latest(self) -> Optional[Loaded]:
        """The newest checkpoint that verifies, or None when there is none; every skip is reported."""

    def last_committed_step(self) -> Optional[int]: ...

    def durable_seconds(self) -> Optional[float]:
        """Seconds from save() to durable of the newest durable checkpoint (the deadline check uses it)."""

    def close(self) -> None: ...


@dataclass
class DoneHandle:
    """Handle of a checkpoint that was durable before save() returned (the synchronous baseline)."""

    step: int

    def wait(self, timeout: Optional[float] = None) -> bool:
        return True

    def done(self) -> bool:
        return True
