"""The one wall clock: epoch milliseconds, the unit of every ``ts`` in the contracts."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000
