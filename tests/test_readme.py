"""The README documents what the code does: every setting and every contract's schema."""

import json
import re
from pathlib import Path

from stream.settings import settings_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_settings_table_is_current():
    assert settings_table() in README


def test_every_schema_is_reproduced_verbatim():
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", README, re.S)]
    for path in sorted((ROOT / "stream" / "schemas").glob("*.json")):
        assert json.loads(path.read_text()) in blocks, path.name
