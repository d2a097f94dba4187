"""Simulate a LEMS simulation with our NEURON mods (``nml-gradiff run --backend neuron``).

Mods are built once per content hash (:mod:`.build`); the simulation runs in a subprocess
(:mod:`.runner`), so one Python process can run any number of models.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ...errors import ModelError
from ...ir.model import Model
from ...ir.simulation import Simulation
from ...runtime.run import Traces
from .build import build
from .plan import make_plan
from .shadow_plan import make_sens_plan


def simulate(model: Model, sim: Simulation, params: list[str], *,
             integration: str = "exact") -> Traces:
    """``integration``: how channel gates and pools are integrated (``emit.INTEGRATIONS``:
    ``exact``, or ``jnml_neuron`` to reproduce data made with jNeuroML's NEURON export)."""
    # params: shadow cells, one per parameter (shadow_plan.py, docs/neuron-gradients.md)
    plan = (make_sens_plan(model, sim, params, integration) if params
            else make_plan(model, sim, integration))
    library = build(plan.mods)
    with tempfile.TemporaryDirectory(prefix="nml-gradiff-neuron-") as tmp:
        plan_file, out_file = Path(tmp) / "plan.json", Path(tmp) / "out.npz"
        plan_file.write_text(json.dumps(plan.data))
        proc = subprocess.run([sys.executable, "-m", "nml_gradiff.backends.neuron.runner",
                               str(plan_file), str(library), str(out_file)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise ModelError(f"NEURON failed on {sim.source_file}:\n{tail}")
        data = dict(np.load(out_file))
    return traces_of(plan, data, bool(params))


def traces_of(plan, data: dict, sensitivities: bool) -> Traces:
    """The runner's arrays (``runner.run``'s OUT.npz) as Traces, in SI units."""
    keys = list(plan.data["record"])
    values = {k: data[f"r{i}"] * plan.units[k] for i, k in enumerate(keys)}
    spikes = {k: list(data[f"s{i}"]) for i, k in enumerate(plan.data["spikes"])}
    traces = Traces(t_ms=data["t"], values=values, spikes=spikes)
    if sensitivities:   # d(value in SI)/d(parameter in the units inspect --params prints)
        traces.params = list(plan.data["sensitivity"]["params"])
        traces.sens = {k: data[f"S{i}"] * plan.units[k] for i, k in enumerate(keys)}
    return traces

