"""Backtest metrics: replayed lists scored against what each user did next.

For every event with a catalogue item, the list that was *current* for its user just before
the event (the newest list for that user that had arrived when the event was sent, so built
only from earlier events) is scored against the event's item: HR, NDCG and MRR at K in
:data:`KS`, per event type and overall, plus catalogue coverage and the share of recommended
items the user already had. ``final_only`` keeps only each user's last interaction (last
click on a catalogue item, for users with at least three), the leave-one-out protocol of
``python -m model_export evaluate``. Two runs over the same log are compared event by event,
with a confidence interval clustered by user.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_export.data.split import MIN_INTERACTIONS
from model_export.ranking import gains, target_ranks
from stream.contracts.records import Event

KS = (5, 10, 20)
#: The headline K (plots over time, comparisons).
HEADLINE_K = 10
#: Time buckets of the NDCG-over-time series.
TIME_BUCKETS = 30
Z_95 = 1.959964


@dataclass
class ReplayRun:
    """What one replay produced: every list by its trigger event, and when things happened.

    Times are seconds since the replay started: ``sent`` when an event was handed to the
    scoring path (in-process) or produced (Kafka), ``arrived`` when its list was published
    (in-process) or read back from the recommendations topic (Kafka).
    """

    model_dir: str
    model_version: str
    mode: str
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The experiment arm each list names (an experiment's replay only).
    arms: dict[str, str | None] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    duplicate_lists: int = 0
    failed_events: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    def record(
        self, trigger_event_id: str, items: Sequence[str], at: float, arm: str | None = None
    ) -> None:
        """Keep the first list for a trigger (later copies are at-least-once duplicates)."""
        if trigger_event_id in self.lists:
            self.duplicate_lists += 1
            return
        self.lists[trigger_event_id] = tuple(items)
        if arm is not None:
            self.arms[trigger_event_id] = arm
        self.arrived[trigger_event_id] = at


@dataclass(frozen=True)
class ScoredEvents:
    """One row per scored event."""

    event_ids: list[str]
    users: np.ndarray  # int user index
    types: list[str]
    ts: np.ndarray  # event ts (epoch ms)
    ranks: np.ndarray  # rank of the event's item in its current list (0: absent)
    lists: list[tuple[str, ...]]
    already_had: np.ndarray  # [events, len(KS)] share of the top-K the user already had


def by_user(events: Sequence[Event]) -> dict[str, list[Event]]:
    """Each user's events in time order (a stable sort: equal ``ts`` keep log order)."""
    grouped: dict[str, list[Event]] = defaultdict(list)
    for ev in sorted(events, key=lambda e: e.ts):
        grouped[ev.user_id].append(ev)
    return dict(grouped)


def final_interactions(users: dict[str, list[Event]], catalogue: set[str]) -> set[str]:
    """Event ids of each user's last catalogue click (users with >= 3 such clicks)."""
    final = set()
    for events in users.values():
        clicks = [e for e in events if e.type == "click" and e.item_id in catalogue]
        if len(clicks) >= MIN_INTERACTIONS:
            final.add(clicks[-1].event_id)
    return final


def score_events(
    users: dict[str, list[Event]],
    run: ReplayRun,
    catalogue: Sequence[str],
    *,
    final_only: bool = False,
) -> ScoredEvents:
    """Pair every scorable event with the list that was current just before it."""
    known = set(catalogue)
    final = final_interactions(users, known) if final_only else None
    rows: dict[str, list[Any]] = defaultdict(list)
    for user_index, events in enumerate(users.values()):
        current: tuple[str, ...] | None = None
        pending = sorted(
            (run.arrived[e.event_id], e.event_id) for e in events if e.event_id in run.arrived
        )
        had: set[str] = set()
        for ev in events:
            sent = run.sent.get(ev.event_id)
            while pending and sent is not None and pending[0][0] <= sent:
                current = run.lists[pending.pop(0)[1]]
            scorable = ev.item_id in known and current is not None and sent is not None
            if scorable and (final is None or ev.event_id in final):
                assert current is not None
                rows["event_ids"].append(ev.event_id)
                rows["users"].append(user_index)
                rows["types"].append(ev.type)
                rows["ts"].append(ev.ts)
                rows["lists"].append(current)
                rows["already_had"].append([sum(i in had for i in current[:k]) / k for k in KS])
            if ev.item_id is not None:
                had.add(ev.item_id)
    lists = rows["lists"]
    width = max((len(x) for x in lists), default=0)
    index = {item: i + 1 for i, item in enumerate(catalogue)}
    top = np.zeros((len(lists), width), dtype=np.int64)
    for row, items in enumerate(lists):
        top[row, : len(items)] = [index.get(i, 0) for i in items]
    targets = np.array([index[e] for e in _targets(users, rows["event_ids"])], dtype=np.int64)
    return ScoredEvents(
        event_ids=rows["event_ids"],
        users=np.array(rows["users"], dtype=np.int64),
        types=rows["types"],
        ts=np.array(rows["ts"], dtype=np.int64),
        ranks=target_ranks(top, targets) if len(lists) else np.zeros(0, dtype=np.int64),
        lists=lists,
        already_had=np.array(rows["already_had"], dtype=np.float64).reshape(-1, len(KS)),
    )


def _targets(users: dict[str, list[Event]], event_ids: Sequence[str]) -> list[str]:
    items = {e.event_id: e.item_id for events in users.values() for e in events}
    return [str(items[i]) for i in event_ids]


