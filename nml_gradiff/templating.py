"""The jinja2 environment every backend renders its templates with.

Templates live in the repository's top-level ``templates/<backend>/`` folder, which the wheel
ships as the package ``nml_gradiff.templates``.  When nml-gradiff runs from a source checkout
(``python -m pytest`` from the repository puts the checkout's ``nml_gradiff`` first on the
path) that package does not exist, so the checkout's own folder is used.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import jinja2

_CHECKOUT = Path(__file__).resolve().parent.parent / "templates"


def template_folder(backend: str):
    """The folder (a Path or an importlib Traversable) holding ``backend``'s templates."""
    try:
        root = resources.files("nml_gradiff.templates")
    except ModuleNotFoundError:
        root = _CHECKOUT
    return root / backend


@functools.lru_cache(maxsize=None)
def environment(backend: str) -> jinja2.Environment:
    """Brian2-style settings: undefined names are errors, block tags leave no blank lines,
    files keep their final newline."""
    folder = template_folder(backend)
    templates = {p.name: p.read_text() for p in folder.iterdir() if p.name.endswith(".j2")}
    return jinja2.Environment(loader=jinja2.DictLoader(templates),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True,
                              autoescape=False)
