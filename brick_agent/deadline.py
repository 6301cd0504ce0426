"""Deadlines: a time budget on the monotonic clock, passed down instead of ad-hoc timeouts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


class Deadline:
    """A point in monotonic time by which something must be done.

    ``Deadline.after(30)`` starts a 30 s budget; hand the same object to every
    step so the budget is shared, or ``capped(5)`` for a sub-step that must
    also not outlive the parent.
    """

    __slots__ = ("_clock", "_start", "_end")

    def __init__(
        self, end: float, clock: Clock = time.monotonic, start: float | None = None
    ) -> None:
        self._clock = clock
        self._start = clock() if start is None else start
        self._end = end

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        """A deadline ``seconds`` from now (negative counts as 0)."""
        now = clock()
        return cls(now + max(0.0, float(seconds)), clock, start=now)

    @classmethod
    def never(cls, clock: Clock = time.monotonic) -> Deadline:
        return cls(math.inf, clock)

    @property
    def budget(self) -> float:
        """Total seconds this deadline allowed when created."""
        return self._end - self._start

    def remaining(self) -> float:
        """Seconds left (0.0 once expired)."""
        return max(0.0, self._end - self._clock())

    def elapsed(self) -> float:
        return self._clock() - self._start

    @property
    def expired(self) -> bool:
        return self._clock() >= self._end

    def capped(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, but never later than this one."""
        now = self._clock()
        return Deadline(min(self._end, now + max(0.0, float(seconds))), self._clock, start=now)

    def reserving(self, seconds: float) -> Deadline:
        """This deadline moved ``seconds`` earlier (never before now).

        For a step that must leave time for another one inside the same budget:
        wait with ``d.reserving(3)``, then undo with ``d`` itself.
        """
        now = self._clock()
        end = max(now, self._end - max(0.0, float(seconds)))
        return Deadline(end, self._clock, start=self._start)

    @property
    def clock(self) -> Clock:
        """The clock this deadline reads (for sub-deadlines on the same clock)."""
        return self._clock

    def timeout(self, cap: float | None = None) -> float:
        """Remaining seconds, optionally capped (for APIs taking a timeout)."""
        left = self.remaining()
        return left if cap is None else min(left, cap)

    def __repr__(self) -> str:
        if math.isinf(self._end):
            return "Deadline(never)"
        return f"Deadline(remaining={self.remaining():.3f}s of {self.budget:.3f}s)"
