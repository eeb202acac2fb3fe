"""What the click feedback costs the ranker, as the catalogue grows.

``python -m tests.benchmarks.feedback_cost [--model DIR] [--seconds S] [--rounds N]`` prints
one JSON object: for 1,682, 10,000 and 100,000 items (MovieLens' trained items, then
synthetic extra items, as ``python -m stream bench --model-only`` adds them), model-only
users/s of the worker's call (``Scorer.run``: biases in, lists and every extra item's
probability mass out) and of the same graph cut down to the lists (``onnx.utils``
extraction drops the nodes only the mass needs; ONNX Runtime runs every node of a graph
whatever outputs are asked for), alternated ``--rounds`` times in one run; and how long one
batch's inputs, biases included, take to build.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import orjson

from stream.contracts.manifest import RANKER, RANKER_INPUTS
from stream.model.scorer import Scorer, open_session
from stream.settings import Settings
from stream.tools.bench.cli import environment, movielens_contexts, timed_rate

SIZES = (1682, 10_000, 100_000)
BATCH = 128


def main() -> None:
    """Measure and print the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/current")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.from_env().with_overrides(model_dir=args.model, provider="cpu")
    scorer = Scorer.from_settings(settings)
    contexts = movielens_contexts(settings, BATCH)
    ranker = scorer.manifest.path(args.model, RANKER)
    assert ranker is not None
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "lists-only.onnx"
        onnx.utils.extract_model(
            str(ranker), str(cut), [s.name for s in RANKER_INPUTS], ["scores", "indices"]
        )
        lists_session = open_session(cut, ["CPUExecutionProvider"], settings.intra_op_threads)
    trained = scorer.items
    spread = float(scorer.id_vectors.std()) or 0.1
    rows = []
    for size in SIZES:
        extra = max(0, size - len(scorer.manifest.items))
        vectors = np.random.default_rng(0).normal(0, spread, (extra, trained.extra.shape[1]))
        scorer.items = trained.extended([f"synthetic-{n}" for n in range(extra)], vectors)
        inputs = scorer.encode(contexts)
        with_mass, lists_only = [], []
        for _ in range(args.rounds):
            with_mass.append(timed_rate(lambda i=inputs: scorer.run(i), BATCH, args.seconds))
            lists_only.append(
                timed_rate(
                    lambda i=inputs: lists_session.run(["scores", "indices"], i),
                    BATCH,
                    args.seconds,
                )
            )
        started = time.perf_counter()
        scorer.encode(contexts)  # biases included, item slots cached per item set
        rows.append(
            {
                "items": len(scorer.items.ids) - 1,
                "users_per_s_with_feedback": round(float(np.median(with_mass)), 1),
                "users_per_s_lists_only": round(float(np.median(lists_only)), 1),
                "ratio": round(float(np.median(with_mass) / np.median(lists_only)), 3),
                "encode_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )
    figures = {"batch": BATCH, "rows": rows, "environment": environment(scorer, settings)}
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
