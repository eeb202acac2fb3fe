"""``python -m stream search-eval`` (``make search-eval``): what a search shows.

Two stages, each query family generated from the items' texts by
:mod:`model_export.data.search_queries` (the exact title, the title as said, without year or
article, its first words, a typo, lower case; descriptive "90s crime thriller" queries):

1. **The encoders alone** (:func:`evaluate`): for every item of the model directory, one
   query per family ranked against every item's text by three methods: ``model`` (the
   search part of the exported query encoder, which is also the item tower's: the text
   vectors the ranker's search term compares, by cosine), ``minilm`` (all-MiniLM-L6-v2 as
   packaged, no fine-tuning, by cosine) and ``bm25`` (BM25 over the items' words, k1 1.5,
   b 0.75). Intervals: one query per item, items are the clusters.
2. **The list path** (:mod:`stream.tools.search_eval.lists`): for held-out clicks, the query for
   the clicked item is issued as a search event and the user's list follows, through the
   worker's scorer; methods ``model``, ``model_no_search`` (the query term off), ``minilm``
   and ``bm25`` (history-free, same exclusions). Leave-one-out: each user's last click,
   scored by ``--model`` (the served model, trained on the whole log: the click's
   item was trained on, its query families too unless the item is held out). Temporal:
   each user's first click after the backtest's cut (``--cut-share``), scored by the model
   ``python -m stream backtest`` trains on the events before it (reused from ``--work``,
   trained there if missing, about five minutes), items first seen after the cut served as
   live-catalogue items (``cold``). Intervals clustered by user.

Title families report HR@1, HR@10 and MRR of the searched item; descriptive queries NDCG@10
with graded relevance (2: that decade and every genre named; 1: the genres, another decade).
The items whose queries training never saw (:func:`model_export.data.search_queries.held_out`,
``search_held_out`` of the training configuration) are reported apart in the first stage.
One JSON object on the last line; ``--out`` also gets ``search-eval.json``,
``search-eval.md`` and ``search-eval.png``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from model_export.data.search_queries import (  # noqa: E402
    TITLE_FAMILIES,
    ItemText,
    descriptive_query,
    held_out,
    title_queries,
)
from stream.contracts.manifest import load_manifest  # noqa: E402
from stream.model.scorer import Scorer  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.state.context import ContextLimits  # noqa: E402
from stream.tools.replay.metrics import mean_ci95  # noqa: E402
from stream.tools.search_eval.lists import (  # noqa: E402
    TextScores,
    evaluate_lists,
    loo_cases,
    temporal_cases,
)

METHODS = ("model", "minilm", "bm25")
#: One colour per method in every panel of the plot.
COLORS = {"model": "C0", "model_no_search": "C1", "minilm": "C2", "bm25": "C3"}
#: Texts to vectors, one method each (rows need not be unit length).
Embed = Callable[[Sequence[str]], np.ndarray]


def ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among its row's scores (ties count against it)."""
    target = scores[np.arange(len(targets)), targets]
    return (scores >= target[:, None]).sum(axis=1) - 1


def cosine(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``[Q, N]`` cosine similarities."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    return np.asarray(q @ d.T, dtype=np.float32)


def words(text: str) -> list[str]:
    """Lower-case word tokens."""
    return re.findall(r"\w+", text.lower())


def bm25(
    queries: Sequence[str], docs: Sequence[str], k1: float = 1.5, b: float = 0.75
) -> np.ndarray:
    """``[Q, N]`` BM25 scores of each query against each document."""
    tokenised = [Counter(words(d)) for d in docs]
    lengths = np.array([sum(c.values()) for c in tokenised], dtype=np.float32)
    average = float(lengths.mean()) if len(docs) else 1.0
    vocabulary: dict[str, int] = {}
    for counts in tokenised:
        for word in counts:
            vocabulary.setdefault(word, len(vocabulary))
    tf = np.zeros((len(docs), len(vocabulary)), dtype=np.float32)
    for row, counts in enumerate(tokenised):
        for word, n in counts.items():
            tf[row, vocabulary[word]] = n
    df = (tf > 0).sum(axis=0)
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5)).astype(np.float32)
    norm = k1 * (1 - b + b * lengths / average)
    weight = tf * (k1 + 1) / (tf + norm[:, None]) * idf[None, :]
    scores = np.zeros((len(queries), len(docs)), dtype=np.float32)
    for row, query in enumerate(queries):
        columns = [vocabulary[w] for w in words(query) if w in vocabulary]
        if columns:
            scores[row] = weight[:, columns].sum(axis=1)
    return scores


