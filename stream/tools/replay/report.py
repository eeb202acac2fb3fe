"""The replay report: ``report.json`` (every figure), ``summary.md`` and PNG plots.

Plots: HR@K against K, NDCG@10 over the log's time, the event-to-list latency CDF and lists
per second of wall time; with two models, both on each plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import orjson  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from stream.contracts.manifest import load_manifest  # noqa: E402
from stream.contracts.records import Event  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.tools.replay import metrics  # noqa: E402
from stream.tools.replay.metrics import HEADLINE_K, KS, ReplayRun  # noqa: E402

PLOTS = ("hr_at_k.png", "ndcg_over_time.png", "latency_cdf.png", "throughput.png")


def build_report(
    events: Sequence[Event],
    runs: Sequence[ReplayRun],
    *,
    final_only: bool,
    skipped: dict[str, int],
    settings: Settings,
    speed: float = 0.0,
) -> dict[str, Any]:
    """Every figure of the replay, per model, and B - A when two models ran."""
    users = metrics.by_user(events)
    models = []
    scored_runs = []
    for run in runs:
        catalogue = load_manifest(run.model_dir, verify_hash=False).items
        scored = metrics.score_events(users, run, catalogue, final_only=final_only)
        scored_runs.append(scored)
        models.append(
            {
                "model_dir": run.model_dir,
                "model_version": run.model_version,
                "mode": run.mode,
                "metrics": metrics.summarise(scored, len(catalogue)),
                "hr_at_k": metrics.hr_curve(scored),
                "ndcg_over_time": metrics.ndcg_over_time(scored),
                "timing": metrics.timing(run),
                "lists": len(run.lists),
                "duplicate_lists": run.duplicate_lists,
                "failed_events": run.failed_events,
                "scoring": run.stats,
            }
        )
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "log": {
            "events": len(events),
            "users": len(users),
            "first_ts": events[0].ts if events else None,
            "last_ts": events[-1].ts if events else None,
            "skipped": skipped,
        },
        "protocol": {
            "scored": "each user's last catalogue click (users with >= 3)"
            if final_only
            else "every event with a catalogue item",
            "list": "the user's newest list that had arrived before the event was sent",
            "pacing": f"open loop at {speed:g}x recorded pace" if speed else "closed loop per user",
            "ks": list(KS),
            "exclude": settings.exclude,
            "top_k": settings.top_k,
            "diversity": settings.diversity,
            "batch_max_users": settings.batch_max_users,
            "batch_max_wait_ms": settings.batch_max_wait_ms,
        },
        "models": models,
    }
    if len(scored_runs) == 2:
        report["comparison"] = metrics.compare(scored_runs[0], scored_runs[1])
    return report


def markdown(report: dict[str, Any]) -> str:
    """The headline tables."""
    log, protocol = report["log"], report["protocol"]
    lines = [
        "# Replay report",
        "",
        f"{log['events']} events of {log['users']} users; scored: {protocol['scored']}; "
        f"exclude={protocol['exclude']}, top_k={protocol['top_k']}, "
        f"diversity={protocol['diversity']}.",
        "",
    ]
    headline = [f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in KS]
    extra = [f"coverage@{HEADLINE_K}", f"already_had@{HEADLINE_K}"]
    lines.append("| model | mode | events | " + " | ".join(headline + extra) + " |")
    lines.append("|---" * (len(headline) + len(extra) + 3) + "|")
    for model in report["models"]:
        for kind, figures in model["metrics"].items():
            name = model["model_version"] + ("" if kind == "all" else f" ({kind})")
            cells = [f"{figures[m]:.4f}" for m in headline + extra]
            lines.append(
                f"| {name} | {model['mode']} | {figures['events']} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "| model | wall s | events/s | latency p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for model in report["models"]:
        timing = model["timing"]
        latency = timing["latency_ms"]
        lines.append(
            f"| {model['model_version']} | {timing['wall_s']:.1f} | "
            f"{timing['events_per_s']:.0f} | {latency.get('p50', 0.0):.1f} | "
            f"{latency.get('p99', 0.0):.1f} |"
        )
    if "comparison" in report:
        lines += [
            "",
            "B − A on the same events (95% CI, clustered by user):",
            "",
            "| metric | A | B | B − A | 95% CI |",
            "|---|---|---|---|---|",
        ]
        for metric, c in report["comparison"].items():
            lines.append(
                f"| {metric} | {c['a']:.4f} | {c['b']:.4f} | {c['diff']:+.4f} | "
                f"[{c['ci95_low']:+.4f}, {c['ci95_high']:+.4f}] |"
            )
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in PLOTS)]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], runs: Sequence[ReplayRun], out: Path) -> str:
    """Write ``report.json``, ``summary.md`` and the plots into ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    summary = markdown(report)
    (out / "summary.md").write_text(summary)
    _plots(report, runs, out)
    return summary


def _plots(report: dict[str, Any], runs: Sequence[ReplayRun], out: Path) -> None:
    models = report["models"]
    labels = [f"{m['model_version']} ({m['mode']})" for m in models]
    figure, axes = plt.subplots()
    for model, label in zip(models, labels, strict=True):
        curve = model["hr_at_k"]
        axes.plot(range(1, len(curve) + 1), curve, marker=".", label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(figure, axes, "HR@K against K", "K", "HR@K", out / PLOTS[0])

    figure, axes = plt.subplots()
    for model, label in zip(models, labels, strict=True):
        series = model["ndcg_over_time"]
        when = [datetime.fromtimestamp(s["start_ts"] / 1000, UTC) for s in series]
        ndcg = [s[f"ndcg@{HEADLINE_K}"] for s in series]
        axes.plot(when, ndcg, marker=".", label=label)  # type: ignore[arg-type]  # datetimes plot
    figure.autofmt_xdate()
    _finish(
        figure, axes, f"NDCG@{HEADLINE_K} over the log's time", "event time", "NDCG", out / PLOTS[1]
    )

    figure, axes = plt.subplots()
    for run, label in zip(runs, labels, strict=True):
        latency = metrics.latency_ms(run)
        if len(latency):
            axes.plot(latency, [(i + 1) / len(latency) for i in range(len(latency))], label=label)
    axes.set_xscale("log")
    _finish(figure, axes, "Event-to-list latency", "latency (ms)", "share of lists", out / PLOTS[2])

    figure, axes = plt.subplots()
    for model, label in zip(models, labels, strict=True):
        per_second = model["timing"]["lists_per_second"]
        axes.plot(range(len(per_second)), per_second, label=label)
    _finish(figure, axes, "Throughput", "wall time (s)", "lists per second", out / PLOTS[3])


def _finish(figure: Any, axes: Any, title: str, xlabel: str, ylabel: str, path: Path) -> None:
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
