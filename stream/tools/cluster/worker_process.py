"""A ``python -m stream worker`` subprocess: the one helper tools and tests drive workers with.

:class:`WorkerProcess` starts a worker with a :class:`~stream.settings.Settings` (passed as
``STREAMREC_*`` variables on top of the environment), reads its web endpoints, waits until it
consumes, stops it with a signal (SIGTERM, then SIGKILL after 30 s) and starts it again on
the same group, topics, data directory and port; with ``processes`` it runs a supervised
group and reads it as one. :func:`fresh_settings` gives a worker its own app id, topics,
data directory and web port; :func:`worker_on_fresh_topics` creates those topics and yields
a consuming worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from stream.errors import StreamrecError
from stream.settings import Settings
from stream.tools.cluster.broker import free_ports
from stream.tools.cluster.topics import ensure_topics, streamrec_topics

#: Seconds a worker is given to exit after a signal before it is killed.
STOP_TIMEOUT_S = 30.0


def fresh_settings(
    settings: Settings, work_dir: Path, name: str = "worker", processes: int = 1
) -> Settings:
    """``settings`` with a new app id (consumer group), topics, data directory and web port.

    With ``processes``, the web port is the first of that many free consecutive ports (one
    per process of a supervised group).
    """
    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    return settings.with_overrides(
        app_id=suffix,
        events_topic=f"{suffix}-events",
        recommendations_topic=f"{suffix}-recommendations",
        dlq_topic=f"{suffix}-dlq",
        catalogue_topic=f"{suffix}-catalogue",
        data_dir=str(Path(work_dir, suffix).resolve()),
        web_port=free_ports(processes),
    )


def process_env(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process run with ``settings``: ours, the settings, then ``env``."""
    return {**os.environ, **settings.to_env(), **(env or {})}


class WorkerProcess:
    """One worker subprocess with ``settings``; each start logs to a new file in ``log_dir``.

    ``processes`` > 1 runs ``python -m stream worker --processes N``: N workers under one
    supervisor, on web ports ``web_port`` … ``web_port + N - 1``, read as one by
    :meth:`stats`. ``env`` adds variables of its own (``PYTHONPATH`` for a test's fault
    injection, say); ``command`` replaces ``python -m stream worker`` (``faust -A stream.app
    worker``, say). With ``profile``, the worker runs under ``py-spy record`` for
    ``profile_s`` seconds (raw stacks written to ``profile``; py-spy then ends the worker).
    """

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "stream", "worker"),
        processes: int = 1,
        profile: Path | None = None,
        profile_s: float = 0.0,
    ) -> None:
        self.settings = settings
        self.command = [*command, "--processes", str(processes)] if processes > 1 else [*command]
        self.ports = [settings.web_port + i for i in range(processes)]
        self.log_dir = Path(log_dir)
        self.env = process_env(settings, env)
        self.process: subprocess.Popen[bytes] | None = None
        #: Workers of one group share an app id; the port tells their logs apart.
        self.name = f"{settings.app_id}-{settings.web_port}"
        self.log_path = self.log_dir / f"{self.name}.log"
        self.profile, self.profile_s = profile, profile_s
        self._starts = 0

    @property
    def web(self) -> str:
        """Base URL of the (first) worker's web endpoint."""
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def _command(self) -> list[str]:
        worker = self.command
        if self.profile is None:
            return worker
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            msg = "profiling needs py-spy: .venv/bin/pip install py-spy"
            raise StreamrecError(msg)
        return [
            str(spy),
            "record",
            "-d",
            str(int(self.profile_s)),
            "-f",
            "raw",
            "-o",
            str(self.profile),
            "--",
            *worker,
        ]

    def start(self) -> WorkerProcess:
        """Start the worker (again, after :meth:`stop`: same group, topics, data and port)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self._starts += 1
        suffix = f"-{self._starts}" if self._starts > 1 else ""
        self.log_path = self.log_dir / f"{self.name}{suffix}.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self._command(), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the worker and wait for it (killed after 30 s); its exit code.

        ``None`` if it was not running. A profiled worker is left to py-spy, which writes its
        file and ends the worker on time.
        """
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is not None:
            return process.returncode
        if self.profile is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(self.profile_s + STOP_TIMEOUT_S)
            if process.poll() is not None:
                return process.returncode
        process.send_signal(sig)
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_text(self) -> str:
        """What the worker has logged since its latest start."""
        return self.log_path.read_text(errors="replace")

    def get_json(
        self, path: str, timeout: float = 5.0, port: int = 0, token: str | None = None
    ) -> tuple[int, Any]:
        """``GET`` one of the worker's endpoints: (HTTP status, decoded JSON body).

        ``port`` picks one process of a group (default: the first). The request carries the
        worker's ``STREAMREC_WEB_TOKEN`` as a bearer token, or ``token`` ("" sends none).
        """
        url = f"http://{self.settings.web_host}:{port or self.ports[0]}{path}"
        token = self.settings.web_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    def stats(self) -> dict[str, Any]:
        """The worker's ``/stats/``; a group's summed (:func:`merged`)."""
        return merged(self.each_stats())

    def each_stats(self) -> list[dict[str, Any]]:
        """Each process's own ``/stats/``, in port order."""
        return [self.get_json("/stats/", port=port)[1] for port in self.ports]

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Poll ``/stats/`` until the worker (every process) consumes; the seconds waited.

        Raises:
            StreamrecError: the worker exited, or was not consuming after ``timeout``.
        """
        assert self.process is not None, "wait_ready() before start()"
        started = time.monotonic()
        waiting = list(self.ports)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                msg = f"the worker exited with code {self.process.returncode}; see {self.log_path}"
                raise StreamrecError(msg)
            with contextlib.suppress(OSError, ValueError):
                waiting = [
                    port
                    for port in waiting
                    if not self.get_json("/stats/", timeout=2, port=port)[1].get("ready")
                ]
            if not waiting:
                return time.monotonic() - started
            time.sleep(0.25)
        msg = f"the worker was not consuming after {timeout:.0f} s; see {self.log_path}"
        raise StreamrecError(msg)


def merged(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One process's ``/stats/`` as it is; a group's summed (:func:`combine`)."""
    return stats[0] if len(stats) == 1 else combine(stats)