def summarise(scored: ScoredEvents, num_items: int) -> dict[str, Any]:
    """HR/NDCG/MRR@K, coverage@K and already-had@K, overall and per event type."""
    groups = {"all": np.ones(len(scored.types), dtype=bool)}
    for kind in sorted(set(scored.types)):
        groups[kind] = np.array([t == kind for t in scored.types])
    out = {}
    for name, mask in groups.items():
        figures: dict[str, float] = {"events": int(mask.sum())}
        for k in KS:
            for metric, values in gains(scored.ranks[mask], k).items():
                figures[metric] = float(values.mean()) if mask.any() else 0.0
        for j, k in enumerate(KS):
            chosen = [scored.lists[i][:k] for i in np.flatnonzero(mask)]
            figures[f"coverage@{k}"] = len({i for items in chosen for i in items}) / num_items
            figures[f"already_had@{k}"] = (
                float(scored.already_had[mask, j].mean()) if mask.any() else 0.0
            )
        out[name] = figures
    return out


def hr_curve(scored: ScoredEvents, max_k: int = max(KS)) -> list[float]:
    """HR@K for K = 1 .. ``max_k``."""
    ranks = scored.ranks
    return [
        float(((ranks > 0) & (ranks <= k)).mean()) if len(ranks) else 0.0
        for k in range(1, max_k + 1)
    ]


def ndcg_over_time(scored: ScoredEvents, buckets: int = TIME_BUCKETS) -> list[dict[str, float]]:
    """NDCG@10 in equal-width buckets of the events' own timestamps."""
    if not len(scored.ts):
        return []
    ndcg = gains(scored.ranks, HEADLINE_K)[f"ndcg@{HEADLINE_K}"]
    edges = np.linspace(scored.ts.min(), scored.ts.max() + 1, buckets + 1)
    which = np.clip(np.searchsorted(edges, scored.ts, side="right") - 1, 0, buckets - 1)
    series = []
    for b in range(buckets):
        mask = which == b
        if mask.any():
            series.append(
                {
                    "start_ts": int(edges[b]),
                    "end_ts": int(edges[b + 1]),
                    "events": int(mask.sum()),
                    f"ndcg@{HEADLINE_K}": float(ndcg[mask].mean()),
                }
            )
    return series


def timing(run: ReplayRun) -> dict[str, Any]:
    """Throughput, event-to-list latency percentiles and lists per second of wall time."""
    latency = np.array(
        [(run.arrived[e] - run.sent[e]) * 1000.0 for e in run.arrived if e in run.sent]
    )
    arrivals = np.array(list(run.arrived.values()))
    seconds = int(math.ceil(run.wall_s)) or 1
    per_second = np.bincount(arrivals.astype(np.int64), minlength=seconds)
    pct = {f"p{q}": float(np.percentile(latency, q)) for q in (50, 90, 99)} if len(latency) else {}
    return {
        "wall_s": round(run.wall_s, 2),
        "events_per_s": len(run.sent) / run.wall_s if run.wall_s else 0.0,
        "lists_per_s": len(run.lists) / run.wall_s if run.wall_s else 0.0,
        "latency_ms": {**pct, "max": float(latency.max()) if len(latency) else 0.0},
        "lists_per_second": [int(x) for x in per_second],
    }


def latency_ms(run: ReplayRun) -> np.ndarray:
    """Every event's sent-to-list latency in ms, sorted (for the CDF plot)."""
    return np.sort([(run.arrived[e] - run.sent[e]) * 1000.0 for e in run.arrived if e in run.sent])


def compare(a: ScoredEvents, b: ScoredEvents) -> dict[str, dict[str, float]]:
    """B minus A on the events both scored: mean difference and 95% CI clustered by user."""
    position = {e: i for i, e in enumerate(b.event_ids)}
    shared = [(i, position[e]) for i, e in enumerate(a.event_ids) if e in position]
    rows_a = np.array([i for i, _ in shared], dtype=np.int64)
    rows_b = np.array([j for _, j in shared], dtype=np.int64)
    users = a.users[rows_a]
    out = {}
    gains_a = gains(a.ranks[rows_a], HEADLINE_K)
    gains_b = gains(b.ranks[rows_b], HEADLINE_K)
    for metric in gains_a:
        diff = gains_b[metric] - gains_a[metric]
        mean, low, high = mean_ci95(diff, users)
        out[metric] = {
            "a": float(gains_a[metric].mean()) if len(diff) else 0.0,
            "b": float(gains_b[metric].mean()) if len(diff) else 0.0,
            "diff": mean,
            "ci95_low": low,
            "ci95_high": high,
            "events": len(diff),
        }
    return out


def mean_ci95(values: np.ndarray, clusters: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``values`` and its 95% confidence interval, clustered by ``clusters``."""
    mean = float(values.mean()) if len(values) else 0.0
    half = Z_95 * clustered_se(values, clusters)
    return mean, mean - half, mean + half


def clustered_se(values: np.ndarray, clusters: np.ndarray) -> float:
    """Standard error of the mean of ``values``, robust to correlation within clusters."""
    n = len(values)
    if n < 2:
        return 0.0
    residual = values - values.mean()
    sums = np.bincount(clusters, weights=residual)
    groups = len(np.unique(clusters))
    correction = groups / (groups - 1) if groups > 1 else 1.0
    return float(math.sqrt(correction * float((sums**2).sum())) / n)
