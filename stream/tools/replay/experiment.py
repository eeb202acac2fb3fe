"""``python -m stream experiment report``: per-arm rates of a live experiment, and a verdict.

Reads the events topic and the recommendations topic from their start (or takes a replay's lists,
:mod:`stream.tools.replay.cli` ``--experiment``), attributes each click and purchase to the latest
list before it with the worker's rule (:func:`stream.experiments.attribution.attribute_log`), and
reports per arm: users, lists, clicks and purchases of listed items, and their rates per list. Each
other arm is compared with the control (the first arm unless ``--control``): the difference of rates
with a 95% confidence interval clustered by user (users are the unit of assignment, and one user's
lists are not independent), significant when the interval excludes 0. Writes ``experiment.json``,
``summary.md`` and ``experiment.png``; the last line of output is the JSON of the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import orjson  # noqa: E402

from stream.contracts.records import Event, Recommendation, parse_event  # noqa: E402
from stream.errors import InvalidEvent, StreamrecError  # noqa: E402
from stream.experiments.arms import Experiment, load_experiment  # noqa: E402
from stream.experiments.attribution import TALLIES, UserOutcome, attribute_log  # noqa: E402
from stream.kafka.security import kafka_client_options  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.tools.cluster.lists import TopicReader  # noqa: E402
from stream.tools.replay.metrics import Z_95, ReplayRun, by_user  # noqa: E402

#: The rates reported per arm: attributed events per list.
RATES = {"click_rate": "clicks", "purchase_rate": "purchases"}
#: Fewest users per arm for a verdict to be trusted.
MIN_USERS = 100
#: Largest difference of a rate between a replayed experiment and the offline comparison
#: that still agrees (the models score each user alone; only float rounding of different
#: batch compositions may move a near-tie).
AGREEMENT = 0.002
#: Seconds without a new record after which a topic counts as read to its end.
IDLE_S = 3.0


def ratio_ci95(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """Σnum / Σden and its standard error, clustered by row (one row per user).

    The delta method's linearisation: each user's ``num - rate * den``, summed over users.
    """
    total = float(den.sum())
    if total <= 0:
        return 0.0, 0.0
    rate = float(num.sum()) / total
    groups = len(num)
    if groups < 2:
        return rate, 0.0
    residual = num - rate * den
    se = math.sqrt(groups / (groups - 1) * float((residual**2).sum())) / total
    return rate, se


def report(
    outcomes: Mapping[tuple[str, str], UserOutcome],
    *,
    experiment: str,
    arms: Sequence[str],
    control: str | None = None,
    window_s: float,
) -> dict[str, Any]:
    """Per-arm figures and each arm's difference from the control."""
    control = control or arms[0]
    if control not in arms:
        msg = f"--control {control!r} is not an arm ({', '.join(arms)})"
        raise StreamrecError(msg)
    per_arm: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, float]] = {}
    for arm in arms:
        rows = [o for (a, _), o in outcomes.items() if a == arm]
        lists = np.array([o.lists for o in rows], dtype=np.float64)
        figures: dict[str, Any] = {
            "users": len(rows),
            "lists": int(lists.sum()),
            "clicks": sum(o.clicks for o in rows),
            "purchases": sum(o.purchases for o in rows),
        }
        errors[arm] = {}
        for rate, count in RATES.items():
            num = np.array([getattr(o, count) for o in rows], dtype=np.float64)
            value, se = ratio_ci95(num, lists)
            figures[rate] = value
            figures[f"{rate}_ci95"] = [value - Z_95 * se, value + Z_95 * se]
            errors[arm][rate] = se
        per_arm[arm] = figures
    differences: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in arms:
        if arm == control:
            continue
        differences[arm] = {}
        for rate in RATES:
            diff = per_arm[arm][rate] - per_arm[control][rate]
            half = Z_95 * math.hypot(errors[arm][rate], errors[control][rate])
            differences[arm][rate] = {
                "diff": diff,
                "ci95_low": diff - half,
                "ci95_high": diff + half,
                "significant": bool(diff - half > 0 or diff + half < 0),
            }
    return {
        "experiment": experiment,
        "control": control,
        "attribution_window_s": window_s,
        "arms": per_arm,
        "vs_control": differences,
        "verdict": verdict(differences, min(f["users"] for f in per_arm.values())),
    }


def verdict(differences: Mapping[str, Mapping[str, Mapping[str, Any]]], fewest_users: int) -> str:
    """One sentence on the click rate: which arm wins, or that no difference is shown.

    With fewer than :data:`MIN_USERS` users in an arm the interval (a normal approximation
    over users) is too optimistic to decide on, and the verdict says so first.
    """
    parts = []
    if fewest_users < MIN_USERS:
        parts.append(f"too few users to decide ({fewest_users} in an arm, want {MIN_USERS}+)")
    for arm, rates in differences.items():
        click = rates["click_rate"]
        if not click["significant"]:
            parts.append(f"{arm}: no significant difference in click rate from the control")
        else:
            side = "higher" if click["diff"] > 0 else "lower"
            parts.append(f"{arm}: click rate significantly {side} than the control")
    return "; ".join(parts)


