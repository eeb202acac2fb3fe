"""The docs say what the code does: settings, contracts, layout, and links that resolve."""

from __future__ import annotations

import json
import re

from stream.contracts.records import SCHEMAS_DIR
from stream.tools.configuration import page
from tests.helpers import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"


def test_the_configuration_page_is_generated_from_the_settings():
    assert (DOCS / "configuration.md").read_text() == page(), "run `make docs`"


def test_every_schema_is_reproduced_verbatim():
    text = (DOCS / "contracts.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, re.S)]
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        assert json.loads(path.read_text()) in blocks, path.name


def test_every_module_is_in_the_layout_page():
    listed = (DOCS / "layout.md").read_text()
    for package in ("stream", "model_export"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__init__.py":
                assert f"`{path.relative_to(ROOT)}`" in listed, path


def test_the_readme_is_short_and_points_at_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for page_path in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page_path.name})" in text, page_path.name


def test_relative_links_resolve():
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), (doc.name, target)
