"""The experiment report, and a replayed experiment against each arm's model replayed alone."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest

from model_export.data import movielens_events
from stream.attribution import UserOutcome
from stream.tools.experiment import AGREEMENT, ratio_ci95, report
from stream.tools.replay import main
from tests.stream.tools.test_replay import users_log


def test_with_one_list_per_user_the_interval_is_the_binomial_one():
    rng = np.random.default_rng(0)
    clicks = (rng.random(4000) < 0.2).astype(np.float64)
    rate, se = ratio_ci95(clicks, np.ones_like(clicks))
    n = len(clicks)
    assert rate == clicks.mean()
    assert se == pytest.approx(math.sqrt(rate * (1 - rate) / n) * math.sqrt(n / (n - 1)))


def test_a_clear_difference_is_significant_and_named_in_the_verdict():
    outcomes = {}
    for i in range(400):
        outcomes["control", f"c{i}"] = UserOutcome(lists=10, clicks=1 if i % 2 else 2)
        outcomes["treatment", f"t{i}"] = UserOutcome(lists=10, clicks=3, purchases=i % 2)
    rep = report(outcomes, experiment="ab", arms=["control", "treatment"], window_s=1800)
    click = rep["vs_control"]["treatment"]["click_rate"]
    assert click["diff"] == pytest.approx(0.3 - 0.15)
    assert click["significant"] and click["ci95_low"] > 0
    assert "treatment: click rate significantly higher" in rep["verdict"]
    assert rep["arms"]["control"]["users"] == 400


@pytest.mark.slow
def test_a_replayed_experiment_agrees_with_each_arms_model_replayed_alone(
    tiny_model_dir, tiny_no_text_model_dir, datasets_dir, tmp_path, capsys
):
    events = users_log(movielens_events(datasets_dir), max_events_per_user=120, at_least=6000)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(e.to_json() + b"\n" for e in events))
    path = tmp_path / "experiment.json"
    arms = [
        {"name": "control", "model_dir": str(tiny_model_dir), "share": 0.5},
        {"name": "treatment", "model_dir": str(tiny_no_text_model_dir), "share": 0.5},
    ]
    path.write_bytes(orjson.dumps({"name": "rehearsal", "salt": "r1", "arms": arms}))
    out = tmp_path / "report"
    assert (
        main(["--experiment", str(path), "--events", str(log), "--out", str(out), "--quiet"]) == 0
    )
    headline = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rep = json.loads((out / "experiment.json").read_text())
    assert headline["agrees_with_offline"] is True
    assert rep["offline"]["max_rate_diff"] <= AGREEMENT
    for arm in ("control", "treatment"):
        figures = rep["arms"][arm]
        assert figures["users"] > 10 and figures["clicks"] > 0
        # the worker step's own live tallies are the offline rule's, list for list
        assert rep["live_counters"][arm] == {
            k: figures[k] for k in ("lists", "users", "clicks", "purchases")
        }
    assert sum(rep["arms"][a]["lists"] for a in rep["arms"]) == len(events)
    assert (out / "experiment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Offline side-by-side" in (out / "summary.md").read_text()
