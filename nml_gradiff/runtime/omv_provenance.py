"""Who made a ``.mep``'s expected spike times: jNeuroML, or the model's original code.

OSB keeps one ``.mep`` per model and lets the tests of several engines share it, each with
its own tolerance.  The data were made by one of them, and which one decides the
integration that reproduces them (``omv --integration reference``, docs/omv-neuron.md):

* the ``.mep``'s *home* tests are the ``.omt`` files in its own folder that use it: the
  test that was run to write it lives beside it (``NEURON/test/.test.soma.mep`` with
  ``NEURON/test/.test.soma.nrn.omt``, engine NEURON, target ``Test_Soma.hoc``);
* a home test with a NeuroML engine: jNeuroML made the data;
* home tests that all run other engines (NEURON, PyNEURON, Brian2, Octave): the original
  model made them, unless their target is a file jNeuroML's NEURON export writes
  (``*_ModelDB.hoc``, ``LEMS_*_nrn.py``: PospischilEtAl2008's NEURON_MODIFIED tests run
  those, with jNeuroML's mods);
* no home test: the tests in the folders below it that use it, by the same rules; none:
  jNeuroML (the test that named it has a NeuroML engine).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

#: Files jNeuroML's NEURON export writes (org.neuroml.export NeuronWriter): a test whose
#: target is one of them runs jNeuroML's mods, whatever its engine says.
_JNML_EXPORT = re.compile(r"(.*_ModelDB\.hoc|LEMS_.*_nrn\.py)")

JNEUROML, ORIGINAL = "jNeuroML", "original model"


def _users(folder: Path, mep: Path, recursive: bool) -> list[tuple[str, str]]:
    """(engine, target) of every .omt in ``folder`` (and below it if ``recursive``) whose
    mep is ``mep``."""
    out = []
    for omt in sorted(folder.rglob("*.omt") if recursive else folder.glob("*.omt")):
        try:
            data = yaml.safe_load(omt.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("mep") and \
                (omt.parent / str(data["mep"])).resolve() == mep:
            out.append((str(data.get("engine", "")), str(data.get("target", "")).strip()))
    return out


def _maker(users: list[tuple[str, str]], neuroml_engines) -> str:
    if any(engine in neuroml_engines for engine, _ in users):
        return JNEUROML
    if users and all(_JNML_EXPORT.fullmatch(Path(t).name) for _, t in users):
        return JNEUROML
    return ORIGINAL


@lru_cache(maxsize=None)
def mep_maker(mep: Path, neuroml_engines: tuple[str, ...]) -> str:
    """:data:`JNEUROML` or :data:`ORIGINAL`: who made the ``.mep`` file ``mep``."""
    mep = mep.resolve()
    home = _users(mep.parent, mep, recursive=False)
    if home:
        return _maker(home, neuroml_engines)
    # the tests below it (WangBuzsaki1996/.test.wb.mep: Brian2 and NEURON in
    # WangBuzsaki1996/Brian2, .../NEURON); none found: the NeuroML test that named it
    below = _users(mep.parent, mep, recursive=True)
    return _maker(below, neuroml_engines) if below else JNEUROML
