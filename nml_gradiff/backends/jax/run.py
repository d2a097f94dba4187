"""Simulate a LEMS simulation with a generated JAX module (``run --backend jax``)."""

from __future__ import annotations

import jax
import numpy as np

from ...errors import UnsupportedError
from ...ir.model import Model
from ...ir.simulation import Simulation
from ...runtime.run import Traces
from .emit import emit, load_module


def simulate(model: Model, sim: Simulation, params: list[str]) -> Traces:
    if params:
        raise UnsupportedError("sensitivities in the JAX backend are not emitted yet")
    module = load_module(emit(model, sim))
    t, recorded = jax.jit(module.simulate)(module.PARAMS)
    t = np.asarray(t)
    values = {text: np.asarray(recorded[key]) * scale
              for key, (_unit, scale, text) in module.OUTPUTS.items()}
    selections = {f"{ev.id}/{sel.id}": sel.select.text
                  for ev in sim.event_outputs for sel in ev.selections}
    spikes = {selections[key]: list(t[np.asarray(recorded[key]) > 0])
              for key in module.SPIKES}
    return Traces(t_ms=t, values=values, spikes=spikes)
