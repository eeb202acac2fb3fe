"""``python -m stream backtest`` (``make backtest``): trained on the past, scored on the future.

1. **Cut.** The time by which ``--cut-share`` (default 70%) of the log's ratings have
   happened. Everything before it is the past; nothing after it is used for training,
   tuning or fitting a baseline (the online methods learn from each click once the lists
   made before it are scored, as in the worker).
2. **Train** the model, and the ablation without the language model (``model_no_text``), on
   the past only, over the items seen in the past (``model_export`` with its default
   configuration), and export both (parity-checked) under ``--work``.
3. **Replay the future** in time order through the worker's scoring code
   (:class:`stream.model.scorer.Scorer` over the live :class:`stream.catalogue.items.Catalogue`,
   contexts updated by :func:`stream.state.context.apply_event`, seen items excluded). Each item's
   catalogue record is published at its first appearance in the log (items of the past at the
   start), as a shop would add it; each click on a catalogue item after the cut is scored against
   the list built from the user's events before it, with the catalogue as of that moment. The models
   learn online what the worker learns: each click counts for the click feedback of items added
   after export (:mod:`stream.model.feedback`) once the lists before it are made.
4. **Baselines** through the same replay, same exclusions: ``popular_recent`` (most clicked
   over the last ``--popular-days`` days, updated online from the stream: a list counts
   clicks before it only, never its own target, at most :data:`MAX_STALE_MS` stale), ``itemknn``
   (co-occurrence fit on the past only, not updated), ``text_frozen`` (the pretrained MiniLM,
   no fine-tuning: cosine of an item's text to the user's recent items' texts) and ``random``
   (uniform over the items available then).
5. **Report**: HR@10 and NDCG@10 with 95% confidence intervals clustered by user, over all
   events after the cut, events on **cold** items (first seen after the cut), new users (no
   event before the cut) and returning users; the model minus each baseline with its
   interval; freshness, the time from publishing a catalogue record to the item set that
   holds it (every list from then on can contain the item). Markdown and a plot under
   ``--out``; the last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from model_export.data import sources as data
from model_export.evaluation.baselines import ItemKNNConfig, itemknn_scores
from model_export.model.cooccurrence import cooccurrence
from model_export.ranking import gains
from stream.catalogue.items import Catalogue
from stream.contracts.manifest import DAY_MS, MANIFEST_FILE, load_manifest
from stream.contracts.records import CatalogueRecord, Event
from stream.errors import ModelLoadError
from stream.model.diversity import unit_rows
from stream.model.scorer import Scorer
from stream.progress import Stages
from stream.state.context import UserContext, apply_event
from stream.tools.replay.metrics import mean_ci95

K = 10
BATCH = 512
MODELS = ("model", "model_no_text")
BASELINES = ("popular_recent", "itemknn", "text_frozen", "random")
GROUPS = ("overall", "cold", "new_users", "returning_users")
METRICS = (f"hr@{K}", f"ndcg@{K}")
#: Longest (event time) a list waits in a batch: the online baseline's counts are frozen
#: while lists are pending, so this bounds how stale they can be for a list.
MAX_STALE_MS = 3_600_000
#: History kept per user, as the worker's default ``STREAMREC_CONTEXT_EVENTS``.
CONTEXT_EVENTS = 50
#: A ranker answers with the K best of its items; lists compare the first K.
Ranker = Callable[[Sequence[UserContext], Sequence["Scored"]], list[list[str]]]


@dataclasses.dataclass(frozen=True)
class Scored:
    """One click after the cut, to be scored against the list current just before it."""

    event: Event
    cold: bool
    new_user: bool


def cut_time(events: Sequence[Event], share: float) -> int:
    """The time by which ``share`` of the clicks have happened (epoch ms)."""
    stamps = np.sort([e.ts for e in events if e.type == "click"])
    return int(stamps[min(len(stamps) - 1, int(share * len(stamps)))])


def train_model(
    past: Sequence[Event],
    catalogue: Sequence[data.CatalogueItem],
    out: Path,
    cut_ts: int,
    *,
    use_text: bool,
    tiny: bool,
) -> Path:
    """Train on ``past`` over ``catalogue`` and export to ``out`` (reused if already there)."""
    from model_export.data.split import build_split
    from model_export.export.onnx import export
    from model_export.model.ranker import RankerConfig
    from model_export.training.train import TINY, TrainConfig, train

    if (out / MANIFEST_FILE).is_file():
        try:
            made = load_manifest(out, verify_hash=False).training
        except ModelLoadError:
            made = {}  # a model of another format: trained again
        if made.get("cut_ts") == cut_ts and made.get("tiny") == tiny:
            return out
    config = RankerConfig(num_items=len(catalogue), use_text=use_text)
    train_config = dataclasses.replace(TrainConfig(), exclude="seen")
    if tiny:
        config = config.tiny()
        train_config = dataclasses.replace(TINY, exclude="seen")
    split = build_split(past, [i.item_id for i in catalogue])
    trained = train(
        split, [i.text for i in catalogue], config, train_config, final_fit="all", progress=True
    )
    export(trained, catalogue, out, {"cut_ts": cut_ts, "tiny": tiny, "trained_on": "before cut"})
    return out


class PopularRecent:
    """Most clicked items over a sliding window, updated from the stream as it goes."""

    def __init__(self, days: float) -> None:
        self.window_ms = int(days * DAY_MS)
        self.clicks: deque[tuple[int, str]] = deque()
        self.counts: Counter[str] = Counter()

    def observe(self, event: Event) -> None:
        """Count a click; forget those older than the window."""
        if event.type != "click" or event.item_id is None:
            return
        self.clicks.append((event.ts, event.item_id))
        self.counts[event.item_id] += 1
        while self.clicks and self.clicks[0][0] < event.ts - self.window_ms:
            _, item = self.clicks.popleft()
            self.counts[item] -= 1

    def __call__(self, contexts: Sequence[UserContext], _: Sequence[Scored]) -> list[list[str]]:
        """Each user's top K, seen items excluded."""
        ranked = [item for item, n in self.counts.most_common(K + 1000) if n > 0]
        return [_top(ranked, _seen(ctx)) for ctx in contexts]


