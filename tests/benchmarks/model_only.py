"""The ranker alone on one model directory: ``python -m stream bench``'s first phase, quickly.

``python -m tests.benchmarks.model_only MODEL_DIR [--seconds S]`` scores the newest contexts of
512 MovieLens users through the worker's :class:`~stream.model.scorer.Scorer` (pre-encoded inputs,
the worker's batch size and one user at a time, :func:`stream.tools.bench.cli.model_only`), then
the same contexts each ending in a search for a MovieLens title (``with_search``: every user
of the batch pays the search term). Prints one JSON object. Run it under two checkouts
(``PYTHONPATH=<other checkout>``) to compare two versions of the graph in one sitting.
"""

from __future__ import annotations

import argparse

import orjson

from stream.contracts.records import Event
from stream.model.scorer import Scorer
from stream.settings import Settings
from stream.state.context import ContextLimits
from stream.tools.bench.cli import model_only, movielens_contexts


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    settings = Settings(model_dir=args.model)
    scorer = Scorer(args.model, provider="cpu", top_k=20, exclude="purchased")
    contexts = movielens_contexts(settings, 512)
    batch = settings.batch_max_users
    figures = {"model": scorer.model_version, "batch": batch, "items": len(scorer.manifest.items)}
    figures.update(model_only(scorer, contexts, batch, args.seconds))
    limits = ContextLimits.from_settings(settings)
    titles = [t.split(" | ")[0] for t in scorer.manifest.item_texts]
    searched = []
    for n, context in enumerate(contexts):
        ts = context.events[-1].ts + 1000
        event = Event(f"search-{n}", "bench", "search", ts, query=titles[n % len(titles)])
        searched.append(limits.apply(context, event)[0])
    figures["with_search"] = model_only(scorer, searched, batch, args.seconds)
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