def lists_from_run(
    run: ReplayRun, events: Mapping[str, Event], arm_of_user: Mapping[str, str] | None = None
) -> dict[str, Recommendation]:
    """A replay's lists as recommendations (trigger time from the log; arm as recorded).

    ``arm_of_user`` labels the lists of a run that had no experiment (an offline run of one
    arm's model), so its users can be tallied under the arm that would have served them.
    """
    out = {}
    for trigger, items in run.lists.items():
        ev = events[trigger]
        arm = arm_of_user[ev.user_id] if arm_of_user is not None else run.arms.get(trigger)
        out[trigger] = Recommendation(
            user_id=ev.user_id,
            items=[(i, 0.0) for i in items],
            model_version=run.model_version,
            trigger_event_id=trigger,
            event_ts=ev.ts,
            generated_ts=0,
            arm=arm,
        )
    return out


def replay_report(
    events: Sequence[Event],
    experiment: Experiment,
    run: ReplayRun,
    offline: Sequence[ReplayRun],
    window_s: float,
) -> dict[str, Any]:
    """The report of a replayed experiment, checked against the offline comparison.

    ``run`` replayed the log with the experiment; ``offline`` holds one run per arm, in the
    arms' order, that replayed the whole log with that arm's model alone. Each arm's users
    are tallied in both; ``offline.agrees`` when every rate matches within
    :data:`AGREEMENT`. ``live_counters`` (in-process replays) are the worker step's own
    tallies of the replay.
    """
    by_id = {ev.event_id: ev for ev in events}
    users = by_user(events)
    window_ms = int(window_s * 1000)
    arms = [a.name for a in experiment.arms]
    result = report(
        attribute_log(users, lists_from_run(run, by_id), window_ms),
        experiment=experiment.name,
        arms=arms,
        window_s=window_s,
    )
    assigned = {user: experiment.assign(user).name for user in users}
    offline_rates: dict[str, dict[str, float]] = {}
    worst = 0.0
    for arm, arm_run in zip(arms, offline, strict=True):
        mine = {u: evs for u, evs in users.items() if assigned[u] == arm}
        lists = lists_from_run(arm_run, by_id, assigned)
        alone = report(
            attribute_log(mine, lists, window_ms),
            experiment=experiment.name,
            arms=[arm],
            window_s=window_s,
        )["arms"][arm]
        offline_rates[arm] = {r: alone[r] for r in RATES}
        for rate in RATES:
            worst = max(worst, abs(alone[rate] - result["arms"][arm][rate]))
    counters = run.stats.get("counters")
    if counters is not None:  # in process: the step's own tallies (a worker keeps its own)
        result["live_counters"] = {
            arm: {t: counters.get(f"arm_{t}.{arm}", 0) for t in TALLIES} for arm in arms
        }
    result["offline"] = {
        "click_rate": {a: r["click_rate"] for a, r in offline_rates.items()},
        "purchase_rate": {a: r["purchase_rate"] for a, r in offline_rates.items()},
        "max_rate_diff": worst,
        "agrees": worst <= AGREEMENT,
    }
    return result


async def read_topics(
    settings: Settings, idle_s: float = IDLE_S
) -> tuple[dict[str, list[Event]], dict[str, Recommendation], list[str]]:
    """Every event (by user, in partition order) and list (by trigger) on the topics.

    Returns also the arms in the order their lists first appeared. Invalid events (the
    dead-letter topic's business) are skipped.
    """
    users: dict[str, list[Event]] = {}
    lists: dict[str, Recommendation] = {}
    arms: dict[str, None] = {}
    last = time.monotonic()

    def on_record(record: Any) -> None:
        nonlocal last
        last = time.monotonic()
        if record.topic == settings.recommendations_topic:
            rec = Recommendation.from_json(record.value)
            lists.setdefault(rec.trigger_event_id, rec)
            if rec.arm is not None:
                arms.setdefault(rec.arm)
            return
        try:
            ev = parse_event(record.value, record.key or b"")
        except InvalidEvent:
            return
        users.setdefault(ev.user_id, []).append(ev)

    topics = [settings.events_topic, settings.recommendations_topic]
    options = kafka_client_options(settings)  # a production cluster's SSL/SASL settings too
    async with TopicReader(
        options.pop("bootstrap_servers"),
        topics,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        **options,
    ) as reader:
        await reader.follow(on_record, lambda: time.monotonic() - last > idle_s)
    return users, lists, list(arms)


