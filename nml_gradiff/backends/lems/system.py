"""One single-compartment cell of a simulation -> one ODE system in internal units.

The LEMS backend emits a cell as a single ComponentType whose Dynamics hold every state of
the compartment (v, the channels' gates, the pools' concentrations) with their sensitivities,
so jLEMS advances all of them in the same forward-Euler step.  This module assembles that
system from the IR: each placed mechanism's states renamed per placement
(``<placement id>_<state>``), its parameters replaced by the model-wide parameters (one
symbol per :class:`Parameter`, named from its public path), its reads wired to the
compartment (v, concentrations from the pools, ionic currents into the pools), derived
quantities inlined.

The membrane equation, with currents outward positive (ir/mechanism.py) and ``i_syn`` the
current injected by the cell's inputs (nA, LEMS's iSyn):

    cm dv/dt = -sum(i) + i_syn * 100 / area           [uF/cm2 * mV/ms = 1e-3 mA/cm2]

(``nA/um2 = 100 mA/cm2``).  ``i_syn`` and ``t`` are inputs the sensitivities treat as
independent of the parameters: only current-clamp inputs (which do not read v) are allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy

from ...errors import UnsupportedError
from ...ir.cell import Cell
from ...ir.mechanism import Mechanism, Parameter, symbol
from ...ir.model import Model
from ...ir.simulation import Simulation
from ...ir.units import Dimension, VOLTAGE
from ...passes.compartments import build_compartments, group_parameters
from ...passes.continuous import OdeSystem
from ...passes.discretize import discretize
from ...passes.sensitivity import sensitivities
from .printer import check_name
from .units import dimension_of_unit

__all__ = ["CellSystem", "State", "cell_system", "I_SYN", "T"]

#: Inputs of the system that are not states or parameters.
I_SYN = symbol("i_syn")      # nA, injected (LEMS iSyn)
T = symbol("t")              # ms

#: Event kinds that leave the continuous dynamics alone (see docs/sensitivity.md): a clamp
#: that never fires from a valid state, an assignment to nothing.
_HARMLESS_EVENTS = ("no-op", "continuous")
#: NEURON's default concentrations (mM, inside/outside) where no pool manages an ion; the
#: same numbers the JAX and NEURON backends use.
NEURON_CONC0 = {"ca": (5e-5, 2.0), "na": (10.0, 140.0), "k": (54.4, 2.5)}


@dataclass
class State:
    name: str                  # LEMS name
    rhs: sympy.Expr            # per ms, internal units
    init: sympy.Expr           # over parameters
    unit: str                  # internal unit symbol ("" dimensionless)
    dimension: Dimension
    label: str                 # what it is, for comments


@dataclass
class CellSystem:
    """The ODE system of one single-compartment cell, and what the emitter needs with it."""

    cell: Cell
    states: list[State]
    params: dict[str, Parameter]          # LEMS name -> the IR parameter
    area_um2: float
    cm: sympy.Expr                        # uF/cm2 (a parameter symbol or a number)
    v0: sympy.Expr                        # mV
    spike_thresh: float                   # mV
    notes: list[str] = field(default_factory=list)

    def ode(self) -> OdeSystem:
        return OdeSystem([s.name for s in self.states], {s.name: s.rhs for s in self.states},
                         {s.name: s.init for s in self.states})

    def name_of(self, param: Parameter) -> str | None:
        for name, p in self.params.items():
            if p is param:
                return name
        return None


def _sanitize(path: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", path)
    return name if re.match(r"[A-Za-z_]", name) else f"p_{name}"


def _inlined(mech: Mechanism) -> dict[sympy.Symbol, sympy.Expr]:
    """Derived symbol -> expression over parameters, states and reads (evaluation order)."""
    out: dict[sympy.Symbol, sympy.Expr] = {}
    for d in mech.derived.values():
        out[symbol(d.name)] = d.expr.xreplace(out)
    return out


class _Builder:
    def __init__(self, model: Model, sim: Simulation, cell: Cell):
        self.model, self.sim, self.cell = model, sim, cell
        self.params: dict[str, Parameter] = {}
        self.states: list[State] = []
        self.v = symbol("v")
        self.currents: dict[str, sympy.Expr] = {}   # ion -> mA/cm2 outward
        self.conc: dict[str, tuple[sympy.Expr, sympy.Expr]] = {}  # ion -> (value, init)
        self.notes: list[str] = []

    # ---- names

    def param(self, p: Parameter | float) -> sympy.Expr:
        if not isinstance(p, Parameter):
            return sympy.Float(p)
        for name, known in self.params.items():
            if known is p:
                return symbol(name)
        name = check_name(_sanitize(p.path))
        if name in self.params or name == "v" or name.startswith(("S_", "x")):
            name = f"{name}_{len(self.params)}"
        self.params[name] = p
        return symbol(name)

    # ---- mechanisms

    def _check_events(self, mech: Mechanism) -> None:
        step = discretize(mech)
        bad = [e for e in step.events if e.kind not in _HARMLESS_EVENTS]
        if bad:
            raise UnsupportedError(f"{mech.name}: events of kind {sorted({e.kind for e in bad})}"
                                   " inside a cell in the LEMS backend")
        if any(e.kind == "continuous" for e in step.events):
            self.notes.append(f"{mech.name}: its clamp events (e.g. concentration >= 0) are "
                              "left out; from a valid state they never fire")
        for s in mech.states.values():
            if s.init is None:
                raise UnsupportedError(f"{mech.name}: kinetic-scheme states (initial value = "
                                       "steady state of the scheme) in the LEMS backend")
            if s.rhs is None and mech.kind == "channel":
                raise UnsupportedError(f"{mech.name}: state {s.name} changes only at events")

    def _local(self, mech: Mechanism, inst: str, reads: dict[str, sympy.Expr],
               extra: dict[str, sympy.Expr]) -> dict[sympy.Symbol, sympy.Expr]:
        """Substitution mechanism symbol -> system expression (states, params, reads)."""
        sub = {symbol(n): self.param(p) for n, p in mech.parameters.items()}
        sub.update({symbol(n): e for n, e in extra.items()})
        for read in mech.reads:
            if read not in reads:
                raise UnsupportedError(f"{mech.name} reads '{read}', which the LEMS backend "
                                       f"cannot provide in cell {self.cell.id}")
            sub[symbol(read)] = reads[read]
        sub.update({symbol(s): symbol(check_name(f"{inst}_{s}")) for s in mech.states})
        return sub

    def _add_states(self, mech: Mechanism, inst: str, sub, init_sub) -> None:
        inl = _inlined(mech)
        for s in mech.states.values():
            name = f"{inst}_{s.name}"
            rhs = sympy.S.Zero if s.rhs is None else s.rhs.xreplace(inl).xreplace(sub)
            init = self._init(mech, s.init, inl, sub, init_sub)
            self.states.append(State(name, rhs, init, s.unit, dimension_of_unit(s.unit),
                                     f"{mech.name} ({mech.component_type}) state {s.name}"))

    @staticmethod
    def _init(mech, expr, inl, sub, init_sub) -> sympy.Expr:
        """Initial value over parameters: other states of the mechanism by their own
        initial values, reads by their initial values."""
        states = {symbol(n): s.init for n, s in mech.states.items()}
        e = expr
        for _ in range(len(states) + 1):
            e = e.xreplace(inl).xreplace(states)
        return e.xreplace(sub).xreplace(init_sub)

    def channel(self, pl, v0) -> None:
        mech = self.model.mechanisms[pl.mechanism]
        self._check_events(mech)
        if pl.kind != "channelDensity" or pl.erev_mode != "fixed" or pl.inhomogeneous:
            raise UnsupportedError(f"{pl.kind} '{pl.id}' (reversal potential {pl.erev_mode}) "
                                   "in the LEMS backend: only channelDensity with a fixed erev")
        extra = {}
        for name in mech.placement:
            key = {"gmax": "condDensity", "erev": "erev"}.get(name, name)
            if key in pl.parameters:
                extra[name] = self.param(pl.parameters[key])
            elif name == "vShift":
                extra[name] = sympy.S.Zero
            else:
                raise UnsupportedError(f"{pl.id}: placement value '{name}' in the LEMS backend")
        reads = {"v": self.v, "t": T, "temperature": self.temperature()}
        init_reads = {"v": v0, "t": sympy.S.Zero, "temperature": self.temperature()}
        for read in mech.reads:
            if read.endswith("Conc"):
                value, init = self.concentration(read[:-4], pl.id)
                reads[read], init_reads[read] = value, init
        sub = self._local(mech, pl.id, reads, extra)
        init_sub = {reads[r]: init_reads[r] for r in reads if reads[r] != init_reads[r]}
        self._add_states(mech, pl.id, sub, init_sub)
        inl = _inlined(mech)
        for c in mech.currents:
            ion = pl.ion if c.ion != "non_specific" else "non_specific"
            self.currents[ion] = self.currents.get(ion, 0) + c.expr.xreplace(inl).xreplace(sub)

    def temperature(self) -> sympy.Expr:
        # The network's temperature (degC), fixed in the emitted model.
        t = self.sim.temperature_degC
        return sympy.Float(6.3 if t is None else t)

    def concentration(self, ion: str, who: str) -> tuple[sympy.Expr, sympy.Expr]:
        if ion in self.conc:
            return self.conc[ion]
        if ion in NEURON_CONC0:
            value = sympy.Float(NEURON_CONC0[ion][0])
            return value, value
        raise UnsupportedError(f"{who} reads the concentration of '{ion}', which no "
                               "concentration model manages")

    def pool_states(self, sp) -> tuple[Mechanism, str]:
        """Declare a pool's concentration symbol before the channels reading it."""
        mech = self.model.mechanisms[sp.concentration_model]
        conc = mech.exposures.get("concentration", "concentration")
        if conc not in mech.states:
            raise UnsupportedError(f"pool {sp.id}: no state 'concentration'")
        init = self.param(sp.parameters["initialConcentration"])
        self.conc[sp.ion] = (symbol(check_name(f"{sp.id}_{conc}")), init)
        return mech, conc

    def pool(self, sp, mech: Mechanism, v0) -> None:
        self._check_events(mech)
        ion_read = "i" + sp.ion[:1].upper() + sp.ion[1:]
        area = sympy.Float(self.area)
        i_ion = self.currents.get(sp.ion, sympy.S.Zero)
        # The pool reads its ion's current inward positive, in nA (LEMS convention):
        # -(outward density, mA/cm2) * area (um2) * 0.01.
        reads = {"v": self.v, "t": T, "temperature": self.temperature(),
                 "surfaceArea": area, ion_read: -i_ion * area * sympy.Float(0.01)}
        for name, p in sp.parameters.items():
            reads[name] = self.param(p)
        sub = self._local(mech, sp.id, reads, {})
        self._add_states(mech, sp.id, sub, {self.v: v0})