class ItemKNN:
    """Co-occurrence of the past's clicks: items that followed the user's recent items.

    The leave-one-out baseline's own statistic and scoring
    (:func:`model_export.evaluation.baselines.itemknn_scores`, default configuration).
    """

    def __init__(self, past: Sequence[Event], items: Sequence[str]) -> None:
        from model_export.data.split import build_split

        split = build_split(past, items)
        self.config = ItemKNNConfig()
        self.items = ("", *items)
        self.index = {item: i for i, item in enumerate(items, 1)}
        self.counts = cooccurrence(split.train_interactions("all"), len(items), self.config.cooc)

    def __call__(self, contexts: Sequence[UserContext], _: Sequence[Scored]) -> list[list[str]]:
        """Each user's top K, seen items excluded."""
        histories = [
            np.array(
                [self.index.get(e.item_id or "", 0) for e in ctx.events if e.type == "click"],
                dtype=np.int64,
            )
            for ctx in contexts
        ]
        lists = []
        for ctx, scores in zip(
            contexts, itemknn_scores(self.counts, histories, self.config), strict=True
        ):
            order = [self.items[i] for i in np.argsort(-scores)[: K + 200] if scores[i] > 0]
            lists.append(_top(order, _seen(ctx)))
        return lists


class TextFrozen:
    """The pretrained MiniLM (no fine-tuning): items whose text is closest to the user's."""

    def __init__(self, catalogue: Sequence[data.CatalogueItem]) -> None:
        from model_export.model.text import TextEncoder, embed, text_tokenizer

        vectors = embed(
            TextEncoder.from_pretrained(), text_tokenizer(), [i.text for i in catalogue]
        )
        self.vectors = unit_rows(vectors)
        self.row = {item.item_id: i for i, item in enumerate(catalogue)}
        self.ids = [item.item_id for item in catalogue]
        self.available: list[int] = []

    def publish(self, item_id: str) -> None:
        """Make an item available to lists."""
        self.available.append(self.row[item_id])

    def __call__(self, contexts: Sequence[UserContext], _: Sequence[Scored]) -> list[list[str]]:
        """Each user's top K, seen items excluded."""
        pool = np.array(self.available)
        lists: list[list[str]] = []
        for ctx in contexts:
            recent = [self.row[e.item_id] for e in ctx.events if e.item_id in self.row][-10:]
            if not recent:
                lists.append([])
                continue
            profile = self.vectors[recent].mean(axis=0)
            scores = self.vectors[pool] @ profile
            order = [self.ids[pool[i]] for i in np.argsort(-scores)[: K + 200]]
            lists.append(_top(order, _seen(ctx)))
        return lists


