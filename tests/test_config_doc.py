"""docs/config.md is what facevae.configdoc writes from the schemas now, and names every key.

Fast (no run): the inner loop catches a schema change that was not followed by `make docs`.
"""

import re

import yaml

from facevae.config import SCHEMA_DIR
from facevae.configdoc import render
from support.media import REPO

DOC = REPO / "docs" / "config.md"


def schema_keys() -> set[str]:
    """Every key name any schema file declares: the names of each ``properties`` mapping, at any depth
    (read from the raw files, independently of how the generator walks them)."""
    names: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "properties" and isinstance(value, dict):
                    names.update(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(SCHEMA_DIR.glob("*.schema.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return names


def test_config_doc_is_current():
    assert DOC.exists(), "docs/config.md is missing: run `make docs`"
    assert DOC.read_text() == render(), "docs/config.md is stale: run `make docs` and commit it"


def test_every_schema_key_is_documented():
    documented = set()
    for path in re.findall(r"^\| `([^`]+)` \|", DOC.read_text(), flags=re.MULTILINE):
        documented.update(re.split(r"[.\[\]]+", path))
    keys = schema_keys()
    assert keys, "no keys read from the schemas"
    missing = sorted(keys - documented)
    assert not missing, f"keys in the schemas but not in docs/config.md: {missing}"


def test_every_section_is_documented():
    text = DOC.read_text()
    sections = set()
    for path in sorted(SCHEMA_DIR.glob("*.schema.yaml")):
        sections.update((yaml.safe_load(path.read_text()) or {}).get("properties", {}))
    for section in sections:
        assert f"## `{section}`" in text, f"section {section} has no heading in docs/config.md"