def _single_node(cell: Cell):
    comp = build_compartments(cell)
    nodes = [i for i in range(comp.n) if comp.membrane[i]]
    if len(nodes) != 1:
        raise UnsupportedError(
            f"cell {cell.id} has {len(nodes)} compartments; the LEMS backend emits point "
            "cells and single-compartment cells only (jLEMS has no cable solver for "
            "sensitivities): use --target neuron, or run --backend jax, which support "
            "multicompartment cells")
    return comp, nodes[0]


def _the_cell(model: Model, sim: Simulation):
    pops = list(sim.populations.values())
    if len(pops) != 1 or pops[0].size != 1:
        raise UnsupportedError("the LEMS backend emits one population of one cell; this "
                               f"network has {[(p.id, p.size) for p in pops]}")
    comp = pops[0].component
    if comp in model.cells:
        return pops[0], model.cells[comp]
    mech = model.mechanisms.get(comp)
    if mech is not None:
        # The same refusal as the sensitivity pass (resets need a saltation term).
        try:
            sensitivities(discretize(mech))
        except UnsupportedError as exc:
            raise UnsupportedError(f"point cell {comp} ({mech.component_type}) in the LEMS "
                                   f"backend: {exc.what}") from exc
        raise UnsupportedError(f"point cell {comp} ({mech.component_type}) in the LEMS "
                               "backend: only morphological single-compartment cells so far")
    raise UnsupportedError(f"population {pops[0].id}: component {comp} is not a cell")


