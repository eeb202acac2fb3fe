"""Topic administration for tools and tests: create streamrec's topics before producing.

Producers that write to a missing topic make the broker auto-create it with its default
partition count, which then disagrees with the worker's table; create topics first.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.settings import Settings

#: Configuration of the catalogue topic: a key's newest record is all a worker needs.
COMPACTED = {"cleanup.policy": "compact"}


def streamrec_topics(settings: Settings) -> list[str]:
    """The topics a worker with ``settings`` reads and writes."""
    names = [settings.events_topic, settings.recommendations_topic, settings.dlq_topic]
    return [*names, settings.catalogue_topic] if settings.catalogue_topic else names


async def ensure_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partitions: int,
    replication: int = 1,
    compacted: Iterable[str] = (),
) -> None:
    """Create each topic that does not exist yet (those in ``compacted`` log-compacted)."""
    compacted = set(compacted)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                partitions,
                replication,
                topic_configs=COMPACTED if name in compacted else None,
            )
            for name in names
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created concurrently by a worker: fine
    finally:
        await admin.close()
