"""The worker's web endpoints: stats, probes, Prometheus metrics, a user's context and list.

``/stats/`` (JSON), ``/ready/`` and ``/live/`` (probes), ``/metrics`` (Prometheus, see
:mod:`stream.prometheus`), ``/context/<user_id>/`` and ``/recommendations/<user_id>/``, both
routed to the worker that owns the user's partition (Faust's topic routing: any worker
answers, forwarding the request, its headers included, when the partition is another's).
:func:`stream.agents.install` installs them with the worker's runtime.

The two per-user endpoints are private: with ``STREAMREC_WEB_TOKEN`` set they answer 401
unless the request carries ``Authorization: Bearer <token>`` (compared in constant time),
and ``/context/`` (raw search queries among a user's events) answers 404 unless
``STREAMREC_CONTEXT_VIEW=true``. The probes, ``/stats/`` and ``/metrics`` hold no user's
data and stay open.
"""

from __future__ import annotations

import hmac
from typing import Any

import faust
from faust.web import Request, Response, View

from stream.context import UserContext
from stream.prometheus import install as install_prometheus
from stream.runtime import Runtime
from stream.settings import Settings


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

    install_prometheus(app, runtime.metrics, runtime.stats)
