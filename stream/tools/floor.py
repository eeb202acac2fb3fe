"""Faust's own floor: a count-only agent with the worker's App settings (for the bench).

``python -m stream.tools.floor --topic T --count N`` runs a Faust worker whose one agent
only counts the messages of topic ``T`` (already produced, from its start), on the same
transport and settings as streamrec's worker, and prints one JSON line once it has counted
``N``: the events/s between the first tenth and the last, and the process's CPU seconds per
event over the same span. Whatever streamrec's worker spends above that per event is its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import orjson
from faust.types import StreamT

from stream.app import App
from stream.settings import Settings

#: The share of the events counted before the clock starts (start-up, group join, first fetch).
WARMUP_SHARE = 0.1


def main(argv: Sequence[str]) -> int:
    """Count ``--count`` messages of ``--topic``, print the rate, exit."""
    parser = argparse.ArgumentParser(prog="python -m stream.tools.floor", description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    app = App(settings, autodiscover=False, origin=None, web_enabled=False)
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    warm = max(1, int(args.count * WARMUP_SHARE))

    @app.agent(topic, name="count-only")
    async def count(stream: StreamT) -> None:
        seen = 0
        started = cpu = 0.0
        async for _ in stream:
            seen += 1
            if seen == warm:
                started, cpu = time.monotonic(), time.process_time()
            elif seen == args.count:
                events = args.count - warm
                figures = {
                    "events": events,
                    "events_per_s": events / (time.monotonic() - started),
                    "cpu_us_per_event": (time.process_time() - cpu) / events * 1e6,
                }
                # Faust sends sys.stdout to its log: write to the real one (descriptor 1)
                os.write(1, orjson.dumps(figures) + b"\n")
                os._exit(0)  # a measurement, not a service: no graceful shutdown to wait for

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
