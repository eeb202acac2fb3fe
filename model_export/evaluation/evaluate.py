"""Offline evaluation on the test split: the model, its ablation and baselines, several seeds.

Protocol (docs/model.md, "Evaluation"): leave-one-out in time order
(:mod:`model_export.data.split`), full ranking over every catalogue item, the user's earlier items
excluded under the shared exclusion policy (``seen`` for MovieLens). Metrics at K=10: HR, NDCG, MRR
and catalogue coverage. Every method is scored by :func:`model_export.ranking.top_k` and
:func:`model_export.ranking.ranking_metrics` on the same examples.

Diversity: the model's lists are also re-ranked by :func:`stream.model.diversity.rerank` (the
worker's code) at several weights, reporting HR/NDCG@10 with intra-list diversity measured
on the model's item vectors and, where item texts carry tags after ``" | "`` (MovieLens
genres), on those tags.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from model_export.data.split import EvalExamples, Split
from model_export.evaluation.baselines import ItemKNNConfig, itemknn, most_popular, tune_itemknn
from model_export.model.ranker import RankerConfig
from model_export.model.text import embed
from model_export.ranking import intra_list_diversity, masked_scores, ranking_metrics, top_k
from model_export.training.train import QUERY_SEPARATOR, TrainConfig, TrainedModel, predict, train
from stream.model.diversity import rerank, unit_rows
from stream.model.scorer import Scorer, exclude_matrix
from stream.progress import Stages
from stream.settings import ExcludePolicy

K = 10
METRICS = (f"hr@{K}", f"ndcg@{K}", f"mrr@{K}", f"coverage@{K}")
MODEL = "model"
NO_TEXT = "model without MiniLM"
#: Diversity weights (``STREAMREC_DIVERSITY``) measured on the model's test lists.
DIVERSITY_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
DIVERSITY_METRICS = (f"hr@{K}", f"ndcg@{K}", f"ild@{K}", f"tag_ild@{K}")


def test_scores(trained: TrainedModel, split: Split, examples: EvalExamples) -> np.ndarray:
    """The trained model's unmasked test scores (queries encoded by its own encoder)."""
    query_text = torch.zeros(0, trained.ranker.config.text_dim)
    if trained.encoder is not None and trained.tokenizer is not None and split.queries:
        query_text = torch.from_numpy(embed(trained.encoder, trained.tokenizer, split.queries))
    return predict(trained.ranker, examples, query_text)


def evaluate_model_dir(
    split: Split, model_dir: str, exclude: ExcludePolicy, batch: int = 256
) -> dict[str, float]:
    """Test metrics of an exported model directory, scored by ONNX Runtime.

    The split must be built over the model's own vocabulary (``manifest.items``). Inputs
    come from the split's arrays, not from worker contexts, and go through the worker's
    :class:`~stream.model.scorer.Scorer` session and list decoding; ``python -m stream replay
    --final-only`` must give the same figures (a test holds them to 1e-6).
    """
    scorer = Scorer(model_dir, provider="cpu", top_k=K, exclude=exclude)
    manifest = scorer.manifest
    examples = split.examples("test", manifest.history_length, exclude)
    vectors = (
        scorer.queries.encode(list(split.queries))
        if scorer.queries is not None and split.queries
        else {}
    )
    # Row 0 zeros, then every query of the split in its index order (shared by all batches).
    query_table = np.zeros((len(split.queries) + 1, manifest.query_dim), dtype=np.float32)
    for row, query in enumerate(split.queries, start=1):
        query_table[row] = vectors[query]
    top = np.zeros((len(examples.targets), K), dtype=np.int64)
    for start in range(0, len(examples.targets), batch):
        rows = slice(start, start + batch)
        scores, indices, _ = scorer.run(
            {
                "item_ids": examples.item_ids[rows],
                "event_types": examples.event_types[rows],
                "query_ids": examples.query_ids[rows] + 1,  # -1 (none) is row 0
                "query_table": query_table,
                "extra_items": scorer.items.extra,
                "extra_bias": np.zeros(scorer.items.num_extra, dtype=np.float32),
                "blocked_ids": scorer.items.blocked,
                "item_added": scorer.items.added_days,
                "user_days": examples.days[rows].astype(np.float32),
                # only the search term reads the ages, and these logs hold no searches
                "event_ages": np.zeros(examples.item_ids[rows].shape, dtype=np.float32),
                "exclude_ids": exclude_matrix(examples.excluded[rows]),
            }
        )
        for r, ranked in enumerate(scorer.decode(scores, indices), start=start):
            top[r, : len(ranked)] = [scorer.item_index(item) for item, _ in ranked]
    return ranking_metrics(top, examples.targets, split.num_items)


