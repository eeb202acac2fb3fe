"""The worker's web endpoints: stats, probes, Prometheus metrics, a user's context and list.

``/stats/`` (JSON), ``/ready/`` and ``/live/`` (probes), ``/metrics`` (Prometheus, see
:mod:`stream.prometheus`), ``/context/<user_id>/`` and ``/recommendations/<user_id>/``, both
routed to the worker that owns the user's partition (Faust's topic routing: any worker
answers, forwarding the request when the partition is another's).
:func:`stream.agents.install` installs them with the worker's runtime.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from stream.context import UserContext
from stream.prometheus import install as install_prometheus
from stream.runtime import Runtime


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
        """Liveness probe: answered by the worker's event loop, so a stuck loop fails it."""

        async def get(self, request: Request) -> Response:
            """``{"live": true}``."""
            return self.json({"live": True})

    @app.page("/context/{user_id}/")
    @app.topic_route(topic=runtime.events_topic, match_info="user_id")
    async def context_view(web: Any, request: Request, user_id: str) -> Response:
        """What the worker remembers of one user (routed to the worker owning its partition)."""
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
        if not runtime.table_recovered():
            return web.json({"user_id": user_id, "error": "table recovering, retry"}, status=503)
        latest = runtime.latest_lists.get(user_id)
        if latest is None:
            return web.json({"user_id": user_id, "found": False}, status=404)
        return web.bytes(latest, content_type="application/json")

    install_prometheus(app, runtime.metrics, runtime.stats)
