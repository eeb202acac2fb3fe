"""One seed of the model's leave-one-out test figures with one training change (issue 28).

``python ablation.py VARIANT DATASETS_DIR [SEED]`` trains the model as ``make evaluate`` does
(``exclude=seen``, the final fit through the validation clicks) with one change and prints
one JSON line: ``no_search_rows`` (no search copies: ``found_rate`` 0), ``whole_text`` (the
text not weighted by clicks: ``text_prior_clicks`` 0), ``k<clicks>`` (another
``text_prior_clicks``). One torch thread, so two run side by side on two cores.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch

from model_export.data import sources
from model_export.data.split import build_split
from model_export.evaluation.evaluate import K, test_scores
from model_export.model.ranker import RankerConfig
from model_export.ranking import ranking_metrics, top_k
from model_export.training.train import TrainConfig, train


def main() -> None:
    """Train the variant, score the test clicks, print the figures."""
    variant, datasets = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    torch.set_num_threads(1)
    catalogue = sources.movielens_catalogue(datasets)
    split = build_split(sources.movielens_events(datasets), [i.item_id for i in catalogue])
    model_config = RankerConfig(num_items=len(catalogue))
    train_config = dataclasses.replace(TrainConfig(), seed=seed, exclude="seen")
    if variant == "no_search_rows":
        train_config = dataclasses.replace(train_config, found_rate=0.0)
    elif variant == "whole_text":
        model_config = dataclasses.replace(model_config, text_prior_clicks=0.0)
    elif variant.startswith("k"):
        model_config = dataclasses.replace(model_config, text_prior_clicks=float(variant[1:]))
    started = time.time()
    texts = [i.text for i in catalogue]
    trained = train(split, texts, model_config, train_config, final_fit="test", progress=False)
    examples = split.examples("test", model_config.history_length, train_config.exclude)
    top = top_k(test_scores(trained, split, examples), examples.excluded, K)
    figures = {
        "variant": variant,
        "seed": seed,
        "seconds": round(time.time() - started),
        "valid": trained.report["valid"],
        "best_epoch": trained.report["best_epoch"],
        "test": ranking_metrics(top, examples.targets, split.num_items),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
