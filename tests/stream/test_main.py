"""``python -m stream``: its help lists streamrec's commands first, then Faust's."""

import subprocess
import sys

from stream.__main__ import COMMANDS, TOOLS


def test_help_lists_streamrecs_commands_then_fausts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stream", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    faust = out.index("Welcome, see list of commands")
    for name in COMMANDS:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert out.index(line) < faust, name  # each of ours, with its line, before Faust's
    assert "agents" in out[faust:] and "worker" in out[faust:]  # Faust's commands kept below


def test_every_command_has_a_line_in_the_help():
    assert {*TOOLS, "worker", "settings"} == set(COMMANDS)
