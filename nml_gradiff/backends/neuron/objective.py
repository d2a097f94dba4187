"""The NEURON backend as ``tune``'s objective (offline): each call runs NEURON with one
shadow cell per tuned parameter (docs/neuron-gradients.md) and forms the loss and its exact
gradient from the recorded values and sensitivities.

The loss is the JAX backend's (runtime/tune.py): sum over recorded times of
(y - target)^2 * dt in the internal units of each quantity, so both backends can be compared
number for number.

An epoch's simulation of a small cell takes a tenth of a second; starting NEURON and
emitting the mods took ten times as long.  So the runs with sensitivities go to one NEURON
process kept alive (:class:`.session.Session`), and the mods emitted for the first epoch
serve all of them (:class:`.tuned_plans.TunedPlans`: the tuned values are set as RANGE
values of the plan, not written into new mods).
"""

from __future__ import annotations

import numpy as np

from ...ir.model import Model
from ...ir.simulation import Simulation
from .build import build
from .plan import make_plan
from .run import simulate, traces_of
from .session import Session
from .tuned_plans import TunedPlans


class NeuronObjective:
    def __init__(self, model: Model, sim: Simulation, paths: list[str]):
        self.plans = TunedPlans(model, sim, paths)
        self.model, self.params = self.plans.model, self.plans.params   # values set call by call
        self.sim, self.paths = sim, list(paths)
        self.columns = {f"{o.id}/{c.id}": c.quantity.text
                        for o in sim.outputs for c in o.columns}
        plan = make_plan(self.model, sim)
        self.record = plan.data["record"]       # what each recorded quantity is in NEURON
        self.scales = {k: plan.units[text] for k, text in self.columns.items()}
        self.units = {k: "" for k in self.columns}
        self._session: Session | None = None

    def simulate(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.plans.set(x)
        traces = simulate(self.model, self.sim, [])
        return traces.t_ms, {k: traces.values[text] / self.scales[k]
                             for k, text in self.columns.items()}

    def _with_sensitivities(self, x: np.ndarray):
        plan = self.plans.plan(x)
        library = build(plan.mods)
        if self._session is None or self._session.library != library:
            self.close()
            self._session = Session(library)
        return traces_of(plan, self._session.run(plan.data), True)

    def loss_and_grad(self, x: np.ndarray, target: dict) -> tuple[float, np.ndarray]:
        traces = self._with_sensitivities(x)
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

    def close(self) -> None:
        """Stop the NEURON process (it also stops when the objective is collected)."""
        if self._session is not None:
            self._session.close()
            self._session = None

