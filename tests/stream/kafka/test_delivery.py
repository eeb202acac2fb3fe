"""Deliveries in order, acks after confirmation, failures sent again, then the give-up.

The producer is replaced by a function whose futures the test resolves by hand (the fault
tests in test_worker_faults.py show the same on a real broker behind a proxy).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import stream.kafka.delivery
from stream.errors import DeliveryFailed
from stream.kafka.delivery import Deliveries
from stream.telemetry.metrics import Metrics


class Producer:
    """Records each hand-off; its futures are resolved (or failed) by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, asyncio.Future[Any]]] = []

    async def send(self, records: dict[tuple[str, int], list]) -> list[asyncio.Future[Any]]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((records[("t", 0)][0][1].decode(), future))
        return [future]

    def confirm_all(self) -> None:
        for _, future in self.sent:
            if not future.done():
                future.set_result(None)

    def fail_all(self) -> None:
        for _, future in self.sent:
            if not future.done():
                future.set_exception(TimeoutError("no answer"))


def delivery(name: str) -> dict[tuple[str, int], list]:
    return {("t", 0): [(b"k", name.encode())]}


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream.kafka.delivery, "FIRST_BACKOFF_S", 0.01)
    monkeypatch.setattr(stream.kafka.delivery, "MAX_BACKOFF_S", 0.02)


def test_acks_wait_for_confirmation_and_run_in_order() -> None:
    async def go() -> list[str]:
        producer, acked = Producer(), []
        deliveries = Deliveries(producer.send, Metrics(), timeout_s=5)
        task = asyncio.create_task(deliveries.run())
        for name in ("a", "b", "c"):

            async def ack(name: str = name) -> None:
                acked.append(name)

            await deliveries.submit(delivery(name), [ack])
        await settle()
        assert acked == []  # handed over, not confirmed: nothing acknowledged
        producer.sent[2][1].set_result(None)  # the last one first
        await settle()
        assert acked == []  # still waiting for a and b
        producer.confirm_all()
        await settle()
        task.cancel()
        return acked

    assert asyncio.run(go()) == ["a", "b", "c"]


def test_a_failure_sends_every_pending_delivery_again_in_order() -> None:
    async def go() -> tuple[list[str], list[str], Metrics]:
        producer, acked, metrics = Producer(), [], Metrics()
        deliveries = Deliveries(producer.send, metrics, timeout_s=5)
        task = asyncio.create_task(deliveries.run())
        for name in ("a", "b"):

            async def ack(name: str = name) -> None:
                acked.append(name)

            await deliveries.submit(delivery(name), [ack])
        producer.sent[1][1].set_result(None)  # b reached the broker, a did not
        producer.sent[0][1].set_exception(TimeoutError("no answer"))
        await asyncio.sleep(0.05)
        await deliveries.submit(delivery("c"), [])  # during the retry: queued behind it
        await asyncio.sleep(0.05)
        producer.confirm_all()
        await asyncio.sleep(0.05)
        task.cancel()
        return [name for name, _ in producer.sent], acked, metrics

    sent, acked, metrics = asyncio.run(go())
    # a and b again, in order (b a duplicate), and c only after them: b's copy never
    # lands after a newer record of the same partition
    assert sent[:2] == ["a", "b"] and sent[2:4] == ["a", "b"] and sent[-1] == "c"
    assert acked == ["a", "b"]
    assert metrics.counters["delivery_failures"] == 1
    assert metrics.counters["deliveries_retried"] >= 2


def test_a_broker_that_never_confirms_ends_in_delivery_failed() -> None:
    async def go() -> tuple[list[str], BaseException | None]:
        producer, acked = Producer(), []

        async def ack() -> None:
            acked.append("a")

        deliveries = Deliveries(producer.send, Metrics(), timeout_s=0.1)
        task = asyncio.create_task(deliveries.run())
        await deliveries.submit(delivery("a"), [ack])
        for _ in range(40):
            producer.fail_all()
            await asyncio.sleep(0.01)
        await asyncio.wait([task], timeout=1)
        return acked, task.exception() if task.done() else None

    acked, error = asyncio.run(go())
    assert acked == []
    assert isinstance(error, DeliveryFailed)
    assert "STREAMREC_DELIVERY_TIMEOUT_S" in str(error)


def test_a_hand_off_that_raises_is_a_failure_sent_again() -> None:
    async def go() -> tuple[int, list[str]]:
        calls, acked = [0], []

        async def send(records: dict) -> list[asyncio.Future[Any]]:
            calls[0] += 1
            if calls[0] == 1:
                raise ConnectionError("no metadata")
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return [done]

        async def ack() -> None:
            acked.append("a")

        deliveries = Deliveries(send, Metrics(), timeout_s=5)
        task = asyncio.create_task(deliveries.run())
        await deliveries.submit(delivery("a"), [ack])
        await asyncio.sleep(0.1)
        task.cancel()
        return calls[0], acked

    assert asyncio.run(go()) == (2, ["a"])
