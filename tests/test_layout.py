"""The package layout holds: no import cycle, and dependencies run one way.

Imports are read from the source (every ``import``, in functions too, but not those under
``if TYPE_CHECKING:``, which never run). Each module belongs to one *part*: a subpackage
(``stream.model``, ``model_export.training``, ``stream.tools.bench``, ...) or, for the modules
directly in a package, that package's base or entry modules. :data:`LAYERS` orders the parts;
a module imports its own part and parts of lower layers only, so the worker runtime never
imports the tools or the training code, and a change low in the tree never needs one above.
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
from tests.helpers import ROOT

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


#: The parts, lowest first: a module imports its own part and lower layers only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("stream:base",),  # errors, settings, extras, clock, progress
    ("stream.contracts", "stream.telemetry"),
    ("stream.kafka", "stream.state", "stream.experiments"),
    ("stream.catalogue",),
    ("stream.model",),
    ("stream.processing",),
    ("stream.serving",),
    ("stream:entry",),  # the App, the worker, its agents, the supervisor, the command line
    ("model_export:base",),  # ranking metrics, shared by training, export and the tools
    ("model_export.data",),
    ("model_export.model",),
    ("model_export.training",),
    ("model_export.export",),
    ("model_export.evaluation",),
    ("model_export:entry",),
    ("stream.tools.cluster",),
    ("stream.tools.replay",),
    ("stream.tools.backtest",),
    ("stream.tools.search_eval", "stream.tools.bench"),
    ("stream.tools:entry",),  # demo, configuration
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
#: Modules directly in ``stream/`` that everything may import; the rest there are entries.
STREAM_BASE = {
    "stream.errors",
    "stream.settings",
    "stream.extras",
    "stream.clock",
    "stream.progress",
}
#: The worker runtime: what ``pip install streamrec`` serves with.
RUNTIME = {
    name for name in RANK if name.startswith("stream") and not name.startswith("stream.tools")
}


def part(module: str) -> str:
    """The part of the layout ``module`` belongs to."""
    for name in sorted(RANK, key=len, reverse=True):
        if ":" not in name and (module == name or module.startswith(name + ".")):
            return name
    if module.startswith("stream.tools"):
        return "stream.tools:entry"
    if module.startswith("stream"):
        return "stream:base" if module in STREAM_BASE else "stream:entry"
    return "model_export:base" if module == "model_export.ranking" else "model_export:entry"


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
        edges.setdefault(part(module), set()).update(
            part(t) for t in targets if part(t) != part(module)
        )
    assert cycle(edges) is None, edges


def test_every_module_has_a_part() -> None:
    for module in modules():
        if module not in PACKAGES and module != "stream.tools":
            assert part(module) in RANK, module


def test_dependencies_run_one_way() -> None:
    """A module imports its own part and lower layers, never a part beside or above it."""
    wrong = sorted(
        (module, target)
        for module, targets in graph().items()
        for target in targets
        if part(target) != part(module) and RANK[part(target)] >= RANK[part(module)]
    )
    assert wrong == [], "\n".join(f"{m} -> {t}" for m, t in wrong)


def test_the_worker_runtime_imports_no_tool_and_no_export_code() -> None:
    for module, targets in graph().items():
        if part(module) in RUNTIME:
            assert {part(t) for t in targets} <= RUNTIME, (module, targets)


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
        "import sys, stream.worker, stream.agents, stream.serving.views\n"
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