def minilm_embed() -> Embed:
    """Frozen all-MiniLM-L6-v2 (as packaged, no fine-tuning)."""
    from model_export.model.text import TextEncoder, embed, text_tokenizer

    encoder, tokenizer = TextEncoder.from_pretrained(), text_tokenizer()
    return lambda texts: embed(encoder, tokenizer, list(texts))


def model_embed(model_dir: str) -> Embed:
    """The search part of the model directory's query encoder (its item tower's too)."""
    scorer = Scorer.from_settings(Settings(model_dir=model_dir, query_precision="fp32"))
    manifest = scorer.manifest
    start = manifest.query_dim - manifest.search_dim if manifest.search_dim else 0
    return lambda texts: scorer.embed_texts(list(texts))[:, start:]


def summary(values: np.ndarray) -> dict[str, float]:
    """Mean and 95% interval, one value per item."""
    mean, low, high = mean_ci95(values.astype(np.float64), np.arange(len(values)))
    return {"mean": mean, "low": low, "high": high}


def ndcg_at_10(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """NDCG@10 of each row's ranking by ``scores`` against graded ``relevance``."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    discount = 1.0 / np.log2(np.arange(2, 12))
    gains = (2.0 ** np.take_along_axis(relevance, top, axis=1) - 1) @ discount
    ideal = (2.0 ** -np.sort(-relevance, axis=1)[:, :10] - 1) @ discount
    return np.where(ideal > 0, gains / np.maximum(ideal, 1e-12), 0.0)


def descriptive_relevance(texts: Sequence[str], seed: int) -> tuple[list[str], np.ndarray]:
    """Descriptive queries (one per item that has a year and a genre) and ``[Q, N]`` grades."""
    parsed = [ItemText.parse(t) for t in texts]
    decades = np.array([p.year // 10 * 10 if p.year else -1 for p in parsed])
    genres = sorted({g for p in parsed for g in p.genres})
    has = np.array([[g in p.genres for g in genres] for p in parsed], dtype=bool)
    queries, grades = [], []
    for text in texts:
        query = descriptive_query(text, seed)
        if query is None:
            continue
        named = [genres.index(g) for g in query.genres]
        holds = has[:, named].all(axis=1)
        grades.append(np.where(holds, 1 + (decades == query.decade), 0))
        queries.append(query.text)
    return queries, np.array(grades, dtype=np.float64)


def evaluate(
    texts: Sequence[str],
    embeds: dict[str, Embed],
    seed: int = 0,
    held_out: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every family by every method (``embeds``; ``bm25`` needs none).

    ``held_out`` (bool per item): the items whose queries training never saw, whose title
    families are reported apart as well (``held_out_hr_at_1``, ``held_out_hr_at_10``).
    """
    items = {method: embed(texts) for method, embed in embeds.items()}

    def scores(method: str, queries: list[str]) -> np.ndarray:
        if method == "bm25":
            return bm25(queries, texts)
        return cosine(embeds[method](queries), items[method])

    methods = (*embeds, "bm25")
    targets = np.arange(len(texts))
    per_item = [title_queries(text, seed) for text in texts]
    report: dict[str, Any] = {"items": len(texts), "seed": seed, "families": {}}
    for family in TITLE_FAMILIES:
        queries = [queries_of[family] for queries_of in per_item]
        report["families"][family] = {"example": queries[0], "methods": {}}
        for method in methods:
            rank = ranks(scores(method, queries), targets)
            metrics = {
                "hr_at_1": summary((rank == 0).astype(float)),
                "hr_at_10": summary((rank < 10).astype(float)),
                "mrr": summary(1.0 / (rank + 1)),
            }
            if held_out is not None and held_out.any():
                metrics["held_out_hr_at_1"] = summary((rank[held_out] == 0).astype(float))
                metrics["held_out_hr_at_10"] = summary((rank[held_out] < 10).astype(float))
            report["families"][family]["methods"][method] = metrics
    queries, relevance = descriptive_relevance(texts, seed)
    report["descriptive"] = {"queries": len(queries), "example": queries[0], "methods": {}}
    for method in methods:
        ndcg = ndcg_at_10(scores(method, queries), relevance)
        report["descriptive"]["methods"][method] = {"ndcg_at_10": summary(ndcg)}
    return report


def rank_cell(metrics: dict[str, Any]) -> str:
    """``HR@1 / HR@10 [interval] / MRR`` of one method on one family."""
    hr10 = metrics["hr_at_10"]
    return (
        f"{metrics['hr_at_1']['mean']:.3f} / {hr10['mean']:.3f} "
        f"[{hr10['low']:.3f}, {hr10['high']:.3f}] / {metrics['mrr']['mean']:.3f}"
    )


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    methods = list(next(iter(report["families"].values()))["methods"])
    lines = [
        f"# Search, the encoders alone ({report['items']} items, seed {report['seed']})",
        "",
        "HR@1 / HR@10 / MRR of the queried item, 95% intervals in brackets for HR@10.",
        "",
        "| family | example | " + " | ".join(methods) + " |",
        "| --- | --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for family, body in report["families"].items():
        cells = [rank_cell(body["methods"][method]) for method in methods]
        lines.append(f"| {family} | `{body['example']}` | " + " | ".join(cells) + " |")
    d = report["descriptive"]
    lines += [
        "",
        f"Descriptive queries ({d['queries']}, e.g. `{d['example']}`): NDCG@10, graded relevance.",
        "",
        "| method | NDCG@10 [95%] |",
        "| --- | --- |",
    ]
    for method, m in d["methods"].items():
        n = m["ndcg_at_10"]
        lines.append(f"| {method} | {n['mean']:.3f} [{n['low']:.3f}, {n['high']:.3f}] |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """HR@10 by family and method: the encoders alone, then each list path."""
    stages = [("encoders alone", report), *report.get("lists", {}).items()]
    figure, panels = plt.subplots(len(stages), 1, figsize=(9, 3.2 * len(stages)), squeeze=False)
    for axes, (name, stage) in zip(panels[:, 0], stages, strict=True):
        families = list(stage["families"])
        methods = list(stage["families"][families[0]]["methods"])
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            values = [stage["families"][f]["methods"][method]["hr_at_10"]["mean"] for f in families]
            color = COLORS.get(method)
            axes.bar(np.arange(len(families)) + i * width, values, width, label=method, color=color)
        axes.set_xticks(np.arange(len(families)) + width * (len(methods) - 1) / 2, families)
        axes.set_ylabel("HR@10")
        axes.set_title(name if name == "encoders alone" else f"the list after a search: {name}")
        axes.set_ylim(0, 1)
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def list_markdown(name: str, report: dict[str, Any]) -> str:
    """One list-path report (leave-one-out or temporal) as Markdown tables."""
    methods = list(next(iter(report["families"].values()))["methods"])
    cold = f", {report['cold']} on items first seen after the cut" if report["cold"] else ""
    lines = [
        f"## The list after a search: {name} ({report['cases']} users{cold})",
        "",
        "HR@1 / HR@10 [95%, clustered by user] / MRR of the searched item in the list.",
        "",
        "| family | " + " | ".join(methods) + " |",
        "| --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for family, body in report["families"].items():
        cells = []
        for method in methods:
            m = body["methods"][method]
            cell = rank_cell(m)
            if "cold_hr_at_1" in m:
                cold_1, cold_10 = m["cold_hr_at_1"]["mean"], m["cold_hr_at_10"]["mean"]
                cell += f" (cold {cold_1:.3f} / {cold_10:.3f})"
            cells.append(cell)
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    d = report["descriptive"]
    lines += ["", f"Descriptive ({d['queries']}, e.g. `{d['example']}`), NDCG@10 [95%]: "]
    lines[-1] += ", ".join(
        f"{method} {m['ndcg_at_10']['mean']:.3f} "
        f"[{m['ndcg_at_10']['low']:.3f}, {m['ndcg_at_10']['high']:.3f}]"
        for method, m in d["methods"].items()
    )
    return "\n".join(lines) + "\n"


def text_methods(item_texts: Sequence[str], minilm: Embed | None) -> dict[str, TextScores]:
    """The history-free list methods over ``item_texts`` (an item set's order)."""
    methods: dict[str, TextScores] = {}
    if minilm is not None:
        vectors = minilm(item_texts)
        methods["minilm"] = lambda queries: cosine(minilm(queries), vectors)
    methods["bm25"] = lambda queries: bm25(queries, item_texts)
    return methods


def list_stage(args: argparse.Namespace, minilm: Embed | None) -> dict[str, Any]:
    """The list path: leave-one-out on ``--model``, temporal on the backtest's cut model."""
    from model_export.data import sources as data
    from stream.catalogue.items import Catalogue
    from stream.contracts.records import CatalogueRecord
    from stream.tools.backtest.cli import cut_time, train_model

    events = data.movielens_events(args.datasets_dir)
    catalogue = data.movielens_catalogue(args.datasets_dir)
    texts = {i.item_id: i.text for i in catalogue}
    limits = ContextLimits.from_settings(Settings(exclude="seen"))
    scorer = Scorer(args.model, provider="cpu", exclude="seen")
    served = set(scorer.manifest.items)
    item_texts = [texts[i] for i in scorer.items.ids[1:]]
    out: dict[str, Any] = {}
    print("list path, leave-one-out", file=sys.stderr)
    out["loo"] = evaluate_lists(
        loo_cases(events, served, limits),
        scorer,
        texts,
        text_methods(item_texts, minilm),
        limits,
        args.seed,
    )
    if args.no_temporal:
        return out
    cut_ts = cut_time(events, args.cut_share)
    past = [e for e in events if e.ts < cut_ts]
    seen_before = {e.item_id for e in past}
    trained = [i for i in catalogue if i.item_id in seen_before]
    print(f"list path, temporal (cut share {args.cut_share})", file=sys.stderr)
    model_dir = train_model(
        past, trained, Path(args.work) / "model", cut_ts, use_text=True, tiny=args.tiny
    )
    future = Scorer(model_dir, provider="cpu", exclude="seen")
    first_seen: dict[str, int] = {}
    for event in events:
        if event.item_id is not None:
            first_seen.setdefault(event.item_id, event.ts)  # events come in time order
    live = Catalogue()  # items first seen after the cut: live-catalogue items, added then
    live.apply(
        [CatalogueRecord(i.item_id, i.text, ts=first_seen.get(i.item_id, 0)) for i in catalogue]
    )
    future.follow(live)
    item_texts = [texts[i] for i in future.items.ids[1:]]
    out["temporal"] = evaluate_lists(
        temporal_cases(events, set(texts), cut_ts, limits),
        future,
        texts,
        text_methods(item_texts, minilm),
        limits,
        args.seed,
    )
    out["temporal"]["cut_share"] = args.cut_share
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run both stages over a model directory's items; JSON on the last line."""
    import orjson

    from model_export.data import sources as data

    parser = argparse.ArgumentParser(prog="python -m stream search-eval", description=__doc__)
    parser.add_argument("--model", default=Settings.from_env().model_dir, help="model directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated queries")
    parser.add_argument("--no-minilm", action="store_true", help="skip frozen MiniLM")
    parser.add_argument("--no-lists", action="store_true", help="the encoders alone")
    parser.add_argument("--no-temporal", action="store_true", help="no temporal list path")
    parser.add_argument("--cut-share", type=float, default=0.7, help="the backtest's cut")
    parser.add_argument("--work", default=".cache/backtest", help="the backtest's models")
    parser.add_argument("--datasets-dir", default=data.DataSettings.from_env().datasets_dir)
    parser.add_argument("--tiny", action="store_true", help="a tiny temporal model (tests)")
    parser.add_argument("--out", help="also write search-eval.{json,md,png} here")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.model, verify_hash=False)
    texts = list(manifest.item_texts)
    share = float(manifest.training.get("train_config", {}).get("search_held_out", 0.0))
    held = np.array([held_out(i, share) for i in manifest.items]) if share else None
    embeds = {"model": model_embed(args.model)}
    minilm = None if args.no_minilm else minilm_embed()
    if minilm is not None:
        embeds["minilm"] = minilm
    report = evaluate(texts, embeds, args.seed, held)
    report["held_out_items"] = int(held.sum()) if held is not None else 0
    if not args.no_lists:
        report["lists"] = list_stage(args, minilm)
    text = markdown(report) + "".join(
        "\n" + list_markdown(name, body) for name, body in report.get("lists", {}).items()
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "search-eval.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        (out / "search-eval.md").write_text(text)
        plot(report, out / "search-eval.png")
    print(text, file=sys.stderr)
    print(orjson.dumps(report).decode())
    return 0 if all(math.isfinite(v) for v in _means(report)) else 1


def _means(report: dict[str, Any]) -> list[float]:
    bodies = [*report["families"].values(), report["descriptive"]]
    for stage in report.get("lists", {}).values():
        bodies += [*stage["families"].values(), stage["descriptive"]]
    return [
        metric["mean"]
        for body in bodies
        for method in body["methods"].values()
        for metric in method.values()
    ]