def tag_vectors(texts: Sequence[str]) -> np.ndarray | None:
    """Unit multi-hot rows of the comma-separated tags after ``" | "`` (row 0: padding).

    ``None`` when no text has tags.
    """
    tags = [
        [t.strip() for t in text.split(QUERY_SEPARATOR, 1)[1].split(",") if t.strip()]
        if QUERY_SEPARATOR in text
        else []
        for text in texts
    ]
    names = sorted({t for item in tags for t in item})
    if not names:
        return None
    column = {name: i for i, name in enumerate(names)}
    hot = np.zeros((len(texts) + 1, len(names)), dtype=np.float32)
    for row, item in enumerate(tags, start=1):
        hot[row, [column[t] for t in item]] = 1.0
    return unit_rows(hot)


def diversity_metrics(
    scores: np.ndarray,
    examples: EvalExamples,
    item_vectors: np.ndarray,
    tags: np.ndarray | None,
    max_k: int,
) -> list[dict[str, float]]:
    """HR/NDCG@K and intra-list diversity of MMR-re-ranked lists at each weight."""
    masked = masked_scores(scores, examples.excluded)
    candidates = np.argsort(-masked, axis=1, kind="stable")[:, :max_k]
    candidate_scores = np.take_along_axis(masked, candidates, axis=1)
    valid = np.isfinite(candidate_scores)
    results = []
    for weight in DIVERSITY_WEIGHTS:
        _, top = rerank(candidate_scores, candidates, valid, item_vectors, K, weight)
        metrics = ranking_metrics(top, examples.targets, len(item_vectors) - 1)
        results.append(
            {
                "weight": weight,
                f"hr@{K}": metrics[f"hr@{K}"],
                f"ndcg@{K}": metrics[f"ndcg@{K}"],
                f"ild@{K}": intra_list_diversity(top, item_vectors),
                f"tag_ild@{K}": intra_list_diversity(top, tags) if tags is not None else 0.0,
            }
        )
    return results


def baseline_metrics(split: Split, exclude: ExcludePolicy) -> tuple[dict[str, Any], ItemKNNConfig]:
    """Most-popular and tuned ItemKNN on the test split (fit on everything before it)."""
    valid = split.examples("valid", 1, exclude)
    test = split.examples("test", 1, exclude)
    config, _ = tune_itemknn(split, valid, K)
    results = {}
    for name, scores in (
        ("most-popular", most_popular(split, "test", len(test.targets))),
        ("ItemKNN (recency-weighted co-occurrence)", itemknn(split, "test", test, config)),
    ):
        top = top_k(scores, test.excluded, K)
        results[name] = ranking_metrics(top, test.targets, split.num_items)
    return results, config


def _training_report(trained: TrainedModel) -> dict[str, Any]:
    """What one training run reports: its time, best epoch and validation figures."""
    return {key: trained.report[key] for key in ("seconds", "best_epoch", "valid")}