class Random:
    """Uniform over the items available then."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.available: list[str] = []

    def __call__(self, contexts: Sequence[UserContext], _: Sequence[Scored]) -> list[list[str]]:
        """Each user's top K, seen items excluded."""
        lists = []
        for ctx in contexts:
            size = min(K + 50, len(self.available))
            picks = self.rng.choice(len(self.available), size=size, replace=False)
            lists.append(_top([self.available[i] for i in picks], _seen(ctx)))
        return lists


def _seen(ctx: UserContext) -> set[str]:
    return set(ctx.excluded_items("seen"))


def _top(ranked: Sequence[str], seen: set[str]) -> list[str]:
    return [item for item in ranked if item not in seen][:K]


def _model(scorer: Scorer) -> Ranker:
    def rank(contexts: Sequence[UserContext], _: Sequence[Scored]) -> list[list[str]]:
        return [[item for item, _ in ranked] for ranked in scorer.score(contexts)]

    return rank


@dataclasses.dataclass
class Replay:
    """What the replay of the future produced: per method, each scored click's rank."""

    scored: list[Scored] = dataclasses.field(default_factory=list)
    ranks: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    freshness_ms: list[float] = dataclasses.field(default_factory=list)
    published_after_cut: int = 0


class _Future:
    """The replay after the cut: the live catalogue, the lists pending, what online methods learn.

    Items are published to the live catalogue at their first appearance in the log (the past's
    at the start); each click after the cut on a catalogue item, by a user with a context, is
    scored against the list built from the user's events before it. Lists are made in batches
    of :data:`BATCH` users; a click is counted by the online methods only once the lists
    pending ahead of it are made, so no list sees its own target or anything later.
    """

    def __init__(
        self,
        events: Sequence[Event],
        catalogue: Sequence[data.CatalogueItem],
        cut_ts: int,
        scorers: dict[str, Scorer],
        args: argparse.Namespace,
    ) -> None:
        self.cut_ts = cut_ts
        self.scorers = scorers
        self.text = {i.item_id: i.text for i in catalogue}
        past = [e for e in events if e.ts < cut_ts]
        self.before = {e.user_id for e in past}
        self.first_seen: dict[str, int] = {}
        for e in events:
            if e.item_id in self.text:
                self.first_seen.setdefault(e.item_id, e.ts)
        trained = [i for i in catalogue if self.first_seen.get(i.item_id, cut_ts) < cut_ts]
        self.popular = PopularRecent(args.popular_days)
        self.frozen = TextFrozen(catalogue)
        self.rand = Random()
        self.methods: dict[str, Ranker] = {name: _model(s) for name, s in scorers.items()}
        self.methods.update(
            popular_recent=self.popular,
            itemknn=ItemKNN(past, [i.item_id for i in trained]),
            text_frozen=self.frozen,
            random=self.rand,
        )
        self.live = Catalogue()
        self.out = Replay(ranks={name: [] for name in self.methods})
        self.contexts: dict[str, UserContext | None] = {}
        self.pending: dict[str, tuple[UserContext, Scored]] = {}
        #: Clicks the online methods have not counted yet (lists are pending ahead of them).
        self.uncounted: list[Event] = []
        self.publish([i.item_id for i in trained], 0)

    def publish(self, items: Sequence[str], at: int) -> None:
        """Add ``items`` to the live catalogue at ``at``; every method may list them now."""
        self.live.apply([CatalogueRecord(i, self.text[i], ts=at) for i in items])
        started = time.perf_counter()
        for scorer in self.scorers.values():
            scorer.follow(self.live)
        took = (time.perf_counter() - started) * 1000 / max(1, len(self.scorers))
        for item in items:
            self.frozen.publish(item)
            self.rand.available.append(item)
        if at >= self.cut_ts:
            self.out.freshness_ms.extend([took] * len(items))
            self.out.published_after_cut += len(items)

    def flush(self) -> None:
        """Make the pending lists, score their clicks, then count the clicks held back."""
        if self.pending:
            rows = list(self.pending.values())
            ctxs, targets = [r[0] for r in rows], [r[1] for r in rows]
            for name, method in self.methods.items():
                for target, items in zip(targets, method(ctxs, targets), strict=True):
                    item = target.event.item_id
                    self.out.ranks[name].append(items.index(item) + 1 if item in items else 0)
            self.out.scored.extend(targets)
            self.pending.clear()
        for seen in self.uncounted:
            self.count(seen)
        self.uncounted.clear()

    def count(self, event: Event) -> None:
        """What the online methods learn from a click once the lists before it are made."""
        self.popular.observe(event)
        for scorer in self.scorers.values():
            scorer.observe(event)  # the models' new-item click feedback, as in the worker

    def step(self, event: Event) -> None:
        """One event of the log, in time order."""
        item = event.item_id
        if item in self.text and item not in self.live.records:
            self.flush()  # lists before this moment are made without the item
            self.publish([item], event.ts)
        pending = self.pending
        if pending and event.ts - next(iter(pending.values()))[1].event.ts > MAX_STALE_MS:
            self.flush()  # the baseline's counts stay at most this stale for a pending list
        ctx = self.contexts.get(event.user_id)
        scorable = event.ts >= self.cut_ts and event.type == "click" and item in self.text
        if scorable and ctx is not None:
            if event.user_id in pending or len(pending) >= BATCH:
                self.flush()
            cold = self.first_seen[item] >= self.cut_ts  # type: ignore[index]
            pending[event.user_id] = (ctx, Scored(event, cold, event.user_id not in self.before))
        self.contexts[event.user_id], _ = apply_event(
            ctx, event, max_events=CONTEXT_EVENTS, max_purchased=500, max_seen=1000
        )
        if pending:
            self.uncounted.append(event)
        else:
            self.count(event)


