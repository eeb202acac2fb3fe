"""The worker's web endpoints: stats, probes, metrics, a user's context, list and search.

``/stats/`` (JSON), ``/ready/`` and ``/live/`` (probes), ``/metrics`` (Prometheus, see
:mod:`stream.telemetry.prometheus`), ``/context/<user_id>/``, ``/recommendations/<user_id>/`` and
``/search/?user_id=…&q=…&k=…`` (:mod:`stream.serving.search`), each routed to the worker that owns
the user's partition (Faust's topic routing: any worker answers, forwarding the request, its
headers included, when the partition is another's). :func:`stream.agents.install` installs
them with the worker's runtime.

The per-user endpoints are private: with ``STREAMREC_WEB_TOKEN`` set they answer 401
unless the request carries ``Authorization: Bearer <token>`` (compared in constant time),
and ``/context/`` (raw search queries among a user's events) answers 404 unless
``STREAMREC_CONTEXT_VIEW=true``. The probes, ``/stats/`` and ``/metrics`` hold no user's
data and stay open.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.web import Request, Response, View

from stream.contracts.records import Limits, SearchRequest
from stream.errors import InvalidRequest, ModelLoadError
from stream.serving.runtime import Runtime
from stream.serving.search import search
from stream.settings import Settings
from stream.state.context import ContextLimits, UserContext
from stream.telemetry.prometheus import install as install_prometheus

Handler = Callable[[Any, Request], Awaitable[Response]]


def refusal(settings: Settings, request: Request) -> str | None:
    """Why a per-user request is refused (answered 401), or ``None`` if it may pass."""
    token = settings.web_token
    if not token:
        return None
    given = request.headers.get("Authorization", "")
    scheme, _, credential = given.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        credential.strip().encode(), token.encode()
    ):
        return None
    return "send Authorization: Bearer <STREAMREC_WEB_TOKEN>"


def install(app: faust.App, runtime: Runtime) -> None:
    """Serve the endpoints of ``runtime`` on ``app``'s web server."""
    _install_probes(app, runtime)
    _install_user_views(app, runtime)
    _install_search(app, runtime)
    install_prometheus(app, runtime.metrics, runtime.stats)


def _install_probes(app: faust.App, runtime: Runtime) -> None:
    """``/stats/``, ``/ready/`` and ``/live/``: open, never behind the token."""

    @app.page("/stats/")
    class StatsView(View):
        """Counters and summaries as JSON."""

        async def get(self, request: Request) -> Response:
            """Return :meth:`Runtime.stats`."""
            return self.json(runtime.stats())

    @app.page("/ready/")
    class ReadyView(View):
        """Readiness probe: 200 once :meth:`Runtime.ready`, else 503."""

        async def get(self, request: Request) -> Response:
            """``{"ready": bool}``."""
            ready = runtime.ready()
            return self.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/live/")
    class LiveView(View):
        """Liveness probe: 503 once a background task died; a stuck event loop fails it too."""

        async def get(self, request: Request) -> Response:
            """``{"live": bool, "dead_tasks": {name: error}}``."""
            live = runtime.live()
            body = {"live": live, "dead_tasks": runtime.tasks.dead}
            return self.json(body, status=200 if live else 503)


def _install_user_views(app: faust.App, runtime: Runtime) -> None:
    """``/context/<user_id>/`` and ``/recommendations/<user_id>/``, routed to the owner."""
    settings = runtime.settings

    @app.page("/context/{user_id}/")
    @app.topic_route(topic=runtime.events_topic, match_info="user_id")
    async def context_view(web: Any, request: Request, user_id: str) -> Response:
        """What the worker remembers of one user (routed to the worker owning its partition)."""
        if not settings.context_view:
            off = "the context view is off (STREAMREC_CONTEXT_VIEW)"
            return web.json({"error": off}, status=404)
        refused = refusal(settings, request)
        if refused is not None:
            return web.json({"error": refused}, status=401)
        if not runtime.table_recovered():
            return web.json({"user_id": user_id, "error": "table recovering, retry"}, status=503)
        context = UserContext.from_bytes(runtime.contexts.get(user_id))
        if context is None:
            return web.json({"user_id": user_id, "found": False}, status=404)
        return web.json({"user_id": user_id, "found": True, **context.to_dict()})

    @app.page("/recommendations/{user_id}/")
    @app.topic_route(topic=runtime.events_topic, match_info="user_id")
    async def list_view(web: Any, request: Request, user_id: str) -> Response:
        """The user's latest list, the same JSON as on the recommendations topic."""
        refused = refusal(settings, request)
        if refused is not None:
            return web.json({"error": refused}, status=401)
        if not runtime.table_recovered():
            return web.json({"user_id": user_id, "error": "table recovering, retry"}, status=503)
        latest = runtime.latest_lists.get(user_id)
        if latest is None:
            return web.json({"user_id": user_id, "found": False}, status=404)
        return web.bytes(latest, content_type="application/json")


def _install_search(app: faust.App, runtime: Runtime) -> None:
    """``/search/``: checked where it arrives, scored on the worker owning the user."""
    settings = runtime.settings
    limits, context_limits = Limits.from_settings(settings), ContextLimits.from_settings(settings)

    def search_request(request: Request) -> SearchRequest:
        scorer = runtime.pipeline.scorer
        max_k = scorer.manifest.max_k if scorer is not None else settings.top_k
        return SearchRequest.parse(request.query, limits, max_k, settings.top_k)

    def checked(route: Handler) -> Handler:
        """Refuse before routing: no token (401), bad parameters (400)."""

        @functools.wraps(route)
        async def handler(web: Any, request: Request) -> Response:
            refused = refusal(settings, request)
            if refused is not None:
                return web.json({"error": refused}, status=401)
            try:
                search_request(request)
            except InvalidRequest as exc:
                runtime.metrics.inc("search_bad_requests")
                return web.json({"error": exc.reason, "detail": exc.detail}, status=400)
            return await route(web, request)

        return handler

    @app.page("/search/")
    @checked
    @app.topic_route(topic=runtime.events_topic, query_param="user_id")
    async def search_view(web: Any, request: Request) -> Response:
        """The query's results ranked with the user's context (contract ``search_result``)."""
        if not runtime.table_recovered():
            return web.json({"error": "table recovering, retry"}, status=503)
        parsed = search_request(request)
        context = UserContext.from_bytes(runtime.contexts.get(parsed.user_id))
        try:
            result = await search(
                runtime.pipeline, parsed, context, context_limits, runtime.metrics
            )
        except ModelLoadError as exc:
            return web.json({"error": str(exc)}, status=503)
        return web.bytes(result.to_json(), content_type="application/json")
