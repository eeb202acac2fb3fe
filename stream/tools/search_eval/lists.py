"""The search benchmark's list path: a search event, then the list the user is shown.

For held-out clicks (:func:`loo_cases`: each user's last click, the leave-one-out test
target; :func:`temporal_cases`: each user's first click after the temporal backtest's cut,
items first seen after it included), one query per family names the clicked item
(:mod:`model_export.data.search_queries`). The query goes at the end of the user's context as a
search event (:func:`stream.serving.search.searched_context`, what ``/search/`` and a shop's search
event do) and every method ranks the catalogue for that context, the user's exclusions
applied:

* ``model``: the worker's scorer, its search term included (:meth:`Scorer.score`);
* ``model_no_search``: the same graph with the search part of the query vectors zeroed, so
  the search only feeds the transformer as before this term existed;
* ``minilm``: the query against the items' texts by frozen all-MiniLM-L6-v2, no history;
* ``bm25``: BM25 over the items' texts, no history.

Title families count the clicked item's rank (HR@1, HR@10, MRR; a list holds the model's
``max_k`` items, an item past it counts as missed); descriptive queries ("90s crime
thriller") the list's NDCG@10 with graded relevance. Intervals are 95%, clustered by user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_export.data.search_queries import (
    TITLE_FAMILIES,
    ItemText,
    descriptive_query,
    relevance,
    title_queries,
)
from stream.contracts.records import Event
from stream.model.scorer import Scorer
from stream.serving.search import searched_context
from stream.state.context import ContextLimits, UserContext
from stream.tools.replay.metrics import mean_ci95

LIST_METHODS = ("model", "model_no_search", "minilm", "bm25")
#: ``[Q, N]`` scores of queries against item texts (BM25, MiniLM cosine).
TextScores = Callable[[Sequence[str]], np.ndarray]
BATCH = 256
#: The rank of an item no list held (past every list's ``max_k``): a miss, no reciprocal rank.
MISSED = 10**6


@dataclass(frozen=True)
class Case:
    """One held-out click: the user's context before it, the item, whether it was new."""

    user_id: str
    context: UserContext
    item_id: str
    ts: int
    cold: bool = False


def _contexts(
    events: Sequence[Event], limits: ContextLimits
) -> dict[str, list[tuple[Event, UserContext]]]:
    """Per user, each event with the context just before it (time order)."""
    out: dict[str, list[tuple[Event, UserContext]]] = {}
    current: dict[str, UserContext] = {}
    for event in sorted(events, key=lambda e: e.ts):
        before = current.get(event.user_id, UserContext())
        out.setdefault(event.user_id, []).append((event, before))
        current[event.user_id], _ = limits.apply(before, event)
    return out


def loo_cases(events: Sequence[Event], items: set[str], limits: ContextLimits) -> list[Case]:
    """Each user's last click on a catalogue item, with everything before it."""
    cases = []
    for user, steps in _contexts(events, limits).items():
        clicks = [(e, c) for e, c in steps if e.type == "click" and e.item_id in items]
        if len(clicks) >= 2:
            event, context = clicks[-1]
            assert event.item_id is not None
            cases.append(Case(user, context, event.item_id, event.ts))
    return cases


def temporal_cases(
    events: Sequence[Event], items: set[str], cut_ts: int, limits: ContextLimits
) -> list[Case]:
    """Each user's first click after ``cut_ts`` on a catalogue item (cold: first seen then)."""
    first_seen: dict[str, int] = {}
    for event in events:
        if event.item_id is not None:
            first_seen[event.item_id] = min(first_seen.get(event.item_id, event.ts), event.ts)
    cases = []
    for user, steps in _contexts(events, limits).items():
        after = [
            (e, c) for e, c in steps if e.ts >= cut_ts and e.type == "click" and e.item_id in items
        ]
        if after:
            event, context = after[0]
            assert event.item_id is not None
            cold = first_seen[event.item_id] >= cut_ts
            cases.append(Case(user, context, event.item_id, event.ts, cold))
    return cases


def model_lists(
    scorer: Scorer, contexts: Sequence[UserContext], *, search_term: bool = True
) -> list[list[str]]:
    """Each context's list of the model's ``max_k`` items, through the worker's scorer."""
    top_k = scorer.manifest.max_k
    lists: list[list[str]] = []
    for start in range(0, len(contexts), BATCH):
        batch = contexts[start : start + BATCH]
        if search_term:
            ranked = scorer.score(batch, top_k)
        else:
            inputs = scorer.encode(batch)
            manifest = scorer.manifest
            inputs["query_table"][:, manifest.query_dim - manifest.search_dim :] = 0.0
            scores, indices, _ = scorer.run(inputs)
            ranked = scorer.decode(scores, indices, top_k=top_k)
        lists += [[item for item, _ in r] for r in ranked]
    return lists


