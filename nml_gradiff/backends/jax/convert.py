"""``convert --target jax``: a LEMS simulation as one self-contained JAX module.

The module is ``<simulation file stem>.py`` (docs/jax.md); with ``--params GLOB...`` it also
carries the forward sensitivities to those parameters (``SENS_PARAMS``, ``simulate_sens``,
``loss_and_grad``).  A model file without a ``<Simulation>`` has nothing to run: refused.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import NothingToConvert
from ...ingest.simulation import has_simulation, load_simulation
from .emit import emit


def convert_file(path: Path, include_dirs=(), allow_outside=False,
                 params: tuple[str, ...] = ()) -> dict[str, str]:
    path = Path(path)
    if not has_simulation(path, include_dirs, allow_outside):
        raise NothingToConvert("no <Simulation>: the JAX target converts LEMS simulations",
                               file=path)
    model, sim = load_simulation(path, include_dirs=include_dirs, allow_outside=allow_outside)
    selected = model.select_paths(list(params))
    command = "nml-gradiff convert --target jax" + (
        " --params " + " ".join(params) if params else "")
    name = re.sub(r"\W", "_", path.stem) + ".py"
    return {name: emit(model, sim, command=command, params=selected)}
