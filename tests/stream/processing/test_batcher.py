import asyncio
import threading
import time

import pytest

from stream.contracts.records import Event
from stream.processing.batcher import Batcher
from stream.state.context import UserContext


def event(i, user):
    return Event(f"e{i}", user, "click", i, item_id="1")


class Recorder:
    def __init__(self, delay=0.0, fail=False):
        self.delay, self.fail = delay, fail
        self.scored: list[int] = []
        self.published: list[tuple[list[str], list[str]]] = []
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def score(self, contexts):
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        if self.fail:
            raise RuntimeError("model broke")
        self.scored.append(len(contexts))
        return [[("i", 1.0)] for _ in contexts]

    async def publish(self, batch, outcome):
        self.published.append(
            ([u.user_id for u in batch.users], [u.trigger.event_id for u in batch.users])
        )
        for user in batch.users:
            for ack in user.acks:
                await ack()


def make(recorder, **kw):
    params = {"max_users": 4, "max_wait_s": 0.05, "max_events": 100, "max_inflight": 2}
    return Batcher(recorder.score, recorder.publish, **{**params, **kw})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def acker(acked, name):
    async def ack():
        acked.append(name)

    return ack


def test_flushes_when_max_users_are_pending():
    rec, acked = Recorder(), []

    async def go():
        b = make(rec, max_wait_s=60)
        await b.start()
        for i in range(8):
            await b.add(f"u{i}", UserContext(), event(i, f"u{i}"), acker(acked, i))
        await asyncio.sleep(0.2)
        assert rec.scored == [4, 4]  # by size, long before the 60 s deadline
        await b.stop()

    run(go())
    assert sorted(acked) == list(range(8))


def test_flushes_by_deadline_after_first_pending_user():
    rec = Recorder()

    async def go():
        b = make(rec, max_wait_s=0.1)
        await b.start()
        started = time.monotonic()
        await b.add("u", UserContext(), event(1, "u"), acker([], 1))
        while not rec.published:
            await asyncio.sleep(0.005)
        waited = time.monotonic() - started
        await b.stop()
        return waited

    waited = run(go())
    assert 0.09 <= waited < 1.0
    assert rec.scored == [1]


def test_several_events_of_a_user_coalesce_into_one_score():
    rec, acked = Recorder(), []

    async def go():
        b = make(rec, max_users=100, max_wait_s=0.05)
        await b.start()
        for i in range(5):
            await b.add("same", UserContext(), event(i, "same"), acker(acked, i))
        await b.add("other", UserContext(), event(9, "other"), acker(acked, 9))
        await b.drain()
        await b.stop()
        return b.metrics.counters["events_coalesced"]

    coalesced = run(go())
    assert rec.scored == [2]
    assert rec.published == [(["same", "other"], ["e4", "e9"])]  # newest trigger wins
    assert sorted(acked) == [0, 1, 2, 3, 4, 9] and coalesced == 4


def test_max_events_flushes_a_single_busy_user():
    rec = Recorder()

    async def go():
        b = make(rec, max_users=100, max_wait_s=60, max_events=3)
        await b.start()
        for i in range(6):
            await b.add("same", UserContext(), event(i, "same"), acker([], i))
        await b.drain()
        await b.stop()

    run(go())
    assert rec.scored == [1, 1]


def test_inflight_batches_are_bounded_and_published_in_order():
    rec = Recorder(delay=0.05)

    async def go():
        b = make(rec, max_users=1, max_inflight=2)
        await b.start()
        started = time.monotonic()
        for i in range(10):
            await b.add(f"u{i}", UserContext(), event(i, f"u{i}"), acker([], i))
        add_time = time.monotonic() - started
        await b.stop()
        return add_time

    add_time = run(go())
    assert rec.max_running <= 2
    # backpressure: adding 10 single-user batches waited for scoring slots
    assert add_time >= 0.05 * (10 - 2) / 2 * 0.8
    assert [p[0][0] for p in rec.published] == [f"u{i}" for i in range(10)]


def test_failed_scoring_is_reported_to_the_publisher():
    rec, acked = Recorder(fail=True), []
    outcomes = []

    async def publish(batch, outcome):
        outcomes.append(outcome)
        for user in batch.users:
            for ack in user.acks:
                await ack()

    async def go():
        b = Batcher(rec.score, publish, max_users=2, max_wait_s=0.01, max_events=10, max_inflight=1)
        await b.start()
        await b.add("u", UserContext(), event(1, "u"), acker(acked, 1))
        await b.drain()
        await b.stop()
        return b.metrics.counters["batches_failed"]

    assert run(go()) == 1
    assert isinstance(outcomes[0], RuntimeError) and acked == [1]


@pytest.mark.parametrize("users", [0, 3])
def test_drain_publishes_everything_pending(users):
    rec = Recorder()

    async def go():
        b = make(rec, max_users=100, max_wait_s=60)
        await b.start()
        for i in range(users):
            await b.add(f"u{i}", UserContext(), event(i, f"u{i}"), acker([], i))
        await b.drain()
        assert b.pending_users == 0
        await b.stop()

    run(go())
    assert sum(rec.scored) == users
