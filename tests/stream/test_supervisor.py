"""``python -m stream worker --processes N``: one supervisor, N workers of one group."""

from __future__ import annotations

import os

import pytest

from stream.errors import ConfigError
from stream.supervisor import process_count, split_processes


def test_the_processes_option_is_parsed_and_checked():
    args = ["worker", "--processes", "3", "-l", "info"]
    assert split_processes(args) == (3, ["worker", "-l", "info"])
    assert split_processes(["worker", "--processes=2"]) == (2, ["worker"])
    assert split_processes(["worker"]) == (1, ["worker"])
    assert process_count("auto") == (os.cpu_count() or 1)
    for bad in ("0", "-1", "many", ""):
        with pytest.raises(ConfigError, match="--processes must be a positive number or auto"):
            process_count(bad)


