"""The package layout holds: no import cycle, and the worker runtime apart from the tools.

Imports are read from the source (every ``import``, in functions too, but not those under
``if TYPE_CHECKING:``, which never run). Packages here are ``stream`` (the runtime: the
modules directly in ``stream/``), ``stream.tools`` and ``model_export``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stream", "model_export")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.add(sub.lineno)
    return lines


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports when it runs."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name not in PACKAGES and name != "stream.tools":  # package inits
                targets.add(name)
    return targets


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def package(module: str) -> str:
    if module.startswith("stream.tools"):
        return "stream.tools"
    return module.split(".")[0]


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges``, or ``None``."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules() -> None:
    assert cycle(graph()) is None


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        edges.setdefault(package(module), set()).update(
            package(t) for t in targets if package(t) != package(module)
        )
    assert cycle(edges) is None, edges


def test_the_worker_runtime_imports_no_tool_and_no_export_code() -> None:
    for module, targets in graph().items():
        if package(module) == "stream":
            assert {package(t) for t in targets} <= {"stream"}, (module, targets)


def test_the_export_extra_is_listed_once_per_import_name() -> None:
    """``stream.extras`` names what ``pyproject.toml``'s export extra installs."""
    required = importlib.metadata.requires("streamrec") or []
    listed = {
        re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].replace("-", "_").lower()
        for line in required
        if 'extra == "export"' in line
    }
    assert listed == set(EXTRAS["export"])


def test_the_worker_imports_without_the_export_extra(without_export_extra) -> None:
    code = (
        "import sys, stream.worker, stream.agents, stream.views\n"
        "print(sorted(m for m in sys.modules if m.startswith(('stream.tools', 'model_export'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **without_export_extra},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "stream", "replay"],
        ["-m", "stream", "bench"],
        ["-m", "stream", "demo"],
        ["-m", "model_export", "build"],
    ],
)
def test_a_tool_without_its_extra_says_which_to_install(command, without_export_extra) -> None:
    result = subprocess.run(
        [sys.executable, *command],
        env={**os.environ, **without_export_extra},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'streamrec[export]'" in lines[0]
