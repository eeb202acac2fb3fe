"""The two exports of one checkpoint, alternated call by call.

The ranker by batch size, the query encoder on single titles. Run from the repository root as
``python tests/benchmarks/results/2026-12-08-search-latency/graphs.py BEFORE_DIR AFTER_DIR``;
prints one JSON object (milliseconds: each graph's median, and the median of the after/before
ratios of adjacent calls).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import orjson

from stream.model.scorer import Scorer
from stream.settings import Settings
from stream.tools.bench.cli import movielens_contexts

BATCHES = ((1, 400), (16, 120), (64, 60), (128, 40), (256, 20))


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1e3


def compare(before: list, after: list) -> dict:
    """Medians of the ``before`` and ``after`` calls, made alternately, and of their ratios."""
    pairs = np.array([(timed(b), timed(a)) for b, a in zip(before, after, strict=True)])
    return {
        "before_ms": round(float(np.median(pairs[:, 0])), 3),
        "after_ms": round(float(np.median(pairs[:, 1])), 3),
        "ratio": round(float(np.median(pairs[:, 1] / pairs[:, 0])), 3),
        "calls": len(pairs),
    }


def main() -> None:
    """Print the comparison."""
    before, after = (Scorer(d, provider="cpu", exclude="purchased") for d in sys.argv[1:3])
    contexts = movielens_contexts(Settings(model_dir=sys.argv[1]), 256)
    figures: dict = {"before": before.model_version, "after": after.model_version}
    for batch, calls in BATCHES:
        inputs = before.encode(contexts[:batch])
        figures[f"ranker_batch_{batch}"] = compare(
            [lambda i=inputs: before.run(i)] * calls, [lambda i=inputs: after.run(i)] * calls
        )
    titles = [t.split(" | ")[0] for t in before.manifest.item_texts[:600]]
    assert before.queries is not None and after.queries is not None
    figures["encoder_one_title"] = compare(
        [lambda t=t: before.queries.encode_uncached([t]) for t in titles],
        [lambda t=t: after.queries.encode_uncached([t]) for t in titles],
    )
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