def replay_future(
    events: Sequence[Event],
    catalogue: Sequence[data.CatalogueItem],
    cut_ts: int,
    scorers: dict[str, Scorer],
    args: argparse.Namespace,
) -> Replay:
    """Replay ``events`` in time order; score every click after ``cut_ts`` by every method."""
    future = _Future(events, catalogue, cut_ts, scorers, args)
    timeline = sorted(events, key=lambda e: e.ts)
    for event in tqdm(timeline, desc="replay", unit="event", mininterval=10.0):
        future.step(event)
    future.flush()
    return future.out


def _figures(per_event: dict[str, np.ndarray], users: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"events": len(users)}
    for metric in METRICS:
        mean, low, high = mean_ci95(per_event[metric], users)
        out[metric] = round(mean, 4)
        out[f"{metric}_ci95"] = [round(low, 4), round(high, 4)]
    return out


def summarise(replay: Replay, cut_ts: int) -> dict[str, Any]:
    """The JSON summary: figures per group and method, differences, freshness."""
    user_ids = {e: i for i, e in enumerate(dict.fromkeys(s.event.user_id for s in replay.scored))}
    users = np.array([user_ids[s.event.user_id] for s in replay.scored], dtype=np.int64)
    masks = {
        "overall": np.ones(len(users), dtype=bool),
        "cold": np.array([s.cold for s in replay.scored], dtype=bool),
        "new_users": np.array([s.new_user for s in replay.scored], dtype=bool),
    }
    masks["returning_users"] = ~masks["new_users"]
    # each scored event's HR@K and NDCG@K, per method, computed once
    per_event = {name: gains(np.array(ranks), K) for name, ranks in replay.ranks.items()}
    summary: dict[str, Any] = {"cut_ts": cut_ts}
    differences: dict[str, Any] = {}
    for group, mask in masks.items():
        summary[group] = {
            name: _figures({m: v[mask] for m, v in values.items()}, users[mask])
            for name, values in per_event.items()
        }
        differences[group] = {}
        model = per_event["model"]
        for name, other in per_event.items():
            if name == "model":
                continue
            differences[group][name] = {
                metric: [
                    round(x, 4)
                    for x in mean_ci95((model[metric] - other[metric])[mask], users[mask])
                ]
                for metric in METRICS
            }
    fresh = np.array(replay.freshness_ms or [0.0])
    summary["freshness_ms"] = {
        "p50": round(float(np.percentile(fresh, 50)), 2),
        "p99": round(float(np.percentile(fresh, 99)), 2),
        "items": replay.published_after_cut,
    }
    summary["model_minus_baseline"] = differences
    return summary


