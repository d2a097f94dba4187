"""The NEURON backend as ``tune``'s objective (offline): each call runs NEURON with one
shadow cell per tuned parameter (docs/neuron-gradients.md) and forms the loss and its exact
gradient from the recorded values and sensitivities.

The loss is the JAX backend's (runtime/tune.py): sum over recorded times of
(y - target)^2 * dt in the internal units of each quantity, so both backends can be compared
number for number.
"""

from __future__ import annotations

import copy

import numpy as np

from ...ir.model import Model
from ...ir.simulation import Simulation
from .plan import make_plan
from .run import simulate


class NeuronObjective:
    def __init__(self, model: Model, sim: Simulation, paths: list[str]):
        self.model = copy.deepcopy(model)      # values are set on this copy, call by call
        self.sim, self.paths = sim, list(paths)
        self.params = {p.path: p for p in self.model.parameters()}
        self.columns = {f"{o.id}/{c.id}": c.quantity.text
                        for o in sim.outputs for c in o.columns}
        to_si = make_plan(self.model, sim).units
        self.scales = {k: to_si[text] for k, text in self.columns.items()}
        self.units = {k: "" for k in self.columns}

    def _set(self, x: np.ndarray) -> None:
        for path, value in zip(self.paths, x):
            self.params[path].value = float(value)

    def simulate(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self._set(x)
        traces = simulate(self.model, self.sim, [])
        return traces.t_ms, {k: traces.values[text] / self.scales[k]
                             for k, text in self.columns.items()}

    def loss_and_grad(self, x: np.ndarray, target: dict) -> tuple[float, np.ndarray]:
        self._set(x)
        traces = simulate(self.model, self.sim, self.paths)
        order = [traces.params.index(p) for p in self.paths]
        dt = self.sim.dt_ms
        loss, grad = 0.0, np.zeros(len(self.paths))
        for key, y_target in target.items():
            text, scale = self.columns[key], self.scales[key]
            err = traces.values[text] / scale - y_target
            sens = traces.sens[text][:, order] / scale
            loss += dt * float(np.sum(err ** 2))
            grad += dt * 2.0 * (err @ sens)
        return loss, grad