def cell_system(model: Model, sim: Simulation) -> tuple[object, CellSystem]:
    """(population, system) of the simulation's single single-compartment cell."""
    pop, cell = _the_cell(model, sim)
    comp, node = _single_node(cell)
    b = _Builder(model, sim, cell)
    b.area = float(comp.area[node])
    seg = int(comp.segment[node])
    v0 = b.param(group_parameters(cell, "initMembPotential")[seg])
    cm = b.param(group_parameters(cell, "specificCapacitance")[seg])
    pools = [(sp, *b.pool_states(sp)) for sp in cell.species if seg in sp.segments]
    for pl in cell.placements:
        if seg in pl.segments:
            b.channel(pl, v0)
    for sp, mech, _ in pools:
        b.pool(sp, mech, v0)
    i_total = sympy.Add(*b.currents.values())
    dv = sympy.Float(1000.0) / cm * (-i_total + I_SYN * sympy.Float(100.0 / b.area))
    v_state = State("v", dv, v0, "mV", VOLTAGE, "membrane potential")
    thresh = group_parameters(cell, "spikeThresh")[seg]
    thresh = thresh.value if isinstance(thresh, Parameter) else float(thresh)
    system = CellSystem(cell, [v_state] + b.states, b.params, b.area, cm, v0, thresh,
                        b.notes)
    _check_initial_values(system)
    return pop, system


def _check_initial_values(system: CellSystem) -> None:
    """OnStart assigns from parameters only: an initial value that still reads a state
    (a pool whose initial value depends on a current, ...) is not emitted."""
    params = {symbol(n) for n in system.params}
    for s in system.states:
        extra = s.init.free_symbols - params
        if extra:
            raise UnsupportedError(f"initial value of {s.label} depends on "
                                   f"{sorted(map(str, extra))}, not only on parameters")
