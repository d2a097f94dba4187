"""The wheel ships every package and the templates (pyproject lists packages by hand)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "nml_gradiff").rglob("__init__.py")}
    found.add("nml_gradiff.templates")
    assert found == listed


def test_templates_are_importable_as_package_data():
    root = resources.files("nml_gradiff.templates")
    assert root.is_dir()
    shipped = {p.name for p in root.iterdir() if p.is_dir()}
    in_repo = {p.name for p in (ROOT / "templates").iterdir()
               if p.is_dir() and any(p.glob("*.j2"))}
    assert in_repo <= shipped
