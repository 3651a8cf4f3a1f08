"""Progress of long operations: one callback, `(stage, fraction, message)`.

`stage` names what is happening now ("build", "calibrate", "gate", "store",
"profile", ...), `fraction` is how far the whole operation is, from 0.0 to 1.0,
never going back, and `message` is a line for a person. An admin RPC streams these
as they come; a callback that raises aborts the operation with its exception,
which is how a caller that went away cancels the work.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, float, str], None]


def no_progress(stage: str, fraction: float, message: str) -> None:
    """The callback used when the caller gives none."""


class ProgressSpan:
    """A slice [start, end] of the operation's progress, reported through a callback.

    A step that knows only its own progress reports through a span, and the span maps
    that onto the whole: `span.sub(0.2, 0.6)` is the part from 20% to 60% of this span.
    Fractions reported are clamped into the span and never decrease; a report that
    moves the whole by less than `MIN_STEP` in the same stage is not passed on (a
    per-row loop would otherwise flood an RPC stream).
    """

    MIN_STEP = 0.005

    def __init__(
        self,
        callback: ProgressCallback = no_progress,
        start: float = 0.0,
        end: float = 1.0,
        _state: _Shared | None = None,
    ) -> None:
        self._callback = callback
        self.start = start
        self.end = end
        # Shared by a span and its sub-spans, so the whole never goes backwards.
        self._state = _state if _state is not None else _Shared()

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        """Report `fraction` (0..1) of this span's own work."""
        inside = min(max(fraction, 0.0), 1.0)
        state = self._state
        overall = max(self.start + inside * (self.end - self.start), state.last)
        if (
            stage == state.stage
            and overall - state.last < self.MIN_STEP
            and inside < 1.0
            and state.reported
        ):
            return
        state.last, state.stage, state.reported = overall, stage, True
        self._callback(stage, round(overall, 4), message)

    def sub(self, start: float, end: float) -> ProgressSpan:
        """The part of this span from `start` to `end` (fractions of this span)."""
        width = self.end - self.start
        return ProgressSpan(
            self._callback, self.start + start * width, self.start + end * width, self._state
        )

    def done(self, stage: str, message: str = "") -> None:
        self.report(stage, 1.0, message)


class _Shared:
    """What a span and its sub-spans last reported."""

    def __init__(self) -> None:
        self.last = 0.0
        self.stage = ""
        self.reported = False
