"""The NEURON backend as ``tune``'s objective (offline): each call runs NEURON with one
shadow cell per tuned parameter (docs/neuron-gradients.md) and forms the loss and its exact
gradient from the recorded values and sensitivities.

The loss is the JAX backend's (runtime/tune.py): sum over recorded times of
(y - target)^2 * dt in the internal units of each quantity, so both backends can be compared
number for number.

An epoch's simulation of a small cell takes a tenth of a second; starting NEURON and
emitting the mods took ten times as long.  So the runs with sensitivities go to one NEURON
process kept alive (:class:`.session.Session`), and the mods emitted for the first epoch
serve all of them: a placement's values (conductance densities, reversal potentials) are
RANGE values in the plan anyway, and a channel's or pool's own parameters (a rate's
midpoint, a pool's decay constant), which a fresh emission would write into the mod as
PARAMETER defaults (new mods, a new library to compile every epoch), are set as RANGE
values on every placement of their mechanism instead.
"""

from __future__ import annotations

import copy

import numpy as np

from ...ir.model import Model
from ...ir.simulation import Simulation
from .build import build
from .plan import make_plan
from .run import simulate, traces_of
from .session import Session
from .shadow_plan import make_sens_plan, resolve


class NeuronObjective:
    def __init__(self, model: Model, sim: Simulation, paths: list[str]):
        self.model = copy.deepcopy(model)      # values are set on this copy, call by call
        self.sim, self.paths = sim, list(paths)
        self.params = {p.path: p for p in self.model.parameters()}
        self.columns = {f"{o.id}/{c.id}": c.quantity.text
                        for o in sim.outputs for c in o.columns}
        plan = make_plan(self.model, sim)
        self.record = plan.data["record"]       # what each recorded quantity is in NEURON
        self.scales = {k: plan.units[text] for k, text in self.columns.items()}
        self.units = {k: "" for k in self.columns}
        self.targets = [resolve(self.model, p) for p in self.paths]
        self._memo = {}         # the emitted mods, kept from the first epoch (make_sens_plan)
        self._session: Session | None = None

    def _set(self, x: np.ndarray) -> None:
        for path, value in zip(self.paths, x):
            self.params[path].value = float(value)

    def simulate(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self._set(x)
        traces = simulate(self.model, self.sim, [])
        return traces.t_ms, {k: traces.values[text] / self.scales[k]
                             for k, text in self.columns.items()}

    def _with_sensitivities(self):
        plan = make_sens_plan(self.model, self.sim, self.paths, memo=self._memo)
        self._set_mechanism_values(plan.data)
        library = build(plan.mods)
        if self._session is None or self._session.library != library:
            self.close()
            self._session = Session(library)
        return traces_of(plan, self._session.run(plan.data), True)

    def _set_mechanism_values(self, data: dict) -> None:
        """The tuned parameters of channels and pools as RANGE values of every compartment
        where their mechanism is placed (the primal and, through ``shadow_builder``, its
        companion read them), overriding the stale defaults of the memoised mods."""
        moved = {(t.mechanism, t.symbol): self.params[t.path].value
                 for t in self.targets if t.placement is None}
        if not moved:
            return
        for component, kind in data["cell_types"].items():
            mechanism_of = _mechanisms(self.model.cells[component])
            nseg = {sec["name"]: sec["nseg"] for sec in kind["sections"]}
            for pl in kind["placements"]:
                for (mechanism, symbol), value in moved.items():
                    if mechanism_of[pl["id"]] == mechanism:
                        pl["range"][symbol] = [value] * nseg[pl["section"]]

    def loss_and_grad(self, x: np.ndarray, target: dict) -> tuple[float, np.ndarray]:
        self._set(x)
        traces = self._with_sensitivities()
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


def _mechanisms(cell) -> dict[str, str]:
    """Placement or species id -> the mechanism it places."""
    out = {pl.id: pl.mechanism for pl in cell.placements}
    out.update({sp.id: sp.concentration_model for sp in cell.species})
    return out
