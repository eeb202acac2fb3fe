"""Background tasks are watched: a death is recorded, named and reported once."""

from __future__ import annotations

import asyncio

from stream.telemetry.background import BackgroundTasks


def test_a_task_that_raises_is_reported_with_its_name() -> None:
    deaths: list[tuple[str, str]] = []

    async def go() -> BackgroundTasks:
        tasks = BackgroundTasks(lambda name, error: deaths.append((name, repr(error))))

        async def broken() -> None:
            raise ValueError("catch-up failed")

        async def forever() -> None:
            await asyncio.Event().wait()

        healthy = tasks.start("healthy", forever())
        tasks.start("catalogue follower", broken())
        await asyncio.sleep(0.01)
        assert not healthy.done()
        healthy.cancel()  # stopped on purpose: not a death
        await asyncio.sleep(0.01)
        return tasks

    tasks = asyncio.run(go())
    assert not tasks.alive
    assert tasks.dead == {"catalogue follower": "ValueError: catch-up failed"}
    assert deaths == [("catalogue follower", "ValueError('catch-up failed')")]


def test_a_task_that_returns_has_died_and_only_the_first_death_stops_the_worker() -> None:
    deaths: list[str] = []

    async def go() -> BackgroundTasks:
        tasks = BackgroundTasks(lambda name, error: deaths.append(name))

        async def returns() -> None:
            return None

        tasks.start("publish loop", returns())
        await asyncio.sleep(0.01)
        tasks.fail("context writer", OSError("disk full"))
        return tasks

    tasks = asyncio.run(go())
    assert set(tasks.dead) == {"publish loop", "context writer"}
    assert deaths == ["publish loop"]
