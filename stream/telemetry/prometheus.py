"""The worker's figures in Prometheus' text format, on ``/metrics`` of its web server.

One registry per worker holds two collectors: Faust's own monitor (messages per topic and
partition, commit and send latency, rebalances: ``faust_*``), and :class:`WorkerCollector`,
which renders :class:`~stream.telemetry.metrics.Metrics` and the worker's gauges at scrape time
(``streamrec_*``). Counters end in ``_total``; millisecond summaries become ``_seconds``
histograms. The names are listed in docs/operations.md (Metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types import AppT
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from stream.telemetry.metrics import Metrics, Summary

PREFIX = "streamrec"
#: Counters whose name is ``<family>.<label value>``: the family's label.
LABELLED = {
    "dlq_reason": "reason",
    "events_type": "type",
    "arm_lists": "arm",
    "arm_users": "arm",
    "arm_clicks": "arm",
    "arm_purchases": "arm",
}
#: What each counter counts (the HELP line); others are documented by their name.
HELP = {
    "events_in": "Messages read from the events topic.",
    "events_invalid": "Messages routed to the dead-letter topic.",
    "dlq_reason": "Dead letters by reason.",
    "events_type": "Valid events by type.",
    "events_coalesced": "Events folded into a list already pending for their user.",
    "events_duplicate": "Events whose event_id the user's context already held (redelivered).",
    "events_duplicate_relisted": "Redelivered events scored again: no list reflecting them "
    "had gone out.",
    "delivery_failures": "Producer batches the broker did not confirm (sent again).",
    "deliveries_retried": "Deliveries (lists, changelog records, dead letters) sent again after "
    "a failure.",
    "lists_out": "Recommendation lists published.",
    "batches_failed": "Scoring batches that raised (their users got no list).",
    "users_failed": "Users of failed batches.",
    "model_reloads": "New model versions taken over without a restart.",
    "context_writes_failed": "Batches whose contexts could not be written (the worker stops).",
    "catalogue_records_in": "Valid records (and removals) read from the catalogue topic.",
    "catalogue_invalid": "Catalogue records routed to the dead-letter topic.",
    "catalogue_item_sets": "Item sets built after catalogue changes (new items scorable).",
    "latest_list_writes_failed": "Batches whose lists could not be stored for the lookup.",
    "searches": "Searches answered on /search/.",
    "search_bad_requests": "/search/ requests refused with 400.",
    "arm_lists": "Lists published, by experiment arm (none: no experiment).",
    "arm_users": "Users given their first list by this worker, by arm.",
    "arm_clicks": "Clicks on an item of the user's latest list within the window, by arm.",
    "arm_purchases": "Purchases of an item of the user's latest list within the window, by arm.",
}


def _histogram(name: str, summary: Summary) -> HistogramMetricFamily:
    scale = 1e-3 if name.endswith("_ms") else 1.0
    metric = f"{PREFIX}_{name.removesuffix('_ms')}" + ("_seconds" if scale != 1.0 else "")
    cumulative, buckets = 0, []
    for bound, count in zip(summary.bounds, summary.bucket_counts, strict=False):
        cumulative += count
        buckets.append((repr(bound * scale), cumulative))
    buckets.append(("+Inf", summary.count))
    return HistogramMetricFamily(
        metric, f"{name} per observation", buckets=buckets, sum_value=summary.total * scale
    )


class WorkerCollector:
    """Renders the worker's counters, histograms and gauges when Prometheus scrapes."""

    def __init__(self, metrics: Metrics, stats: Callable[[], dict[str, Any]]) -> None:
        self.metrics = metrics
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        """One family per counter family, histogram and gauge."""
        labelled: dict[str, CounterMetricFamily] = {}
        counters = {name: 0 for name in HELP if name not in LABELLED}  # listed even at 0
        counters.update(self.metrics.counters)
        for name, value in sorted(counters.items()):
            family, _, label = name.partition(".")
            if family in LABELLED and label:
                if family not in labelled:
                    labelled[family] = CounterMetricFamily(
                        f"{PREFIX}_{family}", HELP[family], labels=[LABELLED[family]]
                    )
                labelled[family].add_metric([label], value)
            else:
                yield CounterMetricFamily(f"{PREFIX}_{name}", HELP.get(name, name), value=value)
        yield from labelled.values()
        for name, summary in sorted(self.metrics.summaries.items()):
            if summary.bounds:
                yield _histogram(name, summary)
        stats = self.stats()
        for key, help_text in (
            ("ready", "1 when the model is loaded, partitions are assigned and tables recovered."),
            ("assigned_partitions", "Partitions of the events topic this worker owns."),
            (
                "consumer_lag",
                "Events on this worker's partitions past the committed offset (read or not): "
                "a partition whose commits stall shows here.",
            ),
            ("read_lag", "Events on this worker's partitions not read yet."),
            ("pending_deliveries", "Deliveries handed to the producer, not confirmed yet."),
            ("pending_users", "Users waiting in the batcher."),
            ("table_users", "Users whose context this worker holds."),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_{key}", help_text, value=float(stats[key]))
        for key, help_text in (
            ("items", "Items the catalogue topic holds (removed ones not counted)."),
            ("available", "Catalogue items that may be recommended."),
            ("extra_items", "Items scored beyond the model's trained ones (new or re-texted)."),
            ("blocked_items", "Trained items no list may hold (unavailable, removed, re-texted)."),
        ):
            yield GaugeMetricFamily(
                f"{PREFIX}_catalogue_{key}", help_text, value=float(stats["catalogue"][key])
            )
        model = GaugeMetricFamily(
            f"{PREFIX}_model_info",
            "The model serving and where (value 1).",
            labels=["model_version", "provider", "ranker", "query_encoder"],
        )
        if stats["model_version"] is not None:
            model.add_metric(
                [
                    stats["model_version"],
                    stats["providers"][0],
                    stats["ranker"],
                    stats["query_encoder"] or "none",
                ],
                1.0,
            )
        yield model


def install(app: AppT, metrics: Metrics, stats: Callable[[], dict[str, Any]]) -> None:
    """Serve ``/metrics``: Faust's monitor and the worker's own figures, one registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(metrics, stats))
    setup_prometheus_sensors(app, "/metrics", registry=registry, name_prefix="faust")
