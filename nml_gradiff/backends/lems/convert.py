"""``convert --target lems --params GLOB...``: the LEMS files of a sensitivity-augmented model.

Input: a LEMS file with a ``<Simulation>`` of one single-compartment cell (see
:mod:`.system` for what is supported).  Output (docs/lems.md): ``<cell>_sens.xml``,
``LEMS_<sim>_sens.xml`` and ``<sim>_sens.columns.json``; run with
``jnml LEMS_<sim>_sens.xml -nogui`` (``simulator="jlems"``), or export with
``jnml LEMS_<sim>_sens.xml -neuron`` (``simulator="jnml_neuron"``).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ModelError, NothingToConvert
from ...ingest.simulation import has_simulation, load_simulation
from .emit import emit


def convert_file(path: Path, include_dirs=(), allow_outside=False,
                 params: tuple[str, ...] = (), sensitivity_units: str | None = None,
                 simulator: str = "jlems") -> dict[str, str]:
    if not params:
        raise ModelError("--target lems needs --params GLOB... (the parameters whose "
                         "sensitivities to emit; `inspect --params` lists them)", file=path)
    if not has_simulation(path, include_dirs, allow_outside):   # a cell, channels: skipped
        raise NothingToConvert("no <Simulation>: the LEMS target converts LEMS simulations "
                               "(a file with a <Simulation>, e.g. LEMS_*.xml)", file=path)
    model, sim = load_simulation(path, include_dirs=include_dirs, allow_outside=allow_outside)
    missing = model.unmatched(list(params))
    if missing:
        raise ModelError("no parameter matches " + ", ".join(map(repr, missing)), file=path)
    command = f"nml-gradiff convert, target lems, for {simulator}" + (
        f", sensitivity units {sensitivity_units}" if sensitivity_units else "")
    return emit(model, sim, model.select(list(params)), sim_file=Path(path).name,
                command=command, sensitivity_units=sensitivity_units,
                simulator=simulator).files
