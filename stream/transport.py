"""Faust's aiokafka transport, with the worker consumer's fetch wait taken from settings.

Faust hard-codes ``fetch_max_wait_ms=1500`` for worker consumers. Apache Kafka answers a
fetch as soon as data is there, but the embedded broker (Tansu) holds it for the whole wait,
which added ~0.6 s to every event's latency. Registered under the ``streamrec`` URL scheme
through Faust's ``faust.transports`` entry point; ``STREAMREC_BROKER`` keeps ``kafka://``.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as driver

SCHEME = "streamrec"


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with our fetch wait applied to the consumer it builds."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        from stream.app import settings  # the worker's one settings object

        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(settings.fetch_max_wait_ms)  # read at consumer start
        return consumer


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer using :class:`ConsumerThread`."""

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    """Faust's aiokafka transport using :class:`Consumer`."""

    Consumer = Consumer


def broker_url(kafka_url: str) -> str:
    """``kafka://h:p[;h:p]`` as the URL that selects this transport."""
    return SCHEME + "://" + kafka_url.removeprefix("kafka://")