def markdown(summary: dict[str, Any], notes: dict[str, Any]) -> str:
    """The report: what was done, then one table per group, then the differences."""
    lines = [
        "# Temporal backtest",
        "",
        *(f"- **{key}**: {value}" for key, value in notes.items()),
        "",
    ]
    for group in GROUPS:
        rows = summary[group]
        events = next(iter(rows.values()))["events"]
        lines += [
            f"## {group} ({events} events)",
            "",
            "| method | HR@10 | 95% CI | NDCG@10 | 95% CI | model − method, HR@10 [95% CI] |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, fig in rows.items():
            diff = summary["model_minus_baseline"][group].get(name)
            diff_text = (
                f"{diff['hr@10'][0]:+.4f} [{diff['hr@10'][1]:+.4f}, {diff['hr@10'][2]:+.4f}]"
                if diff
                else ""
            )
            lines.append(
                f"| {name} | {fig['hr@10']:.4f} | {fig['hr@10_ci95']} | {fig['ndcg@10']:.4f} "
                f"| {fig['ndcg@10_ci95']} | {diff_text} |"
            )
        lines.append("")
    fresh = summary["freshness_ms"]
    lines.append(
        f"Freshness (record published → item set holding it, {fresh['items']} items): "
        f"p50 {fresh['p50']} ms, p99 {fresh['p99']} ms."
    )
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    """HR@10 of every method in every group, with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary["overall"])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(methods)
    for j, name in enumerate(methods):
        values = [summary[g][name]["hr@10"] for g in GROUPS]
        low = [summary[g][name]["hr@10"] - summary[g][name]["hr@10_ci95"][0] for g in GROUPS]
        ax.bar(np.arange(len(GROUPS)) + j * width, values, width, yerr=low, label=name)
    ax.set_xticks(np.arange(len(GROUPS)) + 0.4 - width / 2, GROUPS)
    ax.set_ylabel("HR@10")
    ax.set_title("Temporal backtest: trained before the cut, scored after it")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


#: The stages and their seconds on the reference box, estimated from 2026-12-07's runs (2 cores:
#: the default cut's backtest took 19 min alone, 16 of them with model_no_text reused; three
#: cuts side by side took 51 to 59 min each, the replay 4 to 5 min of it).
STAGES = (("train model", 780.0), ("train model_no_text", 180.0), ("replay the future", 180.0))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the temporal backtest on MovieLens-100k."""
    parser = argparse.ArgumentParser(prog="python -m stream backtest", description=__doc__)
    parser.add_argument("--datasets-dir", default=data.DataSettings.from_env().datasets_dir)
    parser.add_argument("--cut-share", type=float, default=0.7)
    parser.add_argument("--popular-days", type=float, default=7.0)
    parser.add_argument("--work", default=".cache/backtest", help="trained models go here")
    parser.add_argument("--out", default="reports/backtest")
    parser.add_argument("--tiny", action="store_true", help="tiny models (tests, smoke runs)")
    args = parser.parse_args(argv)
    events = data.movielens_events(args.datasets_dir)
    catalogue = data.movielens_catalogue(args.datasets_dir)
    cut_ts = cut_time(events, args.cut_share)
    past = [e for e in events if e.ts < cut_ts]
    seen_before = {e.item_id for e in past}
    trained = [i for i in catalogue if i.item_id in seen_before]
    work = Path(args.work)
    stages = Stages("backtest", STAGES)
    scorers = {}
    for name, use_text in (("model", True), ("model_no_text", False)):
        with stages.stage(f"train {name}"):
            model_dir = train_model(
                past, trained, work / name, cut_ts, use_text=use_text, tiny=args.tiny
            )
        scorers[name] = Scorer(model_dir, provider="cpu", top_k=K, exclude="seen")
    with stages.stage("replay the future"):
        replay = replay_future(events, catalogue, cut_ts, scorers, args)
    summary = summarise(replay, cut_ts)
    notes = {
        "cut": f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(cut_ts / 1000))} UTC "
        f"({args.cut_share:.0%} of the ratings before it)",
        "trained on": f"{len(past)} events before the cut, {len(trained)} items seen then",
        "scored": f"{len(replay.scored)} clicks after the cut; "
        f"{replay.published_after_cut} items first seen after it",
        "popular_recent": f"clicks of the last {args.popular_days:g} days, updated online",
        "model, model_no_text": "trained before the cut; items first seen after it get the "
        "worker's click feedback, counted online from the stream (a list sees the clicks "
        "before it only)",
        "itemknn": "co-occurrence of the clicks before the cut (not updated)",
        "text_frozen": "pretrained all-MiniLM-L6-v2, no fine-tuning; recent items' texts",
        "nothing after the cut": "was used to train, tune or fit any method before the "
        "replay; the online methods (popular_recent, the models' click feedback) learn from "
        "each click once the lists made before it are scored",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(summary, notes))
    (out / "report.json").write_bytes(
        orjson.dumps({"notes": notes, **summary}, option=orjson.OPT_INDENT_2)
    )
    plot(summary, out / "hr_at_10.png")
    print(markdown(summary, notes), file=sys.stderr)
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
