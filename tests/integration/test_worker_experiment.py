"""Experiments on a real worker: arms by user, lists that name them, attribution, the report."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from stream.contracts.manifest import load_manifest
from stream.contracts.records import Event, Recommendation
from stream.experiments.arms import Experiment, load_experiment
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.cluster.worker_process import process_env
from tests.conftest import WorkerFactory
from tests.integration.kafka_io import consume_until, produce_events
from tests.integration.workers import lists_by_trigger, run_worker, sample_events, serve

MINUTE = 60_000


def experiment_file(tmp_path: Path, control: Path, treatment: Path) -> Path:
    path = tmp_path / "experiment.json"
    arms = [
        {"name": "control", "model_dir": str(control), "share": 0.5},
        {"name": "treatment", "model_dir": str(treatment), "share": 0.5},
    ]
    path.write_bytes(orjson.dumps({"name": "text-vs-none", "salt": "t1", "arms": arms}))
    return path


def received_lists(broker: EmbeddedBroker, topic: str, triggers: set[str]) -> list[Recommendation]:
    got = consume_until(
        broker.bootstrap_servers,
        [topic],
        lambda got: triggers <= set(lists_by_trigger(got[topic])),
    )
    return [Recommendation.from_json(value) for _, value in got[topic]]


def assert_each_list_names_its_users_arm(
    lists: list[Recommendation], experiment: Experiment
) -> None:
    versions = {a.name: load_manifest(a.model_dir).model_version for a in experiment.arms}
    for rec in lists:
        arm = experiment.assign(rec.user_id).name
        assert (rec.experiment, rec.arm) == (experiment.name, arm), rec
        assert rec.model_version == versions[arm]  # scored by that arm's model


def test_every_list_names_the_arm_of_its_user_on_every_worker_and_after_a_restart(
    broker: EmbeddedBroker,
    worker_factory: WorkerFactory,
    datasets_dir: Path,
    tiny_model_dir: Path,
    tiny_no_text_model_dir: Path,
    tmp_path: Path,
) -> None:
    path = experiment_file(tmp_path, tiny_model_dir, tiny_no_text_model_dir)
    experiment = load_experiment(path)
    group = worker_factory(processes=2, experiment=str(path)).start()
    s = group.settings
    group.wait_ready()
    events = sample_events(datasets_dir, users=60, per_user=3)
    newest = set(serve(broker, s, events).values())
    first = received_lists(broker, s.recommendations_topic, newest)
    assert {r.arm for r in first} == {"control", "treatment"}
    assert_each_list_names_its_users_arm(first, experiment)
    stats = [group.get_json("/stats/", port=port)[1] for port in group.ports]
    assert all(one["experiment"]["name"] == experiment.name for one in stats)
    published = sum(
        one["experiment"]["arms"][arm]["lists"] for one in stats for arm in ("control", "treatment")
    )
    assert published == len(first)

    assert group.stop() == 0
    group.start().wait_ready()  # new processes: the same users must land in the same arms
    later = [
        Event(f"{ev.event_id}-again", ev.user_id, ev.type, ev.ts + MINUTE, ev.item_id, ev.query)
        for ev in events
    ]
    newest_later = set(serve(broker, s, later).values())
    lists = received_lists(broker, s.recommendations_topic, newest_later)
    again = [r for r in lists if r.trigger_event_id in {ev.event_id for ev in later}]
    assert {r.trigger_event_id for r in again} >= newest_later
    assert_each_list_names_its_users_arm(again, experiment)


def test_clicks_and_purchases_count_for_the_arm_of_the_list_they_act_on(
    broker: EmbeddedBroker,
    worker_factory: WorkerFactory,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    path = experiment_file(tmp_path, tiny_model_dir, tiny_model_dir)
    worker = worker_factory(experiment=str(path)).start()
    s = worker.settings
    worker.wait_ready()
    user = "shopper-1"
    arm = load_experiment(path).assign(user).name
    start = int(time.time() * 1000) - 6 * 60 * MINUTE

    def act(event_id: str, kind: str, at: int, item: str | None = None) -> Recommendation:
        """Produce one event of the user; wait for its list (the user sees it, then acts)."""
        query = "star wars" if kind == "search" else None
        ev = Event(event_id, user, kind, start + at, item_id=item, query=query)
        produce_events(broker.bootstrap_servers, s.events_topic, [ev])
        [rec] = [
            r
            for r in received_lists(broker, s.recommendations_topic, {event_id})
            if r.trigger_event_id == event_id
        ][:1]
        return rec

    first = act("e1", "click", 0, "1")
    listed = [i for i, _ in first.items]
    second = act("e2", "click", MINUTE, listed[0])  # on the list, in time: a click
    off_list = next(i for i in map(str, range(2, 1683)) if i not in {x for x, _ in second.items})
    third = act("e3", "click", 2 * MINUTE, off_list)  # not on the list: nothing
    late = 2 * MINUTE + 2 * 60 * MINUTE
    fourth = act("e4", "purchase", late, third.items[1][0])  # on it, 2 h later: nothing
    act("e5", "purchase", late + MINUTE, fourth.items[0][0])  # on it, in time: a purchase
    act("e6", "search", late + 2 * MINUTE)  # a search earns nothing

    tallies = worker.stats()["experiment"]["arms"][arm]
    assert {k: tallies[k] for k in ("lists", "users", "clicks", "purchases")} == {
        "lists": 6,
        "users": 1,
        "clicks": 1,
        "purchases": 1,
    }
    assert tallies["click_rate"] == pytest.approx(1 / 6)
    metrics = worker_metrics(worker.web)
    assert f'streamrec_arm_clicks_total{{arm="{arm}"}} 1.0' in metrics

    # the report reads the same from the topics
    report = subprocess.run(
        [sys.executable, "-m", "stream", "experiment", "report", "--out", str(tmp_path / "rep")],
        env=process_env(s),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    headline = orjson.loads(report.stdout.strip().splitlines()[-1])
    mine = headline["arms"][arm]
    assert (mine["lists"], mine["clicks"], mine["purchases"], mine["users"]) == (6, 1, 1, 1)
    assert (tmp_path / "rep" / "experiment.png").stat().st_size > 0
    assert "Verdict" in (tmp_path / "rep" / "summary.md").read_text()


def worker_metrics(web: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{web}/metrics", timeout=5) as response:  # noqa: S310
        return response.read().decode()


def test_a_worker_with_an_arm_it_cannot_serve_refuses_to_start(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "half-copied"
    broken.mkdir()
    path = experiment_file(tmp_path, tiny_model_dir, broken)
    result = run_worker(
        {"STREAMREC_EXPERIMENT": str(path), "STREAMREC_BROKER": "kafka://127.0.0.1:9"}, tmp_path
    )
    assert result.returncode != 0
    assert "cannot start the worker: experiment 'text-vs-none', arm 'treatment'" in result.stderr