def markdown(rep: dict[str, Any]) -> str:
    """The report as a Markdown summary."""
    lines = [
        f"# Experiment `{rep['experiment']}`",
        "",
        f"Attribution window {rep['attribution_window_s']:g} s; control `{rep['control']}`; "
        "95% intervals clustered by user.",
        "",
        "| arm | users | lists | clicks | click rate [95% CI] | purchases | purchase rate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, f in rep["arms"].items():
        low, high = f["click_rate_ci95"]
        lines.append(
            f"| {arm} | {f['users']} | {f['lists']} | {f['clicks']} | "
            f"{f['click_rate']:.4f} [{low:.4f}, {high:.4f}] | {f['purchases']} | "
            f"{f['purchase_rate']:.4f} |"
        )
    lines += ["", "| arm − control | rate | difference [95% CI] | significant |"]
    lines.append("| --- | --- | --- | --- |")
    for arm, rates in rep["vs_control"].items():
        for rate, d in rates.items():
            lines.append(
                f"| {arm} | {rate} | {d['diff']:+.4f} [{d['ci95_low']:+.4f}, "
                f"{d['ci95_high']:+.4f}] | {'yes' if d['significant'] else 'no'} |"
            )
    lines += ["", f"**Verdict:** {rep['verdict']}."]
    if "offline" in rep:
        agree = rep["offline"]["agrees"]
        lines += [
            "",
            "Offline side-by-side (each arm's model replayed on its users alone): "
            f"click rates {rep['offline']['click_rate']}; "
            f"{'agrees' if agree else 'DOES NOT agree'} with the experiment.",
        ]
    return "\n".join(lines) + "\n"


def plot(rep: dict[str, Any], path: Path) -> None:
    """Click and purchase rate per arm with their 95% intervals, one panel per rate."""
    arms = list(rep["arms"])
    figure, panels = plt.subplots(1, len(RATES), figsize=(8, 3.6))
    for axes, rate in zip(panels, RATES, strict=True):
        values = [rep["arms"][a][rate] for a in arms]
        lows = [v - rep["arms"][a][f"{rate}_ci95"][0] for a, v in zip(arms, values, strict=True)]
        highs = [rep["arms"][a][f"{rate}_ci95"][1] - v for a, v in zip(arms, values, strict=True)]
        axes.bar(arms, values, yerr=[lows, highs], capsize=6, color=["tab:gray", "tab:blue"])
        axes.set_title(rate.replace("_", " ") + " per list")
    figure.suptitle(f"experiment {rep['experiment']} (95% CI, clustered by user)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(rep: dict[str, Any], out: Path) -> str:
    """Write ``experiment.json``, ``summary.md`` and ``experiment.png``; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_bytes(orjson.dumps(rep, option=orjson.OPT_INDENT_2))
    summary = markdown(rep)
    (out / "summary.md").write_text(summary)
    plot(rep, out / "experiment.png")
    return summary


def headline(rep: dict[str, Any]) -> str:
    """The report's last line: per-arm rates, differences and the verdict, as JSON."""
    return orjson.dumps(
        {
            "experiment": rep["experiment"],
            "arms": {
                a: {k: f[k] for k in ("users", "lists", "clicks", "purchases", *RATES)}
                for a, f in rep["arms"].items()
            },
            "vs_control": rep["vs_control"],
            "verdict": rep["verdict"],
            **({"agrees_with_offline": rep["offline"]["agrees"]} if "offline" in rep else {}),
        }
    ).decode()


def main(argv: Sequence[str]) -> int:
    """``python -m stream experiment report``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m stream experiment", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser("report", help="per-arm rates and a verdict from the topics")
    rep.add_argument("--control", help="the arm the others are compared with (default: first)")
    rep.add_argument("--out", default="reports/experiment", help="report directory")
    rep.add_argument(
        "--idle-s", type=float, default=IDLE_S, help="stop reading after this long without data"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    users, lists, arms = asyncio.run(read_topics(settings, args.idle_s))
    if not arms:
        msg = (
            f"no list on {settings.recommendations_topic!r} names an experiment arm: is "
            "STREAMREC_EXPERIMENT set on the workers (and STREAMREC_BROKER here)?"
        )
        raise StreamrecError(msg)
    outcomes = attribute_log(users, lists, int(settings.attribution_window_s * 1000))
    name = next(r.experiment for r in lists.values() if r.experiment is not None)
    if settings.experiment:  # the file, when at hand, orders the arms (control first)
        experiment = load_experiment(settings.experiment)
        name, arms = experiment.name, [a.name for a in experiment.arms]
    result = report(
        outcomes,
        experiment=str(name),
        arms=arms,
        control=args.control,
        window_s=settings.attribution_window_s,
    )
    print(write(result, Path(args.out)), file=sys.stderr)
    print(headline(result))
    return 0
