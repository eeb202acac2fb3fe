"""``python -m stream search-eval``: how well each family of search queries finds its item.

The first stage of issue 28's search benchmark: the encoders alone, before any list. For
every item of a model directory, one query per family (:mod:`model_export.search_queries`:
the exact title, the title as said, without year or article, its first words, a typo, lower
case) is ranked against every item's text by three methods:

* ``model``: the model's own query encoder (the exported, fine-tuned projection), which is
  also the text part of its item tower (:meth:`stream.scorer.Scorer.embed_texts`), by cosine;
* ``minilm``: all-MiniLM-L6-v2 as packaged, without fine-tuning, by cosine;
* ``bm25``: BM25 over the items' words (k1 1.5, b 0.75).

Title families report HR@1, HR@10 and MRR of the queried item; descriptive queries
("90s crime thriller") report NDCG@10 with graded relevance (2: that decade and every genre
named; 1: the genres, another decade). Intervals are 95%, one query per item (items are the
clusters). The list path (a search event followed by the user's list) comes with the query
term in the exported graph. One JSON object on the last line; ``--out`` also gets
``search-eval.json``, ``search-eval.md`` and ``search-eval.png``.
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

from model_export.search_queries import (  # noqa: E402
    TITLE_FAMILIES,
    ItemText,
    descriptive_query,
    title_queries,
)
from stream.manifest import load_manifest  # noqa: E402
from stream.scorer import Scorer  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.tools.backtest import mean_ci95  # noqa: E402

METHODS = ("model", "minilm", "bm25")
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
    from model_export.text import TextEncoder, embed, text_tokenizer

    encoder, tokenizer = TextEncoder.from_pretrained(), text_tokenizer()
    return lambda texts: embed(encoder, tokenizer, list(texts))


def model_embed(model_dir: str) -> Embed:
    """The model directory's query encoder (the text part of its item tower)."""
    scorer = Scorer.from_settings(Settings(model_dir=model_dir, query_precision="fp32"))
    return lambda texts: scorer.embed_texts(list(texts))


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


def evaluate(texts: Sequence[str], embeds: dict[str, Embed], seed: int = 0) -> dict[str, Any]:
    """Every family by every method (``embeds``; ``bm25`` needs none)."""
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
            report["families"][family]["methods"][method] = {
                "hr_at_1": summary((rank == 0).astype(float)),
                "hr_at_10": summary((rank < 10).astype(float)),
                "mrr": summary(1.0 / (rank + 1)),
            }
    queries, relevance = descriptive_relevance(texts, seed)
    report["descriptive"] = {"queries": len(queries), "example": queries[0], "methods": {}}
    for method in methods:
        ndcg = ndcg_at_10(scores(method, queries), relevance)
        report["descriptive"]["methods"][method] = {"ndcg_at_10": summary(ndcg)}
    return report


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
        cells = []
        for method in methods:
            m = body["methods"][method]
            hr10 = m["hr_at_10"]
            cells.append(
                f"{m['hr_at_1']['mean']:.3f} / {hr10['mean']:.3f} "
                f"[{hr10['low']:.3f}, {hr10['high']:.3f}] / {m['mrr']['mean']:.3f}"
            )
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
    """HR@10 by family and method."""
    families = list(report["families"])
    methods = list(report["families"][families[0]]["methods"])
    figure, axes = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [report["families"][f]["methods"][method]["hr_at_10"]["mean"] for f in families]
        axes.bar(np.arange(len(families)) + i * width, values, width, label=method)
    axes.set_xticks(np.arange(len(families)) + width * (len(methods) - 1) / 2, families)
    axes.set_ylabel("HR@10 of the queried item")
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation over a model directory's items; JSON on the last line."""
    import orjson

    parser = argparse.ArgumentParser(prog="python -m stream search-eval", description=__doc__)
    parser.add_argument("--model", default=Settings.from_env().model_dir, help="model directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated queries")
    parser.add_argument("--no-minilm", action="store_true", help="skip frozen MiniLM")
    parser.add_argument("--out", help="also write search-eval.{json,md,png} here")
    args = parser.parse_args(argv)
    texts = list(load_manifest(args.model, verify_hash=False).item_texts)
    embeds = {"model": model_embed(args.model)}
    if not args.no_minilm:
        embeds["minilm"] = minilm_embed()
    report = evaluate(texts, embeds, args.seed)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "search-eval.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        (out / "search-eval.md").write_text(markdown(report))
        plot(report, out / "search-eval.png")
    print(markdown(report), file=sys.stderr)
    print(orjson.dumps(report).decode())
    return 0 if all(math.isfinite(v) for v in _means(report)) else 1


def _means(report: dict[str, Any]) -> list[float]:
    return [
        metric["mean"]
        for body in [*report["families"].values(), report["descriptive"]]
        for method in body["methods"].values()
        for metric in method.values()
    ]