def text_lists(
    scores: np.ndarray, contexts: Sequence[UserContext], ids: Sequence[str], scorer: Scorer, k: int
) -> list[list[str]]:
    """Each row's ``k`` best items by ``scores`` ``[Q, N]``.

    The context's exclusions and the scorer's blocked items are left out, as the model's lists
    leave them out.
    """
    column = {item: n for n, item in enumerate(ids)}
    blocked = {scorer.items.ids[i] for i in scorer.items.blocked.tolist() if i}
    lists = []
    for row, context in zip(scores, contexts, strict=True):
        row = row.copy()
        for item in {*context.excluded_items(scorer.exclude), *blocked}:
            if item in column:
                row[column[item]] = -np.inf
        top = np.argsort(-row, kind="stable")[:k]
        lists.append([ids[n] for n in top if np.isfinite(row[n])])
    return lists


def _rank(listed: Sequence[str], item: str) -> int:
    """0-based position of ``item`` in ``listed``, or :data:`MISSED` when it is not there."""
    try:
        return listed.index(item)
    except ValueError:
        return MISSED


def _summary(values: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    mean, low, high = mean_ci95(values.astype(np.float64), clusters)
    return {"mean": mean, "low": low, "high": high}


def _ndcg(listed: Sequence[int], grades: Sequence[int]) -> float:
    """NDCG@10 of a list's grades (best first) against the best order of ``grades``."""
    discount = 1.0 / np.log2(np.arange(2, 12))
    gains = np.array([2.0**g - 1 for g in listed[:10]])
    best = np.array([2.0**g - 1 for g in sorted(grades, reverse=True)[:10]])
    top = float(best @ discount[: len(best)])
    return float(gains @ discount[: len(gains)]) / top if top > 0 else 0.0


def evaluate_lists(
    cases: Sequence[Case],
    scorer: Scorer,
    texts: dict[str, str],
    text_scores: dict[str, TextScores],
    limits: ContextLimits,
    seed: int = 0,
) -> dict[str, Any]:
    """Every family by every method over ``cases``.

    ``text_scores`` are the history-free methods: queries against the texts of ``scorer``'s
    items, in its item order.
    """
    ids = list(scorer.items.ids[1:])
    clusters = np.arange(len(cases))  # one case per user: the user is the cluster
    k = scorer.manifest.max_k
    report: dict[str, Any] = {"cases": len(cases), "cold": sum(c.cold for c in cases)}
    per_case = [title_queries(texts[c.item_id], seed) for c in cases]
    families: dict[str, Any] = {}
    for family in TITLE_FAMILIES:
        queries = [q[family] for q in per_case]
        ranked = _lists(cases, queries, scorer, text_scores, limits, k)
        families[family] = {"example": queries[0], "methods": {}}
        for method, lists in ranked.items():
            rank = np.array([_rank(lst, c.item_id) for lst, c in zip(lists, cases, strict=True)])
            families[family]["methods"][method] = _rank_metrics(rank, clusters, cases)
    report["families"] = families
    described = [(c, descriptive_query(texts[c.item_id], seed)) for c in cases]
    kept = [(c, d) for c, d in described if d is not None]
    queries = [d.text for _, d in kept]
    ranked = _lists([c for c, _ in kept], queries, scorer, text_scores, limits, k)
    parsed = {item: ItemText.parse(texts[item]) for item in ids}
    methods = {}
    for method, lists in ranked.items():
        values = []
        for (case, query), listed in zip(kept, lists, strict=True):
            grade = {item: relevance(query, p) for item, p in parsed.items()}
            for item in case.context.excluded_items(scorer.exclude):
                grade.pop(item, None)  # never listable, so not in the ideal list either
            values.append(_ndcg([grade.get(i, 0) for i in listed], list(grade.values())))
        methods[method] = {"ndcg_at_10": _summary(np.array(values), np.arange(len(values)))}
    report["descriptive"] = {"queries": len(kept), "example": queries[0], "methods": methods}
    return report


def _rank_metrics(rank: np.ndarray, clusters: np.ndarray, cases: Sequence[Case]) -> dict[str, Any]:
    hit1, hit10 = (rank == 0).astype(float), (rank < 10).astype(float)
    reciprocal = np.where(rank < MISSED, 1.0 / (rank + 1), 0.0)
    metrics: dict[str, Any] = {
        "hr_at_1": _summary(hit1, clusters),
        "hr_at_10": _summary(hit10, clusters),
        "mrr": _summary(reciprocal, clusters),
    }
    cold = np.array([c.cold for c in cases])
    if cold.any():
        metrics["cold_hr_at_1"] = _summary(hit1[cold], clusters[cold])
        metrics["cold_hr_at_10"] = _summary(hit10[cold], clusters[cold])
    return metrics


def _lists(
    cases: Sequence[Case],
    queries: Sequence[str],
    scorer: Scorer,
    text_scores: dict[str, TextScores],
    limits: ContextLimits,
    k: int,
) -> dict[str, list[list[str]]]:
    """Each method's list for each case after its query (the model's at the click's time)."""
    contexts = [c.context for c in cases]
    searched = [
        searched_context(c.context, q, max(c.ts - 1, 0), limits)
        for c, q in zip(cases, queries, strict=True)
    ]
    ids = list(scorer.items.ids[1:])
    out = {
        "model": model_lists(scorer, searched),
        "model_no_search": model_lists(scorer, searched, search_term=False),
    }
    for method, scores in text_scores.items():
        out[method] = text_lists(scores(queries), contexts, ids, scorer, k)
    return out
