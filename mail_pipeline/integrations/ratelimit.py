"""A client-side rate limiter so a busy run stays under a vendor's published limit.

Vendors publish limits as "N requests per window" (Lob: 150 per 5 s per endpoint). The limiter
keeps a sliding log of the last calls and blocks the caller until one more call fits, so a
mailing run can run at ``fraction`` of the limit without ever being answered with a 429.
It is thread-safe: a run's worker threads share one limiter per vendor endpoint.

Clients accept any :class:`Limiter`: this in-process one, or the limiter shared by every
process on the app database (``db.ratelimit.SharedRateLimiter``, bound by the resources), so
several mailing runs on one API key keep to the vendor's limit together
(``docs/rate_limits.md``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class Limiter(Protocol):
    """What a client needs of a rate limiter: one call to :meth:`acquire` before each request."""

    def acquire(self) -> None:
        """Block until the caller may make one call (and count it)."""
        ...


class SlidingWindowLimiter:
    def __init__(
        self,
        max_calls: int,
        per_seconds: float,
        *,
        fraction: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_calls < 1 or per_seconds <= 0:
            raise ValueError("a rate limit needs at least one call per positive window")
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        self.capacity = max(1, int(max_calls * fraction))
        self.window = per_seconds
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        """Block until one more call fits in the window, then record it."""
        while True:
            with self._lock:
                now = self._clock()
                while self._calls and now - self._calls[0] >= self.window:
                    self._calls.popleft()
                if len(self._calls) < self.capacity:
                    self._calls.append(now)
                    return
                wait = self.window - (now - self._calls[0])
            self._sleep(max(wait, 0.001))
