"""The benchmark runs end to end (briefly) and prints its figures as one JSON object."""

import json

from stream.tools.bench.cli import main

FIGURES = {
    "faust_floor_events_per_s",
    "aiokafka_floor_events_per_s",
    "stream_only_vs_aiokafka_floor",
    "latency_low_fetch_wait",
    "stream_only_saturation_events_per_s",
    "stream_cost_us_per_event",
    "stream_only_vs_faust_floor",
    "memory",
    "model_only_users_per_s",
    "single_user_users_per_s",
    "batching_gain",
    "query_encodings_per_s",
    "query_cache_hit_rate",
    "saturation_events_per_s",
    "saturation_users_scored_per_s",
    "pipeline_efficiency",
    "latency_at_half_saturation",
    "environment",
}


def test_bench_prints_every_figure(tiny_model_dir, broker, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STREAMREC_MODEL_DIR", str(tiny_model_dir))
    args = ["--warmup", "1", "--window", "2", "--latency-window", "2", "--model-seconds", "0.2"]
    args += ["--backlog", "150000", "--floor-events", "3000", "--users", "300"]
    # --cython and --processes N add phases of the same kind (a floor, saturations on N
    # workers); left out here to keep the suite under CI's 30 minutes
    args += ["--stream-model", str(tiny_model_dir)]
    assert main([*args, "--broker", broker.url, "--out", str(tmp_path)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert FIGURES <= figures.keys()
    assert figures["model_only_users_per_s"] > 0 and figures["saturation_events_per_s"] > 0
    assert 0 <= figures["query_cache_hit_rate"] <= 1
    assert figures["latency_at_half_saturation"]["lists_measured"] > 0
    assert figures["faust_floor_events_per_s"] > 0 and figures["stream_cost_us_per_event"] > 0
    assert figures["aiokafka_floor_events_per_s"] > 0
    assert figures["latency_low_fetch_wait"]["fetch_max_wait_ms"] == 5
    assert len(figures["stream_only"]["cores_used_per_process"]) == 1
    assert not figures["stream_only"]["backlog_exhausted"]
    memory = {m["store"]: m for m in figures["memory"]}
    assert memory.keys() == {"memory://", "rocksdb://"}
    assert all(m["table_users"] == 300 and m["rss_bytes"] > 0 for m in memory.values())
    assert figures["environment"]["provider"] == "CPUExecutionProvider"
    assert figures["environment"]["query_encoder"] in ("query_encoder", "query_encoder_int8")
    assert json.loads((tmp_path / "bench.json").read_text()) == figures
