"""``convert --target neuron``: the files a converted model consists of.

For every model file: one ``.mod`` per mechanism under ``mods/``.  For a LEMS simulation,
also ``plan.json`` (cells, inputs, recordings: see :mod:`.plan`), the standalone
``nmlg_builder.py`` and ``nmlg_runner.py``, so that, without nml-gradiff::

    nrnivmodl mods && python nmlg_runner.py plan.json x86_64/libnrnmech.so out.npz
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import ModelError, UnsupportedError
from ...ingest.model import load_model
from ...ingest.simulation import has_simulation, load_simulation
from . import builder, runner
from .emit import emit
from .plan import make_plan


def _mechanism_mods(model) -> tuple[dict[str, str], list[str]]:
    mods, refused = {}, []
    for mech in model.mechanisms.values():
        try:
            name, text = emit(mech)
        except UnsupportedError as exc:
            refused.append(f"{mech.name}: {exc}")
            continue
        mods[f"mods/{name}.mod"] = text
    return mods, refused


def _standalone(module) -> str:
    """A module's source, made importable beside the others without the package."""
    return Path(module.__file__).read_text().replace(
        "from . import builder", "import nmlg_builder as builder")


def convert_file(path: Path, include_dirs=(), allow_outside=False) -> dict[str, str]:
    model = load_model(path, include_dirs=include_dirs, allow_outside=allow_outside)
    files, refused = _mechanism_mods(model)
    if has_simulation(path, include_dirs, allow_outside):
        model, sim = load_simulation(path, include_dirs=include_dirs,
                                     allow_outside=allow_outside)
        plan = make_plan(model, sim)
        files.update({f"mods/{n}.mod": t for n, t in plan.mods.items()})
        files["plan.json"] = json.dumps(plan.data, indent=1, sort_keys=True) + "\n"
        files["nmlg_builder.py"] = _standalone(builder)
        files["nmlg_runner.py"] = _standalone(runner)
    if not files:
        raise ModelError("nothing to convert: " + ("; ".join(refused) or "no mechanisms"),
                         file=path)
    if refused:
        files["UNSUPPORTED.txt"] = "\n".join(refused) + "\n"
    return files
