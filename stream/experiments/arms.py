"""Live experiments: the experiment file, and which arm serves each user.

``STREAMREC_EXPERIMENT`` names a JSON file (contract in docs/experiments.md)::

    {"name": "text-vs-no-text", "salt": "2026-12",
     "arms": [{"name": "control", "model_dir": "models/current", "share": 0.5},
              {"name": "treatment", "model_dir": "models/candidate", "share": 0.5}]}

A user's arm is a pure function of the salt and the user id (the first 8 bytes of
SHA-256 of the salt, a NUL byte and the user id, as a number in [0, 1), against the arms'
cumulative shares), so every worker, every restart and the replay put a user in the same
arm. A new salt reshuffles the users; the same salt with other shares moves only the users
between the old and the new boundaries.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream.errors import ConfigError

#: Shares must sum to 1 within this.
SHARE_TOLERANCE = 1e-6
#: How an arm or experiment may be named (it becomes a metric label and a list field).
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True)
class Arm:
    """One arm: its name, the model directory it serves, the share of users it gets."""

    name: str
    model_dir: str
    share: float


@dataclass(frozen=True)
class Experiment:
    """A named split of users between two or more arms."""

    name: str
    salt: str
    arms: tuple[Arm, ...]

    def position(self, user_id: str) -> float:
        """The user's place in [0, 1): stable across processes, hosts and restarts."""
        digest = hashlib.sha256(f"{self.salt}\0{user_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    def assign(self, user_id: str) -> Arm:
        """The arm that serves ``user_id``."""
        where = self.position(user_id)
        upper = 0.0
        for arm in self.arms:
            upper += arm.share
            if where < upper:
                return arm
        return self.arms[-1]  # the shares' rounding leaves the top sliver to the last arm

    def arm(self, name: str) -> Arm:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        msg = f"experiment {self.name!r} has no arm {name!r}"
        raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """The experiment as in its file."""
        return {
            "name": self.name,
            "salt": self.salt,
            "arms": [
                {"name": a.name, "model_dir": a.model_dir, "share": a.share} for a in self.arms
            ],
        }


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; relative model directories are kept as written.

    Raises:
        ConfigError: the file is missing or malformed; the message names the field.
    """
    where = f"experiment file {path}"
    try:
        body = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        msg = f"{where} cannot be read ({exc.strerror}): fix STREAMREC_EXPERIMENT"
        raise ConfigError(msg) from None
    except orjson.JSONDecodeError as exc:
        msg = f"{where} is not JSON ({exc})"
        raise ConfigError(msg) from None
    return parse_experiment(body, where)


def parse_experiment(body: Any, where: str = "experiment") -> Experiment:
    """Check an experiment's JSON body; see :func:`load_experiment`."""
    body = _object(body, where, ("name", "salt", "arms"))
    name = _name(body.get("name"), f"{where}: field 'name'")
    salt = _string(body, "salt", where, "a non-empty string")
    arms_body = body.get("arms")
    if not isinstance(arms_body, list) or len(arms_body) < 2:
        msg = f"{where}: field 'arms' must be a list of two or more arms"
        raise ConfigError(msg)
    arms = tuple(_arm(a, f"{where}: arms[{i}]") for i, a in enumerate(arms_body))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        msg = f"{where}: field 'arms': arm names must differ, got {names}"
        raise ConfigError(msg)
    total = sum(a.share for a in arms)
    if not math.isclose(total, 1.0, abs_tol=SHARE_TOLERANCE):
        msg = f"{where}: field 'arms': the shares must sum to 1, got {total:g}"
        raise ConfigError(msg)
    return Experiment(name=name, salt=salt, arms=arms)


def _arm(body: Any, where: str) -> Arm:
    body = _object(body, where, ("name", "model_dir", "share"))
    name = _name(body.get("name"), f"{where}: field 'name'")
    model_dir = _string(body, "model_dir", where, "a model directory's path")
    share = body.get("share")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        msg = f"{where}: field 'share' must be a number in (0, 1], got {share!r}"
        raise ConfigError(msg)
    return Arm(name=name, model_dir=model_dir, share=float(share))


def _object(body: Any, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """``body`` if it is a JSON object of no other fields than ``fields``."""
    if not isinstance(body, dict):
        msg = f"{where}: must be a JSON object with {', '.join(fields)}"
        raise ConfigError(msg)
    unknown = set(body) - set(fields)
    if unknown:
        msg = f"{where}: unknown field(s) {', '.join(sorted(unknown))}"
        raise ConfigError(msg)
    return body


def _string(body: dict[str, Any], field: str, where: str, what: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        msg = f"{where}: field '{field}' must be {what}"
        raise ConfigError(msg)
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or not set(value) <= NAME_CHARS or len(value) > 64:
        msg = f"{where} must be 1-64 letters, digits, '_', '-' or '.', got {value!r}"
        raise ConfigError(msg)
    return value
