"""The scoring agent under Faust's ``test_context()``: a memory store, no broker.

Faust hands the agent messages through a test channel; its lists and dead letters go to
in-memory outputs instead of topics. The integration tests run the same agent on Kafka.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from stream.agents import install
from stream.app import App
from stream.contracts.records import Event, Recommendation
from stream.settings import Settings
from stream.state.context import UserContext
from tests.helpers import InMemoryOutputs


def test_the_agent_remembers_scores_and_dead_letters(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(
        app_id="agent-unit",
        model_dir=str(tiny_model_dir),
        store="memory://",
        data_dir=str(tmp_path),
        web_enabled=False,
        model_reload_s=0,
    )
    app = App(settings)
    outputs = InMemoryOutputs()
    runtime = install(app, outputs)
    events = [
        Event("e1", "u1", "click", 1_000, item_id="50"),
        Event("e2", "u1", "purchase", 1_001, item_id="50"),
        Event("e3", "u2", "search", 1_002, query="star wars"),
    ]

    async def run() -> None:
        await runtime.pipeline.start()
        try:
            assert runtime.agent is not None
            async with runtime.agent.test_context() as agent:
                for event in events:
                    key, value = event.to_message()
                    await agent.put(value, key=key)
                await agent.put(b"not json", key=b"u1")
                await agent.put(events[0].to_json(), key=b"u1")  # a redelivery
                await runtime.pipeline.batcher.drain()
        finally:
            await runtime.pipeline.stop()

    asyncio.run(run())
    remembered = UserContext.from_bytes(runtime.contexts["u1"])
    assert remembered is not None
    assert [e.event_id for e in remembered.events] == ["e1", "e2"]
    assert remembered.purchased == ("50",)
    lists = [Recommendation.from_json(value) for _, value in outputs.lists]
    newest = {rec.user_id: rec for rec in lists}
    # the redelivered e1 never becomes the trigger of a list: u1's newest is made after e2
    assert newest["u2"].trigger_event_id == "e3" and newest["u1"].trigger_event_id == "e2"
    assert "50" not in dict(newest["u1"].items)  # purchased in e2: excluded
    assert len(newest["u1"].items) == settings.top_k
    assert [orjson.loads(letter)["reason"] for letter in outputs.dead_letters] == ["not_json"]
    counters = runtime.metrics.counters
    assert counters["events_in"] == 5
    assert counters["events_invalid"] == 1 and counters["dlq_reason.not_json"] == 1
    assert counters["events_duplicate"] == 1
    assert counters["events_type.click"] == 2 and counters["events_type.search"] == 1
