"""``worker --processes 2`` on the embedded broker: one group, a killed worker restarted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from stream.tools.cluster.broker import EmbeddedBroker
from tests.conftest import WorkerFactory
from tests.integration.workers import sample_events, serve


def test_workers_share_the_group_and_a_killed_one_comes_back(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path
) -> None:
    group = worker_factory(processes=2).start()
    group.wait_ready()
    first = group.ports[0]
    owned = [group.get_json("/stats/", port=port)[1]["assigned_partitions"] for port in group.ports]
    assert all(n > 0 for n in owned), owned  # each process owns partitions of the group
    pids = [group.get_json("/stats/", port=port)[1]["process"]["pid"] for port in group.ports]
    assert len(set(pids)) == 2 and group.process is not None and group.process.pid not in pids

    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:  # the supervisor starts it again, on the same port
        try:
            body = group.get_json("/stats/", timeout=2, port=first)[1]
            if body["process"]["pid"] != pids[0] and body["ready"]:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, group.log_text()[-3000:]
        time.sleep(0.5)
    assert f"worker process 0 (pid {pids[0]}) was killed by SIGKILL" in group.log_text()

    restarted = body["process"]["pid"]
    serve(broker, group.settings, sample_events(datasets_dir, users=20, per_user=5))
    assert group.stop() == 0, group.log_text()[-3000:]  # SIGTERM reaches both, both stop
    for pid in (restarted, pids[1]):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
