"""Shadow plans of one model at changing values of its tuned parameters, emitted once.

``tune`` plans the same model with sensitivities every epoch: the offline objective
(:mod:`.objective`) and the learner (:mod:`.learner`, an offline ``--target-rate`` fit runs
one learner plan per epoch).  Emitting the mods is most of the planning time (sympy), and a
fresh emission writes a channel's or pool's own parameter (a rate's midpoint, a pool's
decay constant) into its mod as a PARAMETER default: new mods, and a new library to
compile, every epoch.

So the mods emitted by the first plan serve all later ones (``make_sens_plan``'s memo) and
the tuned values reach NEURON as data of the plan: a placement's values (conductance
densities, reversal potentials) are RANGE values of the plan anyway; a channel's or pool's
own tuned parameters are set as RANGE values on every placement of their mechanism, which
the builder assigns after the memoised mods' stale defaults (the primal reads them there,
and through :mod:`.shadow_builder` its companion).
"""

from __future__ import annotations

import copy

import numpy as np

from ...ir.model import Model
from ...ir.simulation import Simulation
from .plan import Plan
from .shadow_plan import make_sens_plan, resolve


class TunedPlans:
    """The plans of ``model`` with the shadow cells of ``paths``, at the values asked for."""

    def __init__(self, model: Model, sim: Simulation, paths: list[str]):
        self.model = copy.deepcopy(model)      # values are set on this copy, call by call
        self.sim, self.paths = sim, list(paths)
        self.params = {p.path: p for p in self.model.parameters()}
        self.targets = [resolve(self.model, p) for p in self.paths]
        self._memo = {}         # the emitted mods, kept from the first plan (make_sens_plan)

    def set(self, x: np.ndarray) -> None:
        """The model's tuned parameters at ``x`` (in the order of ``paths``)."""
        for path, value in zip(self.paths, x):
            self.params[path].value = float(value)

    def plan(self, x: np.ndarray) -> Plan:
        """The sensitivity plan at ``x``, with the mods of the first call."""
        self.set(x)
        plan = make_sens_plan(self.model, self.sim, self.paths, memo=self._memo)
        self._set_mechanism_values(plan.data)
        return plan

    def _set_mechanism_values(self, data: dict) -> None:
        """The tuned parameters of channels and pools as RANGE values of every compartment
        where their mechanism is placed, overriding the stale defaults of the memoised mods."""
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


def _mechanisms(cell) -> dict[str, str]:
    """Placement or species id -> the mechanism it places."""
    out = {pl.id: pl.mechanism for pl in cell.placements}
    out.update({sp.id: sp.concentration_model for sp in cell.species})
    return out