def combine(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``/stats/`` of workers of one group as one.

    Counters, summaries and process figures are summed (summary means weighted by their
    counts); the group is ready only if every worker is.
    """
    counters: Counter[str] = Counter()
    summaries: dict[str, dict[str, float]] = {}
    process = {"cpu_seconds": 0.0, "rss_bytes": 0}
    for one in stats:
        counters.update(one["counters"])
        for name, summary in one["summaries"].items():
            into = summaries.setdefault(name, {"count": 0, "sum": 0.0, "max": 0.0})
            into["count"] += summary["count"]
            into["sum"] += summary["sum"]
            into["max"] = max(into["max"], summary["max"])
        for key in process:
            process[key] += one["process"][key]
    for summary in summaries.values():
        summary["mean"] = summary["sum"] / summary["count"] if summary["count"] else 0.0
    return {
        "ready": all(one["ready"] for one in stats),
        "counters": dict(counters),
        "summaries": summaries,
        "process": process,
        "consumer_lag": sum(one["consumer_lag"] for one in stats),
        "table_users": sum(one["table_users"] for one in stats),
    }


def create_topics(settings: Settings) -> None:
    """Create the topics a worker with ``settings`` reads and writes, with its partitions."""
    asyncio.run(
        ensure_topics(
            settings.bootstrap_servers,
            streamrec_topics(settings),
            settings.topic_partitions,
            compacted=[settings.catalogue_topic],
        )
    )


@contextlib.contextmanager
def worker_on_fresh_topics(
    settings: Settings,
    work_dir: Path,
    name: str = "tool",
    *,
    profile: Path | None = None,
    profile_s: float = 0.0,
) -> Iterator[WorkerProcess]:
    """A consuming worker with ``settings`` on new topics and a new group of its broker.

    The worker's :attr:`WorkerProcess.settings` name those topics (for the tool's clients);
    it is stopped when the block ends.
    """
    settings = fresh_settings(settings, work_dir, name)
    create_topics(settings)
    # the worker runs with exactly these settings (exclusion, top-K, batching, ...)
    worker = WorkerProcess(settings, work_dir, profile=profile, profile_s=profile_s)
    with worker:
        worker.wait_ready()
        yield worker
