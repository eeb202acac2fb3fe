"""The scoring pipeline under an experiment: one model per arm, each reloaded on its own."""

from __future__ import annotations

import asyncio
import shutil

import orjson

from stream.contracts.manifest import load_manifest
from stream.contracts.records import Event
from stream.experiments.arms import load_experiment
from stream.processing.pipeline import ScoringPipeline
from stream.settings import Settings
from stream.state.context import UserContext
from stream.state.store import Origin
from stream.telemetry.metrics import Metrics
from tests.helpers import InMemoryOutputs


def test_each_arm_scores_its_users_and_reloads_its_own_model(tiny_model_dir, tmp_path):
    treatment = tmp_path / "treatment"
    shutil.copytree(tiny_model_dir, treatment)
    path = tmp_path / "experiment.json"
    arms = [
        {"name": "control", "model_dir": str(tiny_model_dir), "share": 0.5},
        {"name": "treatment", "model_dir": str(treatment), "share": 0.5},
    ]
    path.write_bytes(orjson.dumps({"name": "ab", "salt": "p", "arms": arms}))
    experiment = load_experiment(path)
    settings = Settings(model_dir=str(tiny_model_dir), experiment=str(path), model_reload_s=0)
    outputs = InMemoryOutputs()

    async def score(pipeline: ScoringPipeline, users: range, tag: str) -> None:
        for i in users:
            ev = Event(f"{tag}{i}", f"u{i}", "click", 1000 + i, item_id="1")
            context = UserContext(events=())
            await pipeline.submit(ev.user_id, context, ev, _noop, Origin("events", 0, i))
        await pipeline.batcher.drain()  # type: ignore[union-attr]

    async def run() -> tuple[str, str]:
        pipeline = ScoringPipeline(settings, Metrics(), outputs.publish_lists)
        await pipeline.start()
        try:
            await score(pipeline, range(40), "a")
            old = load_manifest(treatment).model_version
            manifest = orjson.loads((treatment / "manifest.json").read_bytes())
            manifest["model_version"] = "treatment-v2"
            (treatment / "manifest.json").write_bytes(orjson.dumps(manifest))
            assert await pipeline.reload_if_changed()
            assert not await pipeline.reload_if_changed()  # nothing new the second time
            await score(pipeline, range(40), "b")
            return old, pipeline.models[0].scorer.model_version  # type: ignore[union-attr]
        finally:
            await pipeline.stop()

    old, control_version = asyncio.run(run())
    assert control_version == old  # the control's directory did not change: not reloaded
    published = outputs.recommendations()
    for rec in published:
        arm = experiment.assign(rec.user_id).name
        assert (rec.experiment, rec.arm) == ("ab", arm)
        if arm == "treatment" and rec.trigger_event_id.startswith("b"):
            assert rec.model_version == "treatment-v2"
        else:
            assert rec.model_version == old
    assert {r.arm for r in published} == {"control", "treatment"}
    assert len(published) == 80


async def _noop() -> None:
    return None
