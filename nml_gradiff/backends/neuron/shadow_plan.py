"""The plan of the shadow cells: which companions, which weights, what to record.

``make_sens_plan(model, sim, params)`` is :func:`.plan.make_plan` plus, for each selected
parameter path, one shadow of each morphological cell: ``plan.data["sensitivity"]`` (read
by :mod:`.shadow_builder`) and the companion mods (:mod:`.sens_emit`) in ``plan.mods``.

What a parameter path moves:

* a channel placement's ``condDensity`` or ``erev`` (``CELL/DENSITY/condDensity``): that
  placement's ``gmax``/``erev`` symbol, weight 1 on the compartments the placement covers;
* a channel's or a concentration model's own parameter (``naChan/m/forwardRate/midpoint``,
  ``CaPool/decayConstant``): that symbol on every placement of the mechanism.

Pools get companions too; the channels writing a pool's ion export their current's
sensitivity to it (``currents``), the channels reading its concentration take the pool
companion's (``pools``): see docs/neuron-gradients.md, "Concentration pools".

Everything else is refused with ``unsupported:`` naming the parameter and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnsupportedError
from ...ir.model import Model
from ...ir.simulation import Simulation
from .defaults import rounded_defaults
from .emit import Binding
from .plan import Plan, Planner, channel_binding
from .sens_emit import emit_companion

#: NeuroML placement attribute -> the IR symbol of a channel's placement parameter.
_PLACEMENT_SYMBOL = {"condDensity": "gmax", "erev": "erev"}


@dataclass(frozen=True)
class Target:
    """Where parameter ``path`` enters: symbol ``symbol`` of mechanism ``mechanism``, on
    the placement ``placement`` only (None: on every placement of the mechanism)."""

    path: str
    mechanism: str
    symbol: str
    placement: str | None


def resolve(model: Model, path: str) -> Target:
    for cell in model.cells.values():
        for pl in cell.placements:
            for attr, p in pl.parameters.items():
                if p.path != path:
                    continue
                if attr not in _PLACEMENT_SYMBOL or attr in pl.inhomogeneous:
                    raise UnsupportedError(f"sensitivity with respect to {path} in the NEURON "
                                           f"backend ({attr} of {pl.kind} {pl.id})")
                return Target(path, pl.mechanism, _PLACEMENT_SYMBOL[attr], pl.id)
        if any(p.path == path for p in cell.parameters):
            raise UnsupportedError(
                f"sensitivity with respect to {path} in the NEURON backend: cell properties "
                "(cm, Ra, initial v, threshold) change the shadow's own matrix or start, "
                "which the shadow cells do not implement yet")
        if any(p.path == path for sp in cell.species for p in sp.parameters.values()):
            raise UnsupportedError(f"sensitivity with respect to {path} in the NEURON backend: "
                                   "concentration models are not wired into the shadow cells")
    for mech in model.mechanisms.values():
        for name, p in mech.parameters.items():
            if p.path == path:
                if mech.kind not in ("channel", "concentration"):
                    raise UnsupportedError(f"sensitivity with respect to {path} in the NEURON "
                                           f"backend: a parameter of the {mech.kind} "
                                           f"{mech.name} (only channel and pool parameters "
                                           "so far)")
                return Target(path, mech.name, name, None)
    raise UnsupportedError(f"sensitivity with respect to {path} in the NEURON backend")


def _binding(placement: dict) -> Binding:
    # as Planner._channel: the same (mechanism, binding) gives the same primal mod
    return channel_binding(placement)


class ShadowPlanner:
    def __init__(self, planner: Planner, params: list[str]):
        self.planner, self.model, self.sim = planner, planner.model, planner.sim
        self.plan: Plan = planner.plan
        self.targets = [resolve(self.model, p) for p in params]
        self.companions: dict[str, dict] = {}    # primal mod -> its companion
        self.pools: dict[str, str] = {}           # ion -> companion of its pool
        self.currents: dict[str, list[str]] = {}  # ion -> companions exporting its current

    def _check(self) -> None:
        if getattr(self.planner, "integration", "exact") != "exact":
            raise UnsupportedError("sensitivities with integration "
                                   f"{self.planner.integration} in the NEURON backend")
        for pop in self.sim.populations.values():
            cell = self.model.cells.get(pop.component)
            if cell is None:
                raise UnsupportedError(f"sensitivities of population {pop.id} "
                                       f"({pop.component}, not a morphological cell) in the "
                                       "NEURON backend")

    def _placed(self, cell_id: str, component: str) -> list[tuple[dict, dict, Binding]]:
        """(layout entry, plan placement, binding) of every channel, then every pool."""
        layout = self.planner.layouts[cell_id]
        placed = self.plan.data["cell_types"][component]["placements"]
        channels = [(lp, pp, _binding(lp)) for lp, pp in zip(layout["placements"], placed)]
        pools = [(ls, pp, Binding(ion=ls["ion"])) for ls, pp in
                 zip(layout["species"], placed[len(layout["placements"]):])]
        return channels + pools

    def _pools(self, placed) -> dict[str, int]:
        """Ion -> how many channel mods write its current, for ions a pool carries."""
        ions = {b.ion for lp, _, b in placed
                if self.model.mechanisms[lp["mechanism"]].kind == "concentration"}
        writers = {}
        for lp, pp, b in placed:
            mech = self.model.mechanisms[lp["mechanism"]]
            if mech.kind == "channel" and b.ion in ions:
                writers.setdefault(b.ion, {})[pp["neuron_name"]] = None
        self.currents = {ion: [] for ion in ions}
        for ion, names in writers.items():
            self.currents[ion] = list(names)
        return {ion: len(self.currents[ion]) for ion in ions}

    def _companions(self, cell_id: str, component: str) -> None:
        placed = self._placed(cell_id, component)
        pools = self._pools(placed)
        for lp, pp, binding in placed:
            name = pp["neuron_name"]
            if name in self.companions:
                continue
            mech = self.model.mechanisms[lp["mechanism"]]
            wanted = {t.symbol for t in self.targets if t.mechanism == mech.name}
            cols = [s for s in [*mech.parameters, *mech.placement] if s in wanted]
            export = mech.kind == "channel" and binding.ion in pools
            P = len(self.targets)
            key = ("companion", name, tuple(cols), tuple(sorted(pools.items())), export, P)
            if key not in self.planner.memo:        # Planner.memo: kept across plans
                self.planner.memo[key] = emit_companion(mech, binding, cols, pools=pools,
                                                        export=export, shadows=P)
            comp = self.planner.memo[key]
            self.plan.mods[comp.name] = comp.text
            self.companions[name] = {"name": comp.name, "pointers": comp.pointers,
                                     "wrt": comp.wrt, "states": comp.states}
            if comp.jacobian:       # sens_shared.py: its Jacobians on the primal compartment
                jac = comp.jacobian
                self.plan.mods[jac["name"]] = jac["text"]
                self.companions[name]["jacobian"] = {k: jac[k] for k in ("name", "pointers",
                                                                         "range", "states")}
            if comp.pool:
                self.pools[comp.pool] = comp.name
        self.currents = {ion: [self.companions[n]["name"] for n in names]
                         for ion, names in self.currents.items()}

    def _weights(self, cell_id: str, component: str, target: Target) -> list[dict]:
        out = []
        for lp, pp, _ in self._placed(cell_id, component):
            mech = lp.get("mechanism")
            if mech != target.mechanism:
                continue
            if target.placement is not None and lp["id"] != target.placement:
                continue
            comp = self.companions[pp["neuron_name"]]
            out.append({"section": lp["section"], "companion": comp["name"],
                        "wrt": comp["wrt"][target.symbol], "values": lp["values"]["present"]})
        return out

    def _records(self) -> dict[str, dict]:
        """Where each recording's sensitivity is on the shadow: its v, or ``S_<state>`` of
        a companion (a gate, a pool's concentration)."""
        out = {}
        for key, rec in self.plan.data["record"].items():
            where = {k: rec[k] for k in ("population", "index", "section", "x") if k in rec}
            out[key] = {**where, "ref": self._shadow_ref(key, rec)}
        return out

    def _shadow_ref(self, key: str, rec: dict) -> list:
        what = rec.get("what")
        if what == "v":
            return ["v"]
        if what == "cai" and "ca" in self.pools:
            return ["companion", self.pools["ca"], "cai"]
        if what == "range":
            for primal, comp in self.companions.items():
                var = rec["name"].removesuffix("_" + primal)
                if var != rec["name"] and var in comp["states"]:
                    if "jacobian" in comp:      # on the primal: S<p>_<var>_sensjac_...
                        return ["jacobian", comp["jacobian"]["name"], var]
                    return ["companion", comp["name"], var]
        raise UnsupportedError(f"sensitivity of the recorded quantity {key} in the NEURON "
                               "backend (membrane potentials, gate states and pool "
                               "concentrations only)")

    def build(self) -> Plan:
        self._check()
        shadows = []
        for pop in self.sim.populations.values():
            cell_id = self.model.cells[pop.component].id
            self._companions(cell_id, pop.component)
            for index in range(pop.size):
                for k, target in enumerate(self.targets):
                    shadows.append({"population": pop.id, "index": index, "param": k,
                                    "weights": self._weights(cell_id, pop.component, target)})
        self.plan.data["sensitivity"] = {
            "params": [t.path for t in self.targets], "companions": self.companions,
            "pools": self.pools, "currents": self.currents,
            "shadows": shadows, "record": self._records()}
        # the companions' own PARAMETER defaults too (defaults.py; _check: exact only)
        self.plan.data["defaults"] = rounded_defaults(self.plan.mods)
        return self.plan


def make_sens_plan(model: Model, sim: Simulation, params: list[str],
                   integration: str = "exact", memo: dict | None = None) -> Plan:
    """The primal plan plus the shadow cells of ``params`` (parameter paths).

    ``memo``: a dict the caller keeps across calls to reuse the emitted mods (emitting is
    most of the planning time).  The mods keep the parameter values of the call that
    emitted them as PARAMETER defaults: a caller that changes a channel's or pool's own
    parameter between calls sets it as a RANGE value in the plan (``tuned_plans.py``);
    placement values are RANGE values anyway."""
    planner = Planner(model, sim, integration, memo)
    planner.build()
    return ShadowPlanner(planner, params).build()
