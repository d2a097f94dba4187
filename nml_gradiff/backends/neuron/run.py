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

from ...errors import ModelError, UnsupportedError
from ...ir.model import Model
from ...ir.simulation import Simulation
from ...runtime.run import Traces
from .build import build
from .plan import make_plan


def simulate(model: Model, sim: Simulation, params: list[str]) -> Traces:
    if params:
        raise UnsupportedError("sensitivities in the NEURON backend (shadow cells) are not "
                               "implemented yet; use --backend jax")
    plan = make_plan(model, sim)
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
    keys = list(plan.data["record"])
    values = {k: data[f"r{i}"] * plan.units[k] for i, k in enumerate(keys)}
    spikes = {k: list(data[f"s{i}"]) for i, k in enumerate(plan.data["spikes"])}
    return Traces(t_ms=data["t"], values=values, spikes=spikes)

