"""Exploration: leave-one-out (model with MiniLM) under TrainConfig / RankerConfig overrides.

Run from the repository root with this file's path and the overrides, e.g.
``python .../loo_sweep.py train.lr=5e-4 model.dim=128`` (this folder). It trains seeds
7, 8 and 9 as ``make evaluate`` does (early stopping on validation, final fit up to the
test target) and prints, per seed, the best epoch, the validation NDCG@10 of every epoch
and the test HR/NDCG@10, then the means. The fine-tuned text encoder does not depend on
the overrides: it is cached per seed in ``.cache/loo_sweep`` to save a minute a seed.
"""

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import model_export.training.train as train_module
from model_export.data import sources as data
from model_export.data.split import build_split
from model_export.evaluation.evaluate import test_scores
from model_export.model.ranker import RankerConfig
from model_export.ranking import ranking_metrics, top_k

CACHE = Path(".cache/loo_sweep")
finetune = train_module.finetune


def cached_finetune(encoder: Any, tokenizer: Any, pairs: Any, config: Any, **kw: Any) -> Any:
    """The fine-tuned encoder of this seed, trained once."""
    path = CACHE / f"encoder-{kw['seed']}.pt"
    if path.exists():
        encoder.load_state_dict(torch.load(path))
        return {"cached": str(path)}
    report = finetune(encoder, tokenizer, pairs, config, **kw)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), path)
    return report


def override(config: Any, name: str, value: str) -> Any:
    """``config`` with field ``name`` parsed from ``value`` as the field's type."""
    old = getattr(config, name)
    parsed = value in ("1", "true") if isinstance(old, bool) else type(old)(value)
    return dataclasses.replace(config, **{name: parsed})


def main() -> None:
    """Train the three seeds under the overrides given as arguments."""
    train_module.finetune = cached_finetune
    events = data.movielens_events(".cache/datasets")
    catalogue = data.movielens_catalogue(".cache/datasets")
    split = build_split(events, [item.item_id for item in catalogue])
    texts = [item.text for item in catalogue]
    train_config, model_config = train_module.TrainConfig(), RankerConfig(len(catalogue))
    for arg in sys.argv[1:]:
        key, value = arg.split("=")
        scope, name = key.split(".")
        if scope == "train":
            train_config = override(train_config, name, value)
        else:
            model_config = override(model_config, name, value)
    examples = split.examples("test", model_config.history_length, train_config.exclude)
    tag = " ".join(sys.argv[1:]) or "defaults"
    results = []
    for seed in (7, 8, 9):
        started = time.time()
        config = dataclasses.replace(train_config, seed=seed)
        trained = train_module.train(
            split, texts, model_config, config, final_fit="test", progress=False
        )
        scores = test_scores(trained, split, examples)
        metrics = ranking_metrics(
            top_k(scores, examples.excluded, 10), examples.targets, split.num_items
        )
        results.append(metrics)
        curve = [round(h["ndcg@10"], 4) for h in trained.report["history"]]
        print(
            f"{tag} | seed {seed} best {trained.report['best_epoch']} valid {curve} | test hr "
            f"{metrics['hr@10']:.4f} ndcg {metrics['ndcg@10']:.4f} {time.time() - started:.0f}s",
            flush=True,
        )
    hr = np.mean([m["hr@10"] for m in results])
    ndcg = np.mean([m["ndcg@10"] for m in results])
    print(f"{tag} | MEAN hr {hr:.4f} ndcg {ndcg:.4f}", flush=True)


if __name__ == "__main__":
    main()
