"""Simulate a LEMS simulation with a generated JAX module (``run --backend jax``)."""

from __future__ import annotations

import jax
import numpy as np

from ...ir.model import Model
from ...ir.simulation import Simulation
from ...runtime.run import Traces
from .emit import emit, load_module


def simulate(model: Model, sim: Simulation, params: list[str], *,
             integration: str = "exact") -> Traces:
    """Run the module; with ``params``, also the sensitivities of every recorded quantity
    (``Traces.sens``: quantity -> [T, P], d value (SI, as in the .dat file) / d parameter
    (the internal units ``inspect --params`` prints), so scaled like the values).
    ``integration``: ``emit.INTEGRATIONS`` (``jnml_neuron`` reproduces jNeuroML's mods)."""
    module = load_module(emit(model, sim, params=params, integration=integration))
    if params:
        t, recorded, sens = jax.jit(module.simulate_sens)(module.PARAMS)
    else:
        t, recorded = jax.jit(module.simulate)(module.PARAMS)
        sens = {}
    t = np.asarray(t)
    values = {text: np.asarray(recorded[key]) * scale
              for key, (_unit, scale, text) in module.OUTPUTS.items()}
    derivs = {text: np.asarray(sens[key]) * scale
              for key, (_unit, scale, text) in module.OUTPUTS.items() if key in sens}
    selections = {f"{ev.id}/{sel.id}": sel.select.text
                  for ev in sim.event_outputs for sel in ev.selections}
    spikes = {selections[key]: list(t[np.asarray(recorded[key]) > 0])
              for key in module.SPIKES}
    return Traces(t_ms=t, values=values, spikes=spikes, params=list(params), sens=derivs)
