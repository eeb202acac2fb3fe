"""Several worker processes on one host: ``python -m stream worker --processes N``.

One Python process is one event loop; a host with more cores runs more of them. The
supervisor starts N workers of one consumer group (each its own ONNX Runtime session, its
own web port ``STREAMREC_WEB_PORT + i`` and its own data directory
``STREAMREC_DATA_DIR/process-i``), passes SIGTERM and SIGINT on to every one, restarts a
worker that dies (saying how it died), and exits once all have stopped. A worker that keeps
dying right after its start (a broken model directory, say) stops the whole group instead
of restarting forever. Partitions of the events topic must be at least the total number of
processes of the group, on every host, or the extra ones idle.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.errors import ConfigError
from stream.settings import Settings

log = logging.getLogger(__name__)

#: A worker that dies sooner than this after its start counts as failing to start.
QUICK_DEATH_S = 30.0
#: Quick deaths in a row after which the supervisor gives up.
MAX_QUICK_DEATHS = 3
#: Seconds the workers get to stop after a signal before they are killed.
STOP_TIMEOUT_S = 60.0
#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def process_count(value: str) -> int:
    """``--processes``: a positive number, or ``auto`` for one per core.

    Raises:
        ConfigError: neither.
    """
    if value == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        msg = f"--processes must be a positive number or auto, got {value!r}"
        raise ConfigError(msg)
    return count


def split_processes(args: Sequence[str]) -> tuple[int, list[str]]:
    """The ``--processes`` value (1 when absent) and the other arguments."""
    rest: list[str] = []
    count = "1"
    items = iter(args)
    for arg in items:
        if arg == "--processes":
            count = next(items, "")
        elif arg.startswith("--processes="):
            count = arg.partition("=")[2]
        else:
            rest.append(arg)
    return process_count(count), rest


@dataclass
class Child:
    """One worker process of the group."""

    index: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_deaths: int = 0


def _die_with_parent() -> None:
    """In the child, before it runs: get SIGTERM if the supervisor dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def describe(code: int) -> str:
    """An exit status in words."""
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    """Runs ``processes`` workers of one group; :meth:`run` returns the exit code."""

    def __init__(self, settings: Settings, worker_args: Sequence[str], processes: int) -> None:
        self.settings = settings
        self.command = [sys.executable, "-m", "stream", *worker_args]
        self.children = [
            Child(
                index,
                {
                    **os.environ,
                    "STREAMREC_WEB_PORT": str(settings.web_port + index),
                    "STREAMREC_DATA_DIR": str(Path(settings.data_dir, f"process-{index}")),
                },
            )
            for index in range(processes)
        ]
        self.stopping = False

    def _start(self, child: Child) -> None:
        Path(child.env["STREAMREC_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        child.process = subprocess.Popen(
            self.command,
            env=child.env,
            process_group=0,  # a Ctrl-C reaches the supervisor, which passes it on once
            preexec_fn=_die_with_parent,
        )
        child.started_at = time.monotonic()
        log.info(
            "worker process %d started (pid %d, web port %s)",
            child.index,
            child.process.pid,
            child.env["STREAMREC_WEB_PORT"],
        )

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)

    def run(self) -> int:
        """Start every worker, keep them running until a signal, then wait for all of them."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for child in self.children:
            self._start(child)
        failed = False
        while not self.stopping:
            time.sleep(0.5)
            for child in self.children:
                assert child.process is not None
                code = child.process.poll()
                if code is None or self.stopping:
                    continue
                lived = time.monotonic() - child.started_at
                child.quick_deaths = child.quick_deaths + 1 if lived < QUICK_DEATH_S else 0
                if child.quick_deaths >= MAX_QUICK_DEATHS:
                    log.error(
                        "worker process %d %s %d times within %.0f s of its start: stopping",
                        child.index,
                        describe(code),
                        child.quick_deaths,
                        QUICK_DEATH_S,
                    )
                    failed = True
                    self._on_signal(signal.SIGTERM, None)
                    break
                log.warning(
                    "worker process %d (pid %d) %s after %.0f s; restarting it",
                    child.index,
                    child.process.pid,
                    describe(code),
                    lived,
                )
                self._start(child)
        return 1 if self._wait_all() or failed else 0

    def _wait_all(self) -> bool:
        """Wait for every worker (killing any still up after the timeout); True if one failed."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        failed = False
        for child in self.children:
            assert child.process is not None
            try:
                code = child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                code = child.process.wait()
            if code != 0:
                failed = True
                log.warning("worker process %d %s while stopping", child.index, describe(code))
        return failed


def supervise(settings: Settings, worker_args: Sequence[str], processes: int) -> int:
    """Check what every worker would check, then run the group; logs go to stderr.

    Raises:
        SystemExit: with one line, if the model or one of the web ports cannot be served.
    """
    from stream.agents import check_can_serve

    for index in range(processes):
        check_can_serve(settings.with_overrides(web_port=settings.web_port + index))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] supervisor: %(message)s",
    )
    return Supervisor(settings, worker_args, processes).run()
