"""``convert --target neuron``: the files a converted model consists of.

For every model file: one ``.mod`` per mechanism under ``mods/``.  For a LEMS simulation,
also ``plan.json`` (cells, inputs, recordings: see :mod:`.plan`), the standalone
``nmlg_builder.py`` and ``nmlg_runner.py``, so that, without nml-gradiff::

    nrnivmodl mods && python nmlg_runner.py plan.json x86_64/libnrnmech.so out.npz

With ``--params``, the mods include the shadow cells' companions (``sens_*.mod``) and the
plan a ``sensitivity`` section that ``nmlg_shadow_builder.py`` builds: ``out.npz`` then also
holds ``S<k>`` [T, P], the sensitivities of the k-th recording (docs/neuron-gradients.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import ModelError, NothingToConvert, UnsupportedError
from ...ingest.model import load_model
from ...ingest.simulation import has_simulation, load_simulation
from .emit import emit
from .plan import make_plan


def _mechanism_mods(model, done=()) -> tuple[dict[str, str], list[str]]:
    """One mod per mechanism (but those named in ``done``, emitted already), and why each
    mechanism that has none was refused (at ingest or by the emitter)."""
    mods = {}
    refused = [f"{u.id} (<{u.component_type}>): {u.reason}" for u in model.unsupported]
    for mech in model.mechanisms.values():
        if mech.name in done:
            continue
        try:
            name, text = emit(mech)
        except UnsupportedError as exc:
            refused.append(f"{mech.name}: {exc}")
            continue
        mods[f"mods/{name}.mod"] = text
    return mods, refused


def _contents(model) -> str:
    """What a file with nothing to emit holds, for the report."""
    found = [f"<{s.component_type}> '{s.id}'" for s in model.skipped if s.id]
    found += [f"<cell> '{c}' without ion channels" for c in model.cells]
    if not found:
        return "no components, only definitions (ComponentTypes, units) or nothing at all"
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return "no ion channel, concentration model, input or <Simulation>; found " + \
        ", ".join(found[:3]) + more


def _standalone(module: str) -> str:
    """The source of this package's module ``module``, made importable beside the others
    without the package.  Read from its file, not imported: the runners import numpy and
    NEURON-side helpers that a conversion does not need."""
    return (Path(__file__).parent / f"{module}.py").read_text().replace(
        "from . import builder", "import nmlg_builder as builder")


def convert_file(path: Path, include_dirs=(), allow_outside=False,
                 params=()) -> dict[str, str]:
    """``params``: parameter globs whose shadow cells (companion mods, plan section
    ``sensitivity``) to emit with a LEMS simulation (docs/neuron-gradients.md)."""
    files: dict[str, str] = {}
    if has_simulation(path, include_dirs, allow_outside):
        # the simulation's loader ingests the model too: read the files once
        model, sim = load_simulation(path, include_dirs=include_dirs,
                                     allow_outside=allow_outside)
        if params:
            # imported here: the sensitivity planner and emitter are not needed otherwise
            from .shadow_plan import make_sens_plan
            plan = make_sens_plan(model, sim, model.select_paths(list(params)))
        else:
            plan = make_plan(model, sim)
        files.update({f"mods/{n}.mod": t for n, t in plan.mods.items()})
        files["plan.json"] = json.dumps(plan.data, indent=1, sort_keys=True) + "\n"
        files["nmlg_builder.py"] = _standalone("builder")
        files["nmlg_runner.py"] = _standalone("runner")
        files["nmlg_shadow_builder.py"] = _standalone("shadow_builder")
    elif params:
        raise ModelError("--params with --target neuron needs a LEMS file with a "
                         "<Simulation> (the shadow cells copy its cells)", file=path)
    else:
        model = load_model(path, include_dirs=include_dirs, allow_outside=allow_outside)
    # every mechanism of the file, also those the simulation does not use (the plan's own
    # mod of a mechanism, with its binding, wins over the default one of the same name)
    mods, refused = _mechanism_mods(model, done={n[len("mods/"):-len(".mod")] for n in files
                                                 if n.startswith("mods/")})
    files = {**mods, **files}
    if not files and refused:
        raise UnsupportedError("no component left to convert: " + "; ".join(refused),
                               file=path)
    if not files:
        raise NothingToConvert(_contents(model), file=path)
    if refused:
        files["UNSUPPORTED.txt"] = "\n".join(refused) + "\n"
    return files
