"""Offline evaluation on the test split: the model, its ablation and baselines, several seeds.

Protocol (README, "Evaluation"): leave-one-out in time order (:mod:`model_export.split`),
full ranking over every catalogue item, the user's earlier items excluded under the shared
exclusion policy (``seen`` for MovieLens). Metrics at K=10: HR, NDCG, MRR and catalogue
coverage. Every method is scored by :func:`model_export.metrics.top_k` and
:func:`model_export.metrics.ranking_metrics` on the same examples.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from model_export.baselines import ItemKNNConfig, itemknn, most_popular, tune_itemknn
from model_export.metrics import ranking_metrics, top_k
from model_export.model import RankerConfig
from model_export.split import ExcludePolicy, Split
from model_export.text import embed
from model_export.train import TrainConfig, TrainedModel, predict, train

K = 10
METRICS = (f"hr@{K}", f"ndcg@{K}", f"mrr@{K}", f"coverage@{K}")
MODEL = "model"
NO_TEXT = "model without MiniLM"


def test_metrics(trained: TrainedModel, split: Split, exclude: ExcludePolicy) -> dict[str, float]:
    """The trained model's test metrics (its queries encoded by its own encoder)."""
    examples = split.examples("test", trained.ranker.config.history_length, exclude)
    query_text = torch.zeros(0, trained.ranker.config.text_dim)
    if trained.encoder is not None and trained.tokenizer is not None and split.queries:
        query_text = torch.from_numpy(embed(trained.encoder, trained.tokenizer, split.queries))
    top = top_k(predict(trained.ranker, examples, query_text), examples.excluded, K)
    return ranking_metrics(top, examples.targets, split.num_items)


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
    for seed in seeds:
        config = dataclasses.replace(train_config, seed=seed)
        for name, use_text in ((MODEL, True), (NO_TEXT, False)):
            trained = train(
                split,
                texts,
                dataclasses.replace(model_config, use_text=use_text),
                config,
                progress=progress,
            )
            runs.setdefault(name, []).append(test_metrics(trained, split, train_config.exclude))
            training[name].append(
                {
                    "seed": seed,
                    "seconds": trained.report["seconds"],
                    "best_epoch": trained.report["best_epoch"],
                    "valid": trained.report["valid"],
                }
            )
    summary = {
        name: {
            metric: {
                "mean": float(np.mean([r[metric] for r in results])),
                "std": float(np.std([r[metric] for r in results])),
                "runs": [r[metric] for r in results],
            }
            for metric in METRICS
        }
        for name, results in runs.items()
    }
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
        "training": training,
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (mean ± std over seeds)."""
    head = "| method | " + " | ".join(m.upper().replace("@", "@") for m in METRICS) + " |"
    lines = [head, "|---" * (len(METRICS) + 1) + "|"]
    for name, metrics in report["results"].items():
        cells = [f"{metrics[m]['mean']:.4f} ± {metrics[m]['std']:.4f}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    protocol = report["protocol"]
    lines.append("")
    lines.append(
        f"{protocol['users']} users, {protocol['items']} items, {protocol['split']}, "
        f"{protocol['ranking']} ranking, exclude={protocol['exclude']}, "
        f"seeds {protocol['seeds']} (baselines are deterministic)."
    )
    return "\n".join(lines) + "\n"
