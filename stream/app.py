"""The Faust application, and nothing else: the worker's parts live in their modules.

``faust -A stream.app worker`` and ``python -m stream worker`` run :data:`app`; Faust's
autodiscovery then imports :mod:`stream.worker`, which installs the agent, the table and
the web views on it. The App carries the worker's settings (``app.streamrec``), which is how
the transport and the agent reach them.
"""

from __future__ import annotations

from typing import Any

import faust

from stream.kafka.security import broker_credentials
from stream.kafka.transport import broker_url
from stream.settings import Settings, load_settings


class App(faust.App):
    """Faust's App configured from streamrec's settings, which it keeps as ``streamrec``."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.streamrec = settings
        options: dict[str, Any] = {
            "broker": broker_url(settings.broker),
            "broker_credentials": broker_credentials(settings),
            "broker_session_timeout": settings.session_timeout_s,
            "broker_heartbeat_interval": settings.heartbeat_interval_s,
            "broker_commit_interval": settings.commit_interval_s,
            "producer_linger": settings.producer_linger_ms / 1000.0,
            "producer_request_timeout": settings.producer_request_timeout_s,
            "store": settings.store,
            "table_standby_replicas": settings.standby_replicas,
            "datadir": settings.data_dir,
            "topic_partitions": settings.topic_partitions,
            "topic_replication_factor": settings.topic_replication_factor,
            "consumer_auto_offset_reset": "earliest",
            # Items the agent's stream buffers before Faust pauses the events topic's fetching (it
            # resumes below 40%): with whole fetches as items (stream.kafka.transport), 64 hold at
            # most 64 partition fetches (aiokafka reads up to 1 MB each), not Faust's 4,096.
            "stream_buffer_maxsize": 64,
            "web_enabled": settings.web_enabled,
            "web_bind": settings.web_host,
            "web_host": settings.web_host,
            "web_port": settings.web_port,
            # Faust scans its ``origin`` as well, set by its command line to the package of the
            # program (``stream``, the tools included) unless given: this module, again.
            "autodiscover": ["stream.worker"],
            "origin": "stream.worker",
        }
        super().__init__(settings.app_id, **{**options, **overrides})


app = App(load_settings())
