"""The exported model alone across batch sizes, providers, precisions and IO binding.

``python -m tests.benchmarks.model_sweep [--seconds S] [--out FILE]`` prints one JSON object:

- ``ranker``: users/s of the ranker on pre-encoded MovieLens contexts for each batch size,
  on CPU (fp32) and, where CUDA runs, on CUDA with the fp32 and fp16 rankers, each with and
  without IO binding;
- ``queries``: query encodings/s (tokenisation included, as the worker pays it) per batch;
- ``fp16_parity`` (CUDA only): the fp16 and fp32 rankers on CUDA against the fp32 ranker
  on CPU over every MovieLens user: largest score difference and mean top-10 overlap.

It complements ``python -m stream bench``, which measures the streaming path at one batch
size; this one shows where batching and the GPU pay off. Results of GPU runs are kept in
``tests/benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model_export.data.sources import DataSettings, movielens_items
from model_export.ranking import topk_overlap
from stream.contracts.manifest import RANKER, RANKER_FP16
from stream.model.scorer import CPU, CUDA, Scorer, open_session
from stream.settings import Settings
from stream.tools.bench.cli import environment, movielens_contexts, timed_rate

BATCHES = (1, 8, 32, 128, 512, 1024, 2048, 4096)
QUERY_BATCHES = (1, 16, 64, 256, 1024)
TOP = 10


def tiled(items: list[Any], count: int) -> list[Any]:
    """``count`` items, cycling through ``items``."""
    return [items[i % len(items)] for i in range(count)]


def ranker_rates(scorer: Scorer, contexts: list, seconds: float) -> dict[str, float]:
    """Users/s of ``scorer.run`` on pre-encoded inputs, per batch size."""
    rates = {}
    for batch in BATCHES:
        inputs = scorer.encode(tiled(contexts, batch))
        rates[str(batch)] = timed_rate(lambda inputs=inputs: scorer.run(inputs), batch, seconds)
    return rates


def with_ranker(scorer: Scorer, settings: Settings, role: str, providers: list[str]) -> Scorer:
    """``scorer`` serving the ranker file of ``role`` on ``providers``."""
    path = scorer.manifest.path(settings.model_dir, role)
    assert path is not None, f"the model directory has no {role}"
    scorer.session = open_session(path, providers, settings.intra_op_threads)
    scorer.ranker_role = role
    return scorer


def parity(reference: Scorer, candidate: Scorer, contexts: list) -> dict[str, float]:
    """The candidate's scores and top-10s against the reference's on the same users."""
    inputs = reference.encode(contexts)
    ref_scores, ref_indices, _ = reference.run(inputs)
    scores, indices, _ = candidate.run(inputs)
    top = ref_scores[:, :TOP]
    return {
        "max_abs_top10_score_diff": float(np.abs(scores[:, :TOP] - top).max()),
        "top10_overlap": topk_overlap(ref_indices[:, :TOP], indices[:, :TOP]),
        "top10_identical_share": float(np.mean((indices[:, :TOP] == ref_indices[:, :TOP]).all(1))),
    }


def query_rates(scorer: Scorer, titles: list[str], seconds: float) -> dict[str, float]:
    """Distinct queries encoded per second, per batch size (tokenisation included)."""
    assert scorer.queries is not None
    encoder = scorer.queries
    rates = {}
    for batch in QUERY_BATCHES:
        queries = tiled(titles, batch)
        rates[str(batch)] = timed_rate(
            lambda queries=queries: encoder.encode_uncached(queries), batch, seconds
        )
    return rates


def main(argv: list[str]) -> int:
    """Run the sweep, print (and optionally write) its JSON."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.model_sweep")
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure (2)")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    cpu = Scorer.from_settings(settings.with_overrides(provider="cpu"))
    contexts = movielens_contexts(settings, 10_000)  # every user
    titles = [item.title for item in movielens_items(DataSettings.from_env().datasets_dir)]
    figures: dict[str, Any] = {
        "environment": environment(cpu, settings),
        "users": len(contexts),
        "ranker": {"cpu_fp32": ranker_rates(cpu, contexts, args.seconds)},
        "queries": {"cpu_fp32": query_rates(cpu, titles, args.seconds)},
    }
    gpu = Scorer.from_settings(settings.with_overrides(provider="cuda"))
    if gpu.providers[0] == CUDA:
        figures["environment"] = environment(gpu, settings)
        providers = [CUDA, CPU]
        for role, name in ((RANKER_FP16, "fp16"), (RANKER, "fp32")):
            with_ranker(gpu, settings, role, providers)
            parity_name = f"cuda_{name}_vs_cpu_fp32"
            figures.setdefault("fp16_parity", {})[parity_name] = parity(cpu, gpu, contexts)
            for binding in (True, False):
                gpu.io_binding = binding
                label = f"cuda_{name}_{'iobinding' if binding else 'plain'}"
                figures["ranker"][label] = ranker_rates(gpu, contexts, args.seconds)
        figures["queries"]["cuda_fp32"] = query_rates(gpu, titles, args.seconds)
    line = orjson.dumps(figures)
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    print(line.decode())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))
