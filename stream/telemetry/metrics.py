"""In-process counters and summaries of a streamrec worker.

Counters are monotonically increasing totals (``events_in``, ``dlq{reason}``...); summaries keep
count, sum and max of an observed value (batch size, inference time) and, for the names in
:data:`BUCKETS`, a histogram. The worker serves a snapshot as JSON on ``/stats/``, in Prometheus'
format on ``/metrics`` (:mod:`stream.telemetry.prometheus`), and logs one periodically.
"""

from __future__ import annotations

import bisect
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)
#: Upper bounds of the histogram kept for each of these summaries (milliseconds or users).
BUCKETS: dict[str, tuple[float, ...]] = {
    "batch_users": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
    "fetch_events": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384),
    "inference_ms": _MS,
    "batch_cut_to_publish_ms": _MS,
    "event_to_list_ms": _MS,
    "catalogue_freshness_ms": _MS,
    "search_ms": _MS,
}


@dataclass
class Summary:
    """Count, sum and maximum of an observed quantity, and counts per bucket if it has any."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    bounds: tuple[float, ...] = ()
    #: Observations ≤ each bound (not cumulative; one more slot for those above all bounds).
    bucket_counts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.bucket_counts = [0] * (len(self.bounds) + 1) if self.bounds else []

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.count += 1
        self.total += value
        self.max = max(self.max, value)
        if self.bounds:
            self.bucket_counts[bisect.bisect_left(self.bounds, value)] += 1

    def as_dict(self) -> dict[str, float]:
        """Count, sum, mean and max."""
        mean = self.total / self.count if self.count else 0.0
        return {"count": self.count, "sum": self.total, "mean": mean, "max": self.max}


@dataclass
class Metrics:
    """All figures of one process."""

    counters: Counter[str] = field(default_factory=Counter)
    summaries: dict[str, Summary] = field(default_factory=dict)

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter."""
        self.counters[name] += n

    def observe(self, name: str, value: float) -> None:
        """Record a value in a summary."""
        summary = self.summaries.get(name)
        if summary is None:
            summary = self.summaries[name] = Summary(bounds=BUCKETS.get(name, ()))
        summary.observe(value)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view of every counter and summary."""
        return {
            "counters": dict(sorted(self.counters.items())),
            "summaries": {k: v.as_dict() for k, v in sorted(self.summaries.items())},
        }


def process_figures() -> dict[str, float | int]:
    """This process's CPU seconds so far (every thread) and resident memory in bytes."""
    rss = 0
    try:
        with open("/proc/self/statm", "rb") as statm:  # Linux; elsewhere 0
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        pass
    return {"pid": os.getpid(), "cpu_seconds": time.process_time(), "rss_bytes": rss}
