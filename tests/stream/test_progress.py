import io

from stream.progress import Stages, duration


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0.4, 12, 271, 1260, 3725)] == [
        "0s",
        "12s",
        "4m31s",
        "21m",
        "1h02m",
    ]


def test_each_stage_says_when_it_starts_and_ends_and_the_estimate_follows_the_machine():
    now = [0.0]
    out = io.StringIO()
    stages = Stages("build", [("train", 100.0), ("export", 50.0)], out=out, clock=lambda: now[0])
    with stages.stage("train"):
        now[0] = 200.0  # twice as slow as the reference
    with stages.stage("export"):
        now[0] = 300.0
    lines = out.getvalue().splitlines()
    assert lines == [
        "build [1/2] train: started; 0s so far, about 2m30s left",
        "build [1/2] train: done in 3m20s; 3m20s so far, about 1m40s left",
        "build [2/2] export: started; 3m20s so far, about 1m40s left",
        "build [2/2] export: done in 1m40s; 5m00s so far, about 0s left",
    ]


def test_a_stage_found_done_does_not_shrink_the_estimate():
    now = [0.0]
    out = io.StringIO()
    stages = Stages(
        "backtest", [("train", 600.0), ("replay", 300.0)], out=out, clock=lambda: now[0]
    )
    with stages.stage("train"):
        now[0] = 1.0  # the model was already there
    assert (
        out.getvalue().splitlines()[-1]
        == "backtest [1/2] train: done in 1s; 1s so far, about 5m00s left"
    )
