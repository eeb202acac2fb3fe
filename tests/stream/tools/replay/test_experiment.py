"""The experiment report, and a replayed experiment against each arm's model replayed alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.experiments.attribution import UserOutcome
from stream.tools.replay.experiment import ratio_ci95, report


def test_with_one_list_per_user_the_interval_is_the_binomial_one():
    rng = np.random.default_rng(0)
    clicks = (rng.random(4000) < 0.2).astype(np.float64)
    rate, se = ratio_ci95(clicks, np.ones_like(clicks))
    n = len(clicks)
    assert rate == clicks.mean()
    assert se == pytest.approx(math.sqrt(rate * (1 - rate) / n) * math.sqrt(n / (n - 1)))


def test_a_clear_difference_is_significant_and_named_in_the_verdict():
    outcomes = {}
    for i in range(400):
        outcomes["control", f"c{i}"] = UserOutcome(lists=10, clicks=1 if i % 2 else 2)
        outcomes["treatment", f"t{i}"] = UserOutcome(lists=10, clicks=3, purchases=i % 2)
    rep = report(outcomes, experiment="ab", arms=["control", "treatment"], window_s=1800)
    click = rep["vs_control"]["treatment"]["click_rate"]
    assert click["diff"] == pytest.approx(0.3 - 0.15)
    assert click["significant"] and click["ci95_low"] > 0
    assert "treatment: click rate significantly higher" in rep["verdict"]
    assert rep["arms"]["control"]["users"] == 400


