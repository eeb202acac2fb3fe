"""The experiment file and the assignment of users to arms."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from stream.agents import check_can_serve
from stream.errors import ConfigError
from stream.experiments.arms import Experiment, load_experiment, parse_experiment
from stream.settings import Settings


def body(**changes):
    base = {
        "name": "ab",
        "salt": "s1",
        "arms": [
            {"name": "control", "model_dir": "models/a", "share": 0.5},
            {"name": "treatment", "model_dir": "models/b", "share": 0.5},
        ],
    }
    return {**base, **changes}


def pair(first: dict, second: dict) -> dict:
    """An experiment of arms ``a`` and ``b`` (half each, model ``m``), changed as given."""
    base = {"model_dir": "m", "share": 0.5}
    return body(arms=[{"name": "a", **base, **first}, {"name": "b", **base, **second}])


def write(tmp_path: Path, content) -> Path:
    path = tmp_path / "experiment.json"
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    return path


def test_a_good_file_reads_back_as_written(tmp_path):
    experiment = load_experiment(write(tmp_path, body()))
    assert experiment.to_dict() == body()
    assert [a.name for a in experiment.arms] == ["control", "treatment"]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"{not json", "is not JSON"),
        ([1, 2], "must be a JSON object"),
        (body(name=""), "field 'name'"),
        (body(name="a b"), "field 'name'"),
        (body(salt=""), "field 'salt'"),
        (body(arms=[]), "field 'arms'"),
        (body(arms=[{"name": "only", "model_dir": "m", "share": 1.0}]), "two or more arms"),
        (body(colour="red"), "unknown field(s) colour"),
        (pair({}, {"model_dir": None}), "arms[1]: field 'model_dir'"),
        (pair({"share": 0.7}, {"share": 0.2}), "shares must sum to 1, got 0.9"),
        (pair({"share": "half"}, {}), "arms[0]: field 'share'"),
        (pair({}, {"name": "a"}), "arm names must differ"),
    ],
)
def test_a_bad_file_is_refused_naming_the_field(tmp_path, content, named):
    with pytest.raises(ConfigError, match="experiment file") as caught:
        load_experiment(write(tmp_path, content))
    assert named in str(caught.value)


def test_a_missing_file_says_which_variable_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="STREAMREC_EXPERIMENT"):
        load_experiment(tmp_path / "nope.json")


def test_assignment_is_a_pure_function_of_salt_and_user():
    a = parse_experiment(body())
    b = parse_experiment(body())  # another worker, or after a restart: a new object
    users = [f"user-{i}" for i in range(2000)]
    assert [a.assign(u) for u in users] == [b.assign(u) for u in users]
    reshuffled = parse_experiment(body(salt="s2"))
    moved = sum(a.assign(u).name != reshuffled.assign(u).name for u in users)
    assert 700 < moved < 1300  # a new salt is a new, independent split


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.9, 0.1), (0.2, 0.3, 0.5)])
def test_arms_get_their_shares_within_sampling_error(shares):
    arms = [{"name": f"arm{i}", "model_dir": "m", "share": s} for i, s in enumerate(shares)]
    experiment = parse_experiment(body(arms=arms))
    users = 5000
    counts = dict.fromkeys((a.name for a in experiment.arms), 0)
    for i in range(users):
        counts[experiment.assign(str(i + 1)).name] += 1
    for arm in experiment.arms:
        sd = math.sqrt(users * arm.share * (1 - arm.share))
        assert abs(counts[arm.name] - users * arm.share) < 4 * sd, counts


def test_a_share_change_moves_only_users_across_the_boundary():
    half = parse_experiment(body())
    arms = [
        {"name": "control", "model_dir": "models/a", "share": 0.6},
        {"name": "treatment", "model_dir": "models/b", "share": 0.4},
    ]
    sixty = parse_experiment(body(arms=arms))
    for i in range(3000):
        if half.assign(str(i)).name == "control":
            assert sixty.assign(str(i)).name == "control"


def test_the_worker_refuses_an_experiment_with_an_arm_it_cannot_serve(tmp_path, tiny_model_dir):
    arms = [
        {"name": "control", "model_dir": str(tiny_model_dir), "share": 0.5},
        {"name": "broken", "model_dir": str(tmp_path / "empty"), "share": 0.5},
    ]
    path = write(tmp_path, body(arms=arms))
    settings = Settings(experiment=str(path), web_enabled=False)
    with pytest.raises(SystemExit, match="arm 'broken': its model_dir .*empty cannot be served"):
        check_can_serve(settings)
    bad = write(tmp_path, body(salt=7))
    with pytest.raises(SystemExit, match="field 'salt'"):
        check_can_serve(Settings(experiment=str(bad), web_enabled=False))


def test_the_worker_names_each_arm_it_will_serve(tmp_path, tiny_model_dir):
    arms = [
        {"name": "control", "model_dir": str(tiny_model_dir), "share": 0.5},
        {"name": "treatment", "model_dir": str(tiny_model_dir), "share": 0.5},
    ]
    served = check_can_serve(
        Settings(experiment=str(write(tmp_path, body(arms=arms))), web_enabled=False)
    )
    assert sorted(served) == [
        f"{tiny_model_dir} (arm control)",
        f"{tiny_model_dir} (arm treatment)",
    ]


def test_experiment_is_hashable_and_frozen():
    experiment = parse_experiment(body())
    assert isinstance(experiment, Experiment)
    with pytest.raises(AttributeError):
        experiment.salt = "x"  # type: ignore[misc]  # frozen
