"""Consumer lag and what it says about the health of ingest (``IngestLoop.health``, ``/healthz``)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["LagTracker"]


@dataclass
class LagTracker:
    """Lag per partition and what it says about health: ``stalled`` (lag waiting with no commit for
    ``stall_s``) and ``lag_growing`` (over ``window_s`` the lag's low in the last third stayed above its
    high in the first third: sustained growth, not a burst being worked off)."""

    stall_s: float
    window_s: float
    by_partition: dict[str, int] = field(default_factory=dict)
    history: deque[tuple[float, int]] = field(default_factory=deque)
    last_commit: float = field(default_factory=time.monotonic)

    @property
    def total(self) -> int:
        return sum(self.by_partition.values())

    def record(self, by_partition: dict[str, int], now: float) -> None:
        self.by_partition = by_partition
        self.history.append((now, self.total))
        while self.history and self.history[0][0] < now - self.window_s:
            self.history.popleft()

    def stalled(self, now: float) -> bool:
        return self.total > 0 and now - self.last_commit > self.stall_s

    def growing(self) -> bool:
        if len(self.history) < 6 or self.history[-1][0] - self.history[0][0] < 0.9 * self.window_s:
            return False
        third = len(self.history) // 3
        first, last = [v for _, v in list(self.history)[:third]], [v for _, v in list(self.history)[-third:]]
        return min(last) > max(first)