def _mean_and_std(results: Sequence[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Each metric's mean, standard deviation and runs over ``results``."""
    return {
        metric: {
            "mean": float(np.mean([r[metric] for r in results])),
            "std": float(np.std([r[metric] for r in results])),
            "runs": [r[metric] for r in results],
        }
        for metric in METRICS
    }


#: Seconds one training run takes on the reference box (2 cores; 2026-12-07: the model 15 to
#: 25 min, the model without MiniLM 3 to 5), per method.
STAGE_SECONDS = {MODEL: 1080.0, NO_TEXT: 220.0}


def evaluate(
    split: Split,
    texts: Sequence[str],
    model_config: RankerConfig,
    train_config: TrainConfig,
    seeds: Sequence[int],
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Every method's test metrics per seed, with mean and standard deviation."""
    started = time.perf_counter()
    baselines, knn_config = baseline_metrics(split, train_config.exclude)
    runs: dict[str, list[dict[str, float]]] = {name: [m] for name, m in baselines.items()}
    training: dict[str, list[dict[str, Any]]] = {MODEL: [], NO_TEXT: []}
    diversity: list[list[dict[str, float]]] = []
    tags = tag_vectors(texts)
    examples = split.examples("test", model_config.history_length, train_config.exclude)
    plan = [(f"{name}, seed {s}", STAGE_SECONDS[name]) for s in seeds for name in STAGE_SECONDS]
    stages = Stages("evaluate", plan)
    for seed in seeds:
        config = dataclasses.replace(train_config, seed=seed)
        for name, use_text in ((MODEL, True), (NO_TEXT, False)):
            with stages.stage(f"{name}, seed {seed}"):
                trained = train(
                    split,
                    texts,
                    dataclasses.replace(model_config, use_text=use_text),
                    config,
                    final_fit="test",
                    progress=progress,
                )
            scores = test_scores(trained, split, examples)
            top = top_k(scores, examples.excluded, K)
            runs.setdefault(name, []).append(
                ranking_metrics(top, examples.targets, split.num_items)
            )
            if name == MODEL:
                vectors = trained.ranker.unit_item_vectors().numpy()
                diversity.append(
                    diversity_metrics(scores, examples, vectors, tags, model_config.max_k)
                )
            training[name].append({"seed": seed, **_training_report(trained)})
    summary = {name: _mean_and_std(results) for name, results in runs.items()}
    return {
        "protocol": {
            "split": "leave-one-out, time order",
            "ranking": "full catalogue",
            "exclude": train_config.exclude,
            "k": K,
            "users": len(split.evaluated()),
            "items": split.num_items,
            "seeds": list(seeds),
        },
        "itemknn_config": dataclasses.asdict(knn_config),
        "results": summary,
        "diversity": [
            {
                "weight": weight,
                **{
                    metric: {
                        "mean": float(np.mean([run[i][metric] for run in diversity])),
                        "std": float(np.std([run[i][metric] for run in diversity])),
                    }
                    for metric in DIVERSITY_METRICS
                },
            }
            for i, weight in enumerate(DIVERSITY_WEIGHTS)
        ],
        "training": training,
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The results as Markdown tables (mean ± std over seeds)."""
    lines = ["| method | " + " | ".join(m.upper() for m in METRICS) + " |"]
    lines.append("|---" * (len(METRICS) + 1) + "|")
    for name, metrics in report["results"].items():
        cells = [f"{metrics[m]['mean']:.4f} ± {metrics[m]['std']:.4f}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    protocol = report["protocol"]
    lines += [
        "",
        f"{protocol['users']} users, {protocol['items']} items, {protocol['split']}, "
        f"{protocol['ranking']} ranking, exclude={protocol['exclude']}, "
        f"seeds {protocol['seeds']} (baselines are deterministic).",
        "",
        "Diversity re-ranking of the model's lists (`STREAMREC_DIVERSITY`, MMR over the "
        "model's item vectors). ILD: mean cosine distance between the items of a list, on the "
        "item vectors and on the items' tags (MovieLens genres).",
        "",
        "| weight | " + " | ".join(m.upper() for m in DIVERSITY_METRICS) + " |",
        "|---" * (len(DIVERSITY_METRICS) + 1) + "|",
    ]
    for row in report["diversity"]:
        cells = [f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in DIVERSITY_METRICS]
        lines.append(f"| {row['weight']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
