"""Personalised search: a query ranked with a user's context, through the lists' own graph.

``GET /search/?user_id=…&q=…&k=…`` (:mod:`stream.serving.views`, routed to the worker owning the
user's partition like ``/recommendations/``) answers with :func:`search`: the query becomes a
search event at the end of the user's context, for this answer only (the stored context is
not changed: a shop that wants the search to shape the user's later lists sends it to the
events topic as well), and the user's model scores that context as it scores any list. The
ranker's search term ranks the items that answer the query (the live catalogue's included),
the user's history orders what is left and breaks near-ties, and exclusions and unavailable
items apply as in the lists. A user with no context gets the query's results alone.
Scoring runs in an executor thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from stream.clock import now_ms
from stream.contracts.records import Event, SearchRequest, SearchResult
from stream.errors import ModelLoadError
from stream.processing.pipeline import ScoringPipeline
from stream.state.context import ContextLimits, UserContext
from stream.telemetry.metrics import Metrics


def searched_context(
    context: UserContext | None, query: str, ts: int, limits: ContextLimits
) -> UserContext:
    """``context`` with a search for ``query`` at ``ts`` as its newest event."""
    event = Event(f"search-request:{uuid.uuid4()}", "", "search", ts, query=query)
    searched, _ = limits.apply(context, event)
    return searched


async def search(
    pipeline: ScoringPipeline,
    request: SearchRequest,
    context: UserContext | None,
    limits: ContextLimits,
    metrics: Metrics,
) -> SearchResult:
    """Rank the items for ``request`` with the user's ``context`` (``None``: no history).

    Raises:
        ModelLoadError: the user's model is not loaded yet (answered 503).
    """
    model = pipeline.model_for(request.user_id)
    scorer = model.scorer
    if scorer is None:
        msg = "the model is still loading; retry"
        raise ModelLoadError(msg)
    started = time.perf_counter()
    generated = now_ms()
    searched = searched_context(context, request.query, generated, limits)
    loop = asyncio.get_running_loop()
    (ranked,) = await loop.run_in_executor(None, scorer.score, [searched], request.k)
    metrics.inc("searches")
    metrics.observe("search_ms", (time.perf_counter() - started) * 1e3)
    experiment = pipeline.experiment
    return SearchResult(
        user_id=request.user_id,
        query=request.query,
        items=ranked,
        model_version=scorer.model_version,
        personalised=bool(context and context.events),
        generated_ts=generated,
        experiment=experiment.name if experiment else None,
        arm=model.arm,
    )
