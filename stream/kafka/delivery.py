"""Delivery: an event is acknowledged only once the broker holds every record it caused.

What a scoring batch causes (its lists, its contexts' and latest lists' changelog records)
and each dead letter are handed to the producer as one *delivery*, with the acks of the
events behind it. :class:`Deliveries` runs those acks only when the broker has confirmed
every record of the delivery, and in the order the deliveries were made, so Faust, which
commits a partition up to its first unacknowledged offset, never commits past an event
whose output is not on the broker.

When a delivery fails (the producer's request timeout, ``STREAMREC_PRODUCER_REQUEST_TIMEOUT_S``,
ran out, or the hand-off itself raised), nothing after it is acknowledged either: once every
delivery in flight has settled, all of them, from the failed one on, are sent again in their
order, with a growing pause between tries, for up to ``STREAMREC_DELIVERY_TIMEOUT_S``. Sending
the later ones again (some of which the broker may already hold) keeps a user's newest list
and context last on their partitions; the copies are at-least-once duplicates with the same
``trigger_event_id``. New deliveries wait behind the retry, and at most
:data:`MAX_PENDING` are held, which stops the batcher and so the agent (backpressure). If the
broker still refuses after the timeout, :class:`~stream.errors.DeliveryFailed` ends the
confirming task; the worker stops (its task supervision says why) and the events it did not
acknowledge are read again after the restart.

``delivery_failures`` counts producer batches the broker did not confirm, and
``deliveries_retried`` deliveries sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.errors import DeliveryFailed
from stream.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

#: Acknowledges one input event (Faust's ``stream.ack``, or a replay's no-op).
AckFn = Callable[[], Awaitable[Any]]
#: Records for one topic partition: (key, value) pairs, in order.
Records = list[tuple[bytes | None, bytes]]
#: Records by (topic, partition).
RecordsByPartition = dict[tuple[str, int], Records]
#: Hands records to the producer; returns one future per producer batch, each resolving
#: once the broker confirms it (or failing).
SendFn = Callable[[RecordsByPartition], Awaitable[list["asyncio.Future[Any]"]]]

#: Deliveries held unconfirmed before :meth:`Deliveries.submit` waits (backpressure).
MAX_PENDING = 64
#: First pause before sending failed deliveries again; it doubles up to :data:`MAX_BACKOFF_S`.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0


@dataclass
class Delivery:
    """Records handed to the producer together, and the acks that wait for them."""

    records: RecordsByPartition
    acks: Sequence[AckFn]
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    #: Set once the records are with the producer (or the hand-off failed).
    handed: asyncio.Event = field(default_factory=asyncio.Event)


class Deliveries:
    """Ordered, confirmed, retried deliveries; :meth:`run` is the confirming task."""

    def __init__(self, send: SendFn, metrics: Metrics, *, timeout_s: float) -> None:
        self._send = send
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._queue: deque[Delivery] = deque()
        self._more = asyncio.Event()  # something was queued
        self._space = asyncio.Event()  # fewer than MAX_PENDING are queued
        self._space.set()
        #: Set from a failure until every queued delivery has been sent again.
        self._holding = False
        self._failing_since: float | None = None

    @property
    def pending(self) -> int:
        """Deliveries not confirmed yet."""
        return len(self._queue)

    async def submit(self, records: RecordsByPartition, acks: Sequence[AckFn]) -> None:
        """Hand ``records`` to the producer; ``acks`` run once the broker holds all of them.

        Waits while :data:`MAX_PENDING` deliveries are unconfirmed.
        """
        while len(self._queue) >= MAX_PENDING:
            self._space.clear()
            await self._space.wait()
        delivery = Delivery(records, acks)
        self._queue.append(delivery)
        if not self._holding:  # during a retry, the retry sends it, in its place
            await self._hand_over(delivery)
        self._more.set()

    async def run(self) -> None:
        """Confirm deliveries in order, acknowledging each one's events; retry failures.

        Raises:
            DeliveryFailed: a delivery still failed ``timeout_s`` after its first failure.
        """
        backoff = FIRST_BACKOFF_S
        while True:
            if not self._queue:
                self._more.clear()
                await self._more.wait()
                continue
            head = self._queue[0]
            error = await _settled(head)
            if error is None:
                self._queue.popleft()
                if len(self._queue) < MAX_PENDING:
                    self._space.set()
                if self._failing_since is not None:
                    log.warning(
                        "deliveries confirmed again after %.1f s of failures",
                        time.monotonic() - self._failing_since,
                    )
                    self._failing_since, backoff = None, FIRST_BACKOFF_S
                for ack in head.acks:
                    await ack()
                continue
            await self._retry(error, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _retry(self, error: BaseException, backoff: float) -> None:
        """Send every queued delivery again, in order, once all in flight have settled."""
        self._holding = True
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.warning(
                "the broker did not confirm a delivery (%s: %s); its events and every later "
                "one wait unacknowledged while it is sent again for up to %.0f s",
                type(error).__name__,
                error,
                self.timeout_s,
            )
        elif now - self._failing_since > self.timeout_s:
            msg = (
                f"the broker has not confirmed the worker's records for {self.timeout_s:.0f} s "
                f"(last error {type(error).__name__}: {error}); the worker stops so that the "
                "events it did not acknowledge are read again after a restart. Check the "
                "broker and the network to it, or raise STREAMREC_DELIVERY_TIMEOUT_S."
            )
            raise DeliveryFailed(msg) from error
        for delivery in list(self._queue):  # later ones may fail the same way: let them settle
            await _settled(delivery)
        await asyncio.sleep(backoff)
        index = 0
        while index < len(self._queue):  # deliveries submitted meanwhile are included
            self._queue[index].handed.clear()
            await self._hand_over(self._queue[index])
            self.metrics.inc("deliveries_retried")
            index += 1
        self._holding = False

    async def _hand_over(self, delivery: Delivery) -> None:
        """Give the delivery's records to the producer; a refusal becomes a failed future."""
        try:
            futures = await self._send(delivery.records)
        except Exception as exc:  # e.g. no metadata, or no room in the producer's buffer
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            futures = [failed]
        for future in futures:
            future.add_done_callback(self._count_failure)
        delivery.futures = futures
        delivery.handed.set()

    def _count_failure(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.metrics.inc("delivery_failures")


async def _settled(delivery: Delivery) -> BaseException | None:
    """Wait until every record batch of ``delivery`` is confirmed or failed; the first error."""
    await delivery.handed.wait()
    results = await asyncio.gather(*delivery.futures, return_exceptions=True)
    return next((r for r in results if isinstance(r, BaseException)), None)


async def ack_all(acks: Sequence[AckFn]) -> None:
    """Run ``acks`` now (outputs that confirm on hand-off: the replay, tests)."""
    for ack in acks:
        await ack()


async def no_ack() -> None:
    """The ack of a record read outside the consumer group (the catalogue): nothing to do."""
