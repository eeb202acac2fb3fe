"""A ``python -m stream worker`` subprocess for the tools that drive one (demo, replay).

It starts with the caller's ``STREAMREC_*`` overrides on top of the environment, is ready
once its ``/stats/`` says it consumes, and is stopped (SIGTERM, then SIGKILL after 30 s)
when the ``with`` block ends, whatever happened inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from stream.broker import free_port
from stream.errors import StreamrecError
from stream.settings import Settings
from stream.topics import ensure_topics, streamrec_topics


class WorkerProcess:
    """One worker subprocess, logging to ``log_path``.

    With ``profile``, the worker runs under ``py-spy record`` for ``profile_s`` seconds (raw
    stacks written to ``profile``; py-spy then ends the worker).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        profile: Path | None = None,
        profile_s: float = 0.0,
    ) -> None:
        self.web_port = free_port()
        self.log_path = log_path
        self.env = {**os.environ, **env, "STREAMREC_WEB_PORT": str(self.web_port)}
        self.process: subprocess.Popen[bytes] | None = None
        self.profile, self.profile_s = profile, profile_s

    def _command(self) -> list[str]:
        worker = [sys.executable, "-m", "stream", "worker", "-l", "info"]
        if self.profile is None:
            return worker
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            msg = "profiling needs py-spy: .venv/bin/pip install py-spy"
            raise StreamrecError(msg)
        duration = str(int(self.profile_s))
        return [
            str(spy),
            "record",
            "-d",
            duration,
            "-f",
            "raw",
            "-o",
            str(self.profile),
            "--",
        ] + worker

    def __enter__(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self._command(),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate the worker and wait for it (kill it if it ignores SIGTERM for 30 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.profile is not None:  # py-spy writes its file and ends the worker on time
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(self.profile_s + 30)
            if self.process.poll() is not None:
                return
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stats(self) -> dict[str, Any]:
        """The worker's ``/stats/`` (counters and summaries)."""
        url = f"http://127.0.0.1:{self.web_port}/stats/"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            body: dict[str, Any] = orjson.loads(response.read())
            return body

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Poll ``/stats/`` until the worker consumes; returns the seconds waited.

        Raises:
            StreamrecError: the worker exited, or was not consuming after ``timeout``.
        """
        assert self.process is not None, "wait_ready() outside the with block"
        started = time.monotonic()
        url = f"http://127.0.0.1:{self.web_port}/stats/"
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                msg = f"the worker exited with code {self.process.returncode}; see {self.log_path}"
                raise StreamrecError(msg)
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                    if orjson.loads(response.read()).get("ready"):
                        return time.monotonic() - started
            time.sleep(0.25)
        msg = f"the worker was not consuming after {timeout:.0f} s; see {self.log_path}"
        raise StreamrecError(msg)


class WorkerGroup:
    """Workers of one consumer group read as one: counters and summary counts summed."""

    def __init__(self, workers: Sequence[WorkerProcess]) -> None:
        self.workers = list(workers)

    def stats(self) -> dict[str, Any]:
        """``/stats/`` of every worker combined (summary means weighted by their counts)."""
        counters: Counter[str] = Counter()
        summaries: dict[str, dict[str, float]] = {}
        for one in (worker.stats() for worker in self.workers):
            counters.update(one["counters"])
            for name, summary in one["summaries"].items():
                into = summaries.setdefault(name, {"count": 0, "sum": 0.0, "max": 0.0})
                into["count"] += summary["count"]
                into["sum"] += summary["sum"]
                into["max"] = max(into["max"], summary["max"])
        for summary in summaries.values():
            summary["mean"] = summary["sum"] / summary["count"] if summary["count"] else 0.0
        return {"counters": dict(counters), "summaries": summaries}


@contextlib.contextmanager
def worker_on_fresh_topics(
    settings: Settings,
    work_dir: Path,
    name: str = "tool",
    *,
    profile: Path | None = None,
    profile_s: float = 0.0,
) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A consuming worker with ``settings`` on new topics and a new group of ``settings.broker``.

    Yields the settings with those topic names (for the tool's own clients) and the worker.
    """
    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    settings = settings.with_overrides(
        app_id=suffix,
        events_topic=f"{suffix}-events",
        recommendations_topic=f"{suffix}-recommendations",
        dlq_topic=f"{suffix}-dlq",
        data_dir=str(work_dir / suffix),
    )
    asyncio.run(
        ensure_topics(
            settings.bootstrap_servers, streamrec_topics(settings), settings.topic_partitions
        )
    )
    # the worker runs with exactly these settings (exclusion, top-K, batching, ...)
    log = work_dir / f"{suffix}.log"
    with WorkerProcess(settings.to_env(), log, profile=profile, profile_s=profile_s) as worker:
        worker.wait_ready()
        yield settings, worker
