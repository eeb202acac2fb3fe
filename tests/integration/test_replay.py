"""The replay end to end: in process against offline evaluation, through a real worker against
the in-process lists; the command's report."""

import json

import pytest

from model_export.data.split import build_split
from model_export.evaluation.evaluate import evaluate_model_dir
from stream.contracts.manifest import load_manifest
from stream.tools.replay.cli import main, replay
from stream.tools.replay.report import PLOTS, build_report
from tests.helpers import seen_settings, users_log


def broker_replay(log, model_dir, broker, work_dir, speed=0.0):
    [run] = replay(
        log,
        [str(model_dir)],
        seen_settings(model_dir),
        via_kafka=True,
        broker=broker.url,
        speed=speed,
        work_dir=work_dir,
        progress=False,
    )
    return run


def test_broker_mode_gives_the_in_process_lists(tiny_model_dir, movielens, broker, tmp_path):
    log = users_log(movielens, max_events_per_user=150, at_least=20_000)
    assert len(log) >= 20_000
    settings = seen_settings(tiny_model_dir)
    [local] = replay(log, [str(tiny_model_dir)], settings, progress=False)
    remote = broker_replay(log, tiny_model_dir, broker, tmp_path)
    assert remote.mode == "kafka" and len(remote.lists) == len(log)
    assert remote.lists == local.lists  # every event's list, item for item
    figures = [
        build_report(log, [run], final_only=False, skipped={}, settings=settings)["models"][0]
        for run in (local, remote)
    ]
    assert figures[0]["metrics"] == figures[1]["metrics"]
    assert figures[1]["timing"]["latency_ms"]["p50"] > 0


def test_open_loop_broker_replay_paces_the_log_and_lists_may_coalesce(
    tiny_model_dir, movielens, broker, tmp_path
):
    log = movielens[:2000]
    settings = seen_settings(tiny_model_dir)
    run = broker_replay(log, tiny_model_dir, broker, tmp_path, speed=1e6)
    newest = {e.user_id: e.event_id for e in log}
    assert set(newest.values()) <= run.lists.keys()  # every user's last event is reflected
    assert len(run.sent) == len(log) and len(run.lists) <= len(log)
    report = build_report(log, [run], final_only=False, skipped={}, settings=settings, speed=1e6)
    assert report["protocol"]["pacing"] == "open loop at 1e+06x recorded pace"


def test_final_only_in_process_equals_model_export_evaluate(tiny_model_dir, movielens):
    log = users_log(movielens, max_events_per_user=10_000, at_least=12_000)
    settings = seen_settings(tiny_model_dir)
    runs = replay(log, [str(tiny_model_dir)], settings, progress=False)
    report = build_report(log, runs, final_only=True, skipped={}, settings=settings)
    replayed = report["models"][0]["metrics"]["all"]
    split = build_split(log, load_manifest(tiny_model_dir).items)
    offline = evaluate_model_dir(split, str(tiny_model_dir), "seen")
    assert replayed["events"] == len(split.evaluated()) > 50
    for metric in ("hr@10", "ndcg@10", "mrr@10", "coverage@10"):
        assert replayed[metric] == pytest.approx(offline[metric], abs=1e-6), metric
    assert runs[0].failed_events == 0 and len(runs[0].lists) == len(log)


def test_command_writes_the_report_and_compares_two_models(tiny_model_dir, movielens, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(e.to_json() + b"\n" for e in movielens[:3000]) + b"not json\n")
    out = tmp_path / "report"
    model = str(tiny_model_dir)
    args = ["--events", str(log), "--model", model, "--model", model, "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["log"]["skipped"] == {"not_json": 1}
    assert [m["metrics"]["all"]["events"] for m in report["models"]] == [2979, 2979]
    same = report["comparison"]["ndcg@10"]
    assert same["diff"] == 0.0 and same["ci95_low"] == same["ci95_high"] == 0.0
    for plot in PLOTS:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| metric | A | B |" in (out / "summary.md").read_text()
