"""The Faust application, and nothing else: agents, tables and views live in their modules."""

from __future__ import annotations

import faust

from stream.security import broker_credentials
from stream.settings import Settings
from stream.transport import broker_url

settings = Settings.from_env()

app = faust.App(
    settings.app_id,
    broker=broker_url(settings.broker),
    broker_credentials=broker_credentials(settings),
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=settings.heartbeat_interval_s,
    broker_commit_interval=settings.commit_interval_s,
    producer_linger=settings.producer_linger_ms / 1000.0,
    store=settings.store,
    table_standby_replicas=settings.standby_replicas,
    datadir=settings.data_dir,
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication_factor,
    consumer_auto_offset_reset="earliest",
    web_enabled=settings.web_enabled,
    web_bind=settings.web_host,
    web_host=settings.web_host,
    web_port=settings.web_port,
    autodiscover=["stream.agents"],
    origin="stream",
)
