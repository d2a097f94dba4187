"""The wheel ships every package and the templates (pyproject lists packages by hand)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from nml_gradiff.templating import environment, template_folder

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "nml_gradiff").rglob("__init__.py")}
    found.add("nml_gradiff.templates")
    assert found == listed


def backends_with_templates() -> list[str]:
    return sorted(p.name for p in (ROOT / "templates").iterdir()
                  if p.is_dir() and any(p.glob("*.j2")))


@pytest.mark.parametrize("backend", backends_with_templates())
def test_templates_are_found(backend):
    names = {p.name for p in template_folder(backend).iterdir()}
    assert names == {p.name for p in (ROOT / "templates" / backend).iterdir()
                     if p.name.endswith(".j2")} | (names - {n for n in names
                                                             if n.endswith(".j2")})
    assert environment(backend).list_templates()


@pytest.mark.slow
def test_wheel_contains_the_templates(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("nml_gradiff-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for backend in backends_with_templates():
        for template in (ROOT / "templates" / backend).glob("*.j2"):
            assert f"nml_gradiff/templates/{backend}/{template.name}" in names
