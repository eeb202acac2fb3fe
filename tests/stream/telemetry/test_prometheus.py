from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.telemetry.metrics import Metrics
from stream.telemetry.prometheus import WorkerCollector

STATS = {
    "ready": True,
    "assigned_partitions": 4,
    "consumer_lag": 7,
    "read_lag": 3,
    "pending_deliveries": 2,
    "pending_users": 0,
    "table_users": 3,
    "model_version": "seqrec-x",
    "providers": ["CPUExecutionProvider"],
    "ranker": "ranker",
    "query_encoder": None,
    "catalogue": {"read": True, "items": 5, "available": 4, "extra_items": 2, "blocked_items": 1},
}


def render(metrics: Metrics) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(metrics, lambda: STATS))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_labels_histograms_and_gauges_render_in_prometheus_format():
    metrics = Metrics()
    metrics.inc("events_in", 5)
    metrics.inc("dlq_reason.not_json", 2)
    metrics.inc("dlq_reason.too_large")
    for ms in (3, 40, 40, 70_000):
        metrics.observe("inference_ms", ms)
    samples = render(metrics)
    assert samples[("streamrec_events_in_total", ())] == 5
    assert samples[("streamrec_catalogue_extra_items", ())] == 2
    assert samples[("streamrec_dlq_reason_total", (("reason", "not_json"),))] == 2
    assert samples[("streamrec_dlq_reason_total", (("reason", "too_large"),))] == 1
    # milliseconds become seconds; buckets are cumulative; 70 s falls only in +Inf
    assert samples[("streamrec_inference_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("streamrec_inference_seconds_bucket", (("le", "0.05"),))] == 3
    assert samples[("streamrec_inference_seconds_bucket", (("le", "30.0"),))] == 3
    assert samples[("streamrec_inference_seconds_bucket", (("le", "+Inf"),))] == 4
    assert samples[("streamrec_inference_seconds_count", ())] == 4
    assert abs(samples[("streamrec_inference_seconds_sum", ())] - 70.083) < 1e-9
    assert samples[("streamrec_consumer_lag", ())] == 7
    info = dict(next(labels for (n, labels) in samples if n == "streamrec_model_info"))
    assert info == {
        "model_version": "seqrec-x",
        "provider": "CPUExecutionProvider",
        "ranker": "ranker",
        "query_encoder": "none",
    }
