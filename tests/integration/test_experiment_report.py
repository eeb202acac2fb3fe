"""``python -m stream experiment report`` on a replayed experiment of two tiny models."""

from __future__ import annotations

import json

import orjson

from model_export.data.sources import movielens_events
from stream.tools.replay.cli import main
from stream.tools.replay.experiment import AGREEMENT
from tests.helpers import users_log


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
