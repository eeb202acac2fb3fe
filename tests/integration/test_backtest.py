"""``python -m stream backtest --tiny`` end to end: two models trained, the future replayed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stream.contracts.manifest import load_manifest
from stream.tools.backtest.cli import (
    BASELINES,
    GROUPS,
)

DAY = 86_400_000


@pytest.mark.timeout(900)  # two tiny models trained, about 5,000 clicks replayed
def test_the_backtest_runs_end_to_end_and_ends_with_its_json_summary(tmp_path, datasets_dir):
    """Tiny models, the whole protocol: cut, train on the past, replay the future, report.

    The cut at 95% of the ratings replays a sixth of what the default (70%) does, with the
    same code: new items first seen after the cut, new and returning users, every method.
    """
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream",
            "backtest",
            "--tiny",
            "--cut-share",
            "0.95",
            "--datasets-dir",
            str(datasets_dir),
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["cut_ts"] == 891_717_908_000  # 1998-04-04: 95% of the ratings before it
    methods = {"model", "model_no_text", *BASELINES}
    for group in GROUPS:
        assert set(summary[group]) == methods
        assert all(0.0 <= f["hr@10"] <= 1.0 for f in summary[group].values())
    assert summary["overall"]["model"]["events"] > 4_500
    assert summary["cold"]["model"]["events"] > 80  # clicks on items first seen after the cut
    assert summary["freshness_ms"]["items"] == 35
    assert summary["overall"]["random"]["hr@10"] < summary["overall"]["model"]["hr@10"]
    assert (tmp_path / "out" / "report.md").is_file() and (
        tmp_path / "out" / "hr_at_10.png"
    ).is_file()
    trained = load_manifest(tmp_path / "work" / "model").training
    assert trained["cut_ts"] == summary["cut_ts"] and trained["trained_on"] == "before cut"
