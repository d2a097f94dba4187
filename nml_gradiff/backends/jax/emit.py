"""IR Model + Simulation -> the text of a self-contained JAX module (see docs/jax.md).

The module steps the model exactly as NEURON's fixed step does (fadvance.cpp
``nrn_fixed_step``), so its traces match NEURON's to integration round-off:

1. ``t + dt/2``: every membrane current and its derivative in v at ``(v[n], states[n])``;
   electrode inputs (pulse, sine, ramp generators, voltage clamps) at ``t + dt/2``
   (``setup_tree_matrix``);
2. one backward-Euler step of the cable equation, linearised about ``v[n]``, solved on the
   tree of NEURON's nodes (``nrn_solve``: triang/bksub; ``nrn_update_voltage``);
3. ``t + dt``: the mechanisms' states with ``v[n+1]`` (``nonvint``): gates by exponential
   Euler, kinetic schemes by backward Euler, pools before the channels that read them
   (``passes/discretize.py`` supplies every map);
4. recording, then threshold events (WATCH/NetCon are checked after the step, their
   NET_RECEIVE runs before the next one).

Point cells (izhikevich2007Cell, iafCell, ...) step their ``v`` as jNeuroML's NEURON export
does (a section whose membrane current is the cell's ``-C dv/dt``): linearised backward Euler
about ``v[n]``; their other states by the discretize map with ``v[n+1]``.

``integration="jnml_neuron"`` (:data:`INTEGRATIONS`) reproduces jNeuroML's exported mods
instead: forward-Euler gates and pools, a channel's current from the gates of the step before.

:func:`emit` returns the module text; :func:`load_module` executes it into a module object.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sympy

from ...errors import ModelError, UnsupportedError
from ...ir.cell import Cell, Placement, Species
from ...ir.functions import ExpRelr
from ...ir.ion_binding import (CELL_ION_CURRENTS, concentration_ion, density_ion,
                               is_second_pool_density)
from ...ir.mechanism import Mechanism, symbol
from ...ir.model import Model
from ...ir import units as ir_units
from ...ir.simulation import QuantityRef, Simulation
from ...ir.units import internal_unit
from ...passes.compartments import (Compartments, build_compartments, group_parameters,
                                    placement_nodes)
from ...passes.discretize import StepMap, almost_everywhere, discretize
from ...passes.jlems_order import jlems_order
from ...templating import environment
from .printer import JaxPrinter, py_name

__all__ = ["emit", "load_module", "JACOBIANS", "INTEGRATIONS", "NEURON_CELSIUS"]

#: How di/dv is computed: "analytic" (exact derivative) or "neuron" (NEURON's difference
#: quotient (i(v + 0.001) - i(v))/0.001, for bit-level comparisons).
JACOBIANS = ("analytic", "neuron")
#: How gates, pools and self-contained point cells are integrated: "exact" (the discretize
#: map: exponential Euler for gates) or "jnml_neuron" (what the mods of jNeuroML's NEURON
#: export do, to reproduce reference data made with them; the same option and the same
#: semantics as the NEURON backend's ``emit.INTEGRATIONS``, docs/neuron.md): forward Euler,
#: and a gated channel's current from the gates of the step before.
INTEGRATIONS = ("exact", "jnml_neuron")
#: NEURON's default temperature, which jNeuroML's export leaves alone when the network
#: declares none.
NEURON_CELSIUS = 6.3
#: NEURON's default concentrations (mM; inside, outside: cai0_ca_ion, cao0_ca_ion, ...)
#: where a channel reads an ion no pool manages.
NEURON_CONC0 = {"ca": (5e-5, 2.0), "na": (10.0, 140.0), "k": (54.4, 2.5)}
#: Valences for Nernst potentials (the constants are NEURON's, in runtime.nernst).
VALENCE = {"ca": 2, "ca2": 2, "na": 1, "k": 1, "cl": -1, "mg": 2}

#: NeuroML's constants in channelDensityGHK/GHK2 (NeuroML2CoreTypes Cells.xml, "hard coded for
#: Ca only"), as the NEURON backend prints them.
_GHK_R, _GHK_F, _GHK_Z = sympy.Float("8.3144621"), sympy.Float("96485.3"), sympy.Integer(2)
#: Reversal modes whose current is not gmax*fopen*(v - erev): a channel group of their own.
GHK_MODES = ("ghk", "ghk2")

#: Internal unit symbol -> factor to SI (x_SI = factor * x), for recorded quantities.
_SI_SCALE = {iu.symbol: iu.scale for iu in (internal_unit(d) for d in vars(ir_units).values()
                                            if isinstance(d, ir_units.Dimension))
             if not iu.offset}



# ============================================================================ code generation

@dataclass
class Function:
    """One generated function: ``def name(p, *args)`` binding parameters from ``p``,
    computing ``outputs`` (key, sympy expression) with shared subexpressions.

    ``returns``: ``"tuple"`` (the values in order), ``"dict"`` ({key: value}) or
    ``"dict_last"`` (a dict of all but the last, then the last).  Outputs are computed into
    fresh local names, so an output named like an input (a state's new value) never shadows
    the old value another output still reads: the update is simultaneous."""

    name: str
    doc: str
    args: list[str]
    binds: dict[str, str]                 # local name -> parameter path
    outputs: list[tuple[str, sympy.Expr]]
    returns: str = "tuple"
    ions: list[str] = field(default_factory=list)      # for returns == "ions"

    def render(self) -> str:
        printer = JaxPrinter()
        exprs = [sympy.sympify(e) for _, e in self.outputs]
        used = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
        known = set(self.args) | set(self.binds)
        unknown = sorted(s.name for s in used if py_name(s.name) not in known)
        if unknown:
            raise ModelError(f"{self.name}: expressions use unresolved symbols {unknown}")
        lines = [f"def {self.name}({', '.join(['p'] + self.args)}):", f'    """{self.doc}"""']
        names = {py_name(s.name) for s in used}
        lines += [f'    {n} = p["{path}"]' for n, path in self.binds.items() if n in names]
        temps, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("_t", real=True))
        printer.names.update({s.name: s.name for s, _ in temps})
        lines += [f"    {printer.doprint(s)} = {printer.doprint(e)}" for s, e in temps]
        taken = known | {s.name for s, _ in temps}
        local = []
        for key, _ in self.outputs:
            name = py_name(key)
            while name in taken:
                name += "_1"
            taken.add(name)
            local.append(name)
        lines += [f"    {n} = {printer.doprint(e)}" for n, e in zip(local, reduced)]
        lines.append(f"    return {self._return(local)}")
        return "\n".join(lines)

    def _return(self, local: list[str]) -> str:
        keys = [k for k, _ in self.outputs]
        if self.returns == "tuple":
            return ", ".join(local) if len(local) != 1 else local[0]
        if self.returns == "ions":   # {ion: (i, di/dv)}: outputs come in (i, di) pairs
            return "{" + ", ".join(f'"{ion}": ({local[2 * k]}, {local[2 * k + 1]})'
                                   for k, ion in enumerate(self.ions)) + "}"
        body = ", ".join(f'"{k}": {n}' for k, n in zip(keys, local))
        if self.returns == "dict":
            return "{" + body + "}"
        body = ", ".join(f'"{k}": {n}' for k, n in zip(keys[:-1], local[:-1]))
        return "{" + body + "}, " + local[-1]


def _ident(name: str) -> str:
    """A NeuroML id as part of a Python identifier."""
    out = re.sub(r"\W", "_", name)
    return f"m_{out}" if out[:1].isdigit() else out


# ============================================================================ mechanisms

class MechanismCode:
    """The functions of one mechanism component: current, advance, init, derived values."""

    def __init__(self, mech: Mechanism, integration: str = "exact", erev_mode: str = ""):
        self.mech = mech
        self.integration = integration
        if self.forward_euler() and mech.kind == "cell":
            # a cell whose states are all its own integrates as jLEMS does (the data
            # jnml_neuron reproduces for these cells are jLEMS's): its update order too
            self.mech = mech = jlems_order(mech)
        self.sm: StepMap = discretize(mech)
        self.erev_mode = erev_mode              # "", or one of GHK_MODES: its own current
        self.fn = _ident(mech.name) + (f"_{erev_mode}" if erev_mode else "")
        self.binds = {py_name(n): p.path for n, p in mech.parameters.items()}
        self.states = [py_name(s) for s in self.sm.states]
        self.placement = [py_name(n) for n in mech.placement if n not in mech.parameters]
        self.functions: dict[str, Function] = {}

    # ---- integration jnml_neuron (see INTEGRATIONS)

    def forward_euler(self) -> bool:
        """jnml_neuron on a channel, a pool, or a point cell whose states are all its own
        (no v stepped as a node's): jNeuroML's ``q' = rate_q`` makes cnexp forward Euler.
        The same rule as the NEURON backend's (its emit.py ``forward_euler``)."""
        if self.integration != "jnml_neuron":
            return False
        if self.mech.kind == "cell":
            v = self.mech.states.get("v")
            return v is None or v.rhs is None
        return self.mech.kind in ("channel", "concentration")

    def lagged(self) -> bool:
        """jnml_neuron on a gated channel without kinetic scheme: jNeuroML's mods compute
        ``fopen`` (every quantity that depends on the gates) before the gates' update, so a
        step's current uses the gates of the step before (0 at the first step: NEURON's
        states before INITIAL sets them)."""
        return (self.forward_euler() and self.mech.kind == "channel" and not self.mech.kinetic
                and any(s.rhs is not None for s in self.mech.states.values()))

    def lag_states(self) -> list[str]:
        """The states whose previous values a lagged channel keeps (``lag_<state>``)."""
        return list(self.sm.states) if self.lagged() else []

    def next_values(self) -> dict[str, sympy.Expr]:
        """x[n+1] of every state: the discretize map, or forward Euler ``x + dt*f`` for the
        ODE states under :meth:`forward_euler` (kinetic schemes keep backward Euler, as
        nocmodl's ``sparse`` does in jNeuroML's mods too)."""
        if not self.forward_euler():
            return dict(self.sm.next)
        return {s: (symbol(s) + self.sm.dt * self.sm.rhs[s]
                    if self.sm.schemes[s] in ("exponential_euler", "forward_euler") else e)
                for s, e in self.sm.next.items()}

    def _lagged_current(self, expr) -> tuple[sympy.Expr, sympy.Expr]:
        """A lagged channel's current and its di/dv: the quantities that depend on the gates
        are held (ASSIGNED in the mod, so NEURON's difference quotient does not move them)
        and computed from ``lag_<state>`` with the present reads (they were computed after
        the previous step's solve, with the v and concentrations this step starts from)."""
        states = {symbol(s) for s in self.sm.states}
        derived = {symbol(n): d.expr for n, d in self.mech.derived.items()}
        held = {n for n in derived if self._inline(n).free_symbols & states}
        hold = {n: sympy.Symbol(f"_held_{n.name}") for n in held}
        defs = {n: (hold[n] if n in held else e) for n, e in derived.items()}
        for _ in range(len(defs) + 1):
            expr = expr.xreplace(defs)
        lag = {s: symbol(f"lag_{s.name}") for s in states}
        values = {hold[n]: self._inline(n).xreplace(lag) for n in held}
        di = almost_everywhere(sympy.diff(expr, symbol("v")))
        return expr.xreplace(values), di.xreplace(values)

    # ---- argument lists (sorted by where they come from, stable)

    def _reads_in(self, exprs) -> list[str]:
        used = set().union(*(sympy.sympify(e).free_symbols for e in exprs)) if exprs else set()
        names = {s.name for s in used}
        return [py_name(r) for r in self.mech.reads if r in names]

    def _place_in(self, exprs) -> list[str]:
        used = set().union(*(sympy.sympify(e).free_symbols for e in exprs)) if exprs else set()
        names = {py_name(s.name) for s in used}
        return [n for n in self.placement if n in names]

    # ---- functions

    def current(self) -> Function:
        """Channel: per ion, the current density (mA/cm2, outward) and its v-derivative."""
        if "current" not in self.functions:
            outs = []
            raw = [c.expr for c in self.mech.currents]
            for c, expr in zip(self.sm.currents, raw):
                ion = _ident(c.ion)
                if self.erev_mode:
                    expr = self._ghk_expr()
                if self.lagged():
                    i, di = self._lagged_current(expr)
                elif self.erev_mode:
                    i = self._inline(expr)
                    di = almost_everywhere(sympy.diff(i, symbol("v")))
                else:
                    i, di = c.expr, c.di_dv
                outs += [(f"i_{ion}", i), (f"di_{ion}", di)]
            exprs = [e for _, e in outs]
            args = self._reads_in(exprs) + self.states + self._place_in(exprs)
            if self.erev_mode:
                used = {x.name for e in exprs for x in e.free_symbols}
                args += [a for a in ("ghk_ci", "ghk_co", "ghk_celsius", "permeability", "gmax")
                         if a in used]
            args += [py_name(f"lag_{s}") for s in self.lag_states()]
            self.functions["current"] = Function(
                f"{self.fn}_current", f"{self.mech.name}: current density per ion "
                "(mA/cm2, outward) and its derivative in v.", _dedupe(args), self.binds,
                outs, "ions", [c.ion for c in self.sm.currents])
        return self.functions["current"]

    def advance(self, exclude: set[str] = frozenset(), v_new: bool = False) -> Function:
        """The discretize map (states at n -> n+1) then the mechanism's own clamps."""
        if "advance" not in self.functions:
            outs = [(s, e) for s, e in self.next_values().items() if s not in exclude]
            if v_new:   # point cell: the other states see v[n+1] (NEURON: after the solve)
                outs = [(n, e.xreplace({symbol("v"): symbol("v_new")})) for n, e in outs]
            outs = self._events_after(outs)
            exprs = [e for _, e in outs]
            args = ["dt"] + (["v_new"] if v_new else []) + self._reads_in(exprs)
            args += self.states + self._place_in(exprs)
            self.functions["advance"] = Function(
                f"{self.fn}_advance", f"{self.mech.name}: states one step on "
                f"({self._schemes()}).", _dedupe(args), self.binds, outs, "dict")
        return self.functions["advance"]

    def _ghk_expr(self) -> sympy.Expr:
        if len(self.mech.currents) != 1 or "fopen" not in self.mech.exposures:
            raise UnsupportedError(f"{self.erev_mode} placement of channel {self.mech.name}: "
                                   "needs one current and an exposed fopen")
        return _ghk_current(self.erev_mode, symbol(self.mech.exposures["fopen"]))

    def _schemes(self) -> str:
        if self.forward_euler():
            return "forward_euler as jNeuroML's NEURON export (integration jnml_neuron)" + (
                ", kinetic_backward_euler" if self.mech.kinetic else "")
        return _schemes(self.sm)

    def _inline(self, expr):
        """``expr`` with the derived quantities inlined (the discretize pass's definitions)."""
        if self.sm.raw is not None:
            return self.sm.raw.step.inline(expr)
        defs = {symbol(n): d.expr for n, d in self.mech.derived.items()}
        for _ in range(len(defs) + 1):
            expr = expr.xreplace(defs)
        return expr

    def _events_after(self, outs):
        """A mechanism's OnConditions on the new values, once per step, in document order
        (each sees the assignments of the ones before), as NEURON runs a current-less
        mechanism's BREAKPOINT after SOLVE (the NEURON backend's pool ``events``). A pool
        applies all of them (``t`` is t + dt there: e.g. caClamp's time windows); a channel
        only clamps (``c < 0 -> c = 0``): NEURON refuses any other, and so do we."""
        events = [e for e in self.sm.events if e.condition is not None and e.assign]
        if not events or self.mech.kind == "cell":
            return outs
        if self.mech.kind != "concentration":
            other = sorted({e.kind for e in events} - {"continuous"})
            if other:
                raise UnsupportedError(f"events (OnCondition, {', '.join(other)})"
                                       f" in {self.mech.kind} {self.mech.name}")
        result = dict(outs)
        for ev in events:
            now = {symbol(n): e for n, e in result.items()}
            cond = ev.condition.xreplace(now)
            assigned = {n: v.xreplace(now) for n, v in ev.assign.items()}
            for target, value in assigned.items():
                if target not in result:
                    raise UnsupportedError(f"an event of {self.mech.name} assigns "
                                           f"{target}, which is not a state it steps")
                result[target] = sympy.Piecewise((value, cond), (result[target], True))
        return list(result.items())

    def init(self) -> Function:
        if "init" not in self.functions:
            outs = [(s, self.sm.init[s]) for s in self.sm.states]
            exprs = [e for _, e in outs]
            args = self._reads_in(exprs) + self._place_in(exprs)
            self.functions["init"] = Function(
                f"{self.fn}_init", f"{self.mech.name}: initial states.", _dedupe(args),
                self.binds, outs, "dict")
        return self.functions["init"]

    def derived(self, name: str) -> Function:
        """A derived quantity (or any expression name) as a function of the state."""
        key = f"derived:{name}"
        if key not in self.functions:
            expr = self._inline(symbol(name))
            args = self._reads_in([expr]) + self.states + self._place_in([expr])
            self.functions[key] = Function(
                f"{self.fn}_{_ident(name)}", f"{self.mech.name}: {name}.", _dedupe(args),
                self.binds, [(f"out_{_ident(name)}", expr)])
        return self.functions[key]


def _ghk_current(mode: str, fopen: sympy.Expr) -> sympy.Expr:
    """A channelDensityGHK/GHK2 current as an outward density (mA/cm2), in the symbols
    ``v``, ``ghk_ci``, ``ghk_co`` (mM), ``ghk_celsius`` and ``permeability`` (cm/s, GHK) or
    ``gmax`` (S/cm2, GHK2); 0 where the outside concentration is not positive (NeuroML).

    GHK: iDensity (inward, A/m2) = -fopen P z F K v (ci - co e^(-K v))/(1 - e^(-K v)),
    K = z F/(R T), K v/(1 - e^(-K v)) = exprelr(-K v); P cm/s -> m/s (/100), A/m2 -> mA/cm2
    (/10), outward = -inward.  GHK2: iDensity = gmax fopen s (1 - ci/co e^(v/s)) exprelr(v/s)
    with s = 25 T/(2*293.15) mV."""
    v, ci, co = symbol("v"), symbol("ghk_ci"), symbol("ghk_co")
    kelvin = symbol("ghk_celsius") + sympy.Rational("273.15")
    if mode == "ghk":
        kv = _GHK_Z * _GHK_F * v / (1000 * _GHK_R * kelvin)
        i = (fopen * symbol("permeability") * _GHK_Z * _GHK_F * (ci - co * sympy.exp(-kv))
             * ExpRelr(-kv) / 1000)
    else:
        scale = 25 * kelvin / (2 * sympy.Rational("293.15"))
        x = v / scale
        i = -symbol("gmax") * fopen * scale * (1 - ci / co * sympy.exp(x)) * ExpRelr(x)
    return sympy.Piecewise((i, co > 0), (0, True))


class _Lazy:
    """A constant's name, created on first use (a piece's node array, only if needed)."""

    def __init__(self, make):
        self.make, self.name = make, None

    def __str__(self) -> str:
        if self.name is None:
            self.name = self.make()
        return self.name

    __format__ = lambda self, spec: format(str(self), spec)  # noqa: E731


#: Python text of a value that is the same at every node (a parameter or a number).
_SCALAR = re.compile(r'p\["[^"]*"\]|-?[0-9.e+-]+|CELSIUS')


def _num(v) -> str:
    """A float as the shortest text that reads back to the same float64."""
    v = float(v)
    if math.isinf(v):
        return "jnp.inf" if v > 0 else "-jnp.inf"
    return repr(v)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _schemes(sm: StepMap) -> str:
    kinds = sorted(set(sm.schemes.values()))
    return ", ".join(kinds) if kinds else "no states"


# ============================================================================ inputs

class InputCode:
    """An electrode input (pulse/sine/ramp generator, voltage clamp, DL variants).

    Evaluated like the BREAKPOINT of jNeuroML's mod for it: at ``t + dt/2`` with ``v[n]``,
    its LEMS OnConditions applied in order (the last true one wins), the value otherwise
    held.  Returns the current (into the cell) and its derivative in v."""

    def __init__(self, mech: Mechanism):
        self.mech = mech
        self.sm = discretize(mech)
        self.fn = _ident(mech.name)
        ode = [s for s, st in mech.states.items() if st.rhs is not None]
        if ode:
            raise UnsupportedError(f"input '{mech.name}' ({mech.component_type}) has "
                                   f"continuous dynamics ({', '.join(ode)}): only electrode "
                                   "inputs whose value is set by time conditions are supported")
        bad = [e for e in self.sm.events if e.kind not in ("port", "no-op", "flag", "time")
               or (e.condition is not None and symbol("v") in e.condition.free_symbols)]
        if bad:
            raise UnsupportedError(f"input '{mech.name}' ({mech.component_type}): an event "
                                   "condition depends on the state")
        exposed = [mech.exposures.get(n, n) for n in ("i", "I") if n in mech.exposures]
        if len(exposed) != 1:
            raise UnsupportedError(f"input '{mech.name}' ({mech.component_type}) exposes no "
                                   "current i (nA) or I (dimensionless)")
        self.var = exposed[0]
        self.dimensionless = "I" in mech.exposures and "i" not in mech.exposures

    def function(self) -> Function:
        x = symbol(self.var)
        value, dv = x, sympy.S.Zero
        for ev in self.sm.events:
            if ev.condition is None or self.var not in ev.assign:
                continue
            new = ev.assign[self.var]
            value = sympy.Piecewise((new, ev.condition), (value, True))
            dv = sympy.Piecewise((sympy.diff(new, symbol("v")), ev.condition), (dv, True))
        outs = [("value", value), ("d_dv", dv)]
        args = ["t", "v", py_name(self.var)]
        binds = {py_name(n): p.path for n, p in self.mech.parameters.items()}
        return Function(f"{self.fn}_input", f"{self.mech.name} ({self.mech.component_type}): "
                        f"{self.var} at time t (into the cell) and d/dv.", args, binds, outs,
                        )


# ============================================================================ the plan

@dataclass
class CellBlock:
    """One morphological cell of a population, as global node indices."""

    population: str
    index: int
    cell: Cell
    comp: Compartments
    base: int            # global index of local node 1
    root: int

    def g(self, local: int) -> int:
        return self.root if local == 0 else self.base + local - 1


@dataclass
class Piece:
    """One placement's share of a channel group: positions start..start+len(nodes)."""

    placement: Placement
    start: int
    nodes: list[int]


@dataclass
class ChannelGroup:
    """Every placement of one channel on one cell type (and ion): one vectorised call, so
    the compiled step holds each channel's code once, however many groups place it."""

    key: str                              # state key: CELL/CHANNEL (/ION if needed)
    cell: Cell
    code: MechanismCode
    ion: str
    pieces: list[Piece] = field(default_factory=list)

    @property
    def nodes(self) -> list[int]:
        return [n for pc in self.pieces for n in pc.nodes]

    def piece(self, placement_id: str) -> Piece | None:
        return next((pc for pc in self.pieces if pc.placement.id == placement_id), None)


@dataclass
class PoolGroup:
    key: str                              # CELL/SPECIES/GROUP
    cell: Cell
    species: Species
    code: MechanismCode
    nodes: list[int]


@dataclass
class PointGroup:
    key: str                              # population id
    population: str
    code: MechanismCode
    size: int
    implicit_v: bool


@dataclass
class InputGroup:
    key: str                              # input component id, @population for point cells
    component: str
    code: InputCode
    placements: list = field(default_factory=list)   # (InputPlacement, target)


class Plan:
    """Where everything lives: nodes, mechanism instances, inputs, recordings."""

    def __init__(self, model: Model, sim: Simulation, integration: str = "exact"):
        self.model, self.sim = model, sim
        self.integration = integration          # INTEGRATIONS
        self.celsius = sim.temperature_degC if sim.temperature_degC is not None \
            else NEURON_CELSIUS
        self.blocks: list[CellBlock] = []
        self.points: dict[str, PointGroup] = {}
        self.codes: dict[str, MechanismCode] = {}
        self._populations()
        self._tree()
        self.channels = self._channels()
        self.pools = self._pools()
        self.inputs = self._inputs()

    # ---- cells

    def code(self, name: str, erev_mode: str = "") -> MechanismCode:
        key = f"{name}:{erev_mode}" if erev_mode else name
        if key not in self.codes:
            self.codes[key] = MechanismCode(self.model.mechanisms[name], self.integration,
                                            erev_mode)
        return self.codes[key]

    def _populations(self) -> None:
        comps: dict[str, Compartments] = {}
        morph = []
        for pop in self.sim.populations.values():
            if pop.component in self.model.cells:
                cell = self.model.cells[pop.component]
                comp = comps.setdefault(cell.id, build_compartments(cell))
                indices = [i.id for i in pop.instances] or list(range(pop.size))
                morph += [(pop.id, i, cell, comp) for i in indices]
            elif pop.component in self.model.mechanisms:
                self._point_population(pop)
            else:
                reason = [u.reason for u in self.model.unsupported if u.id == pop.component]
                raise UnsupportedError(f"population '{pop.id}' of '{pop.component}': "
                                       + (reason[0] if reason else "not a cell"))
        base = len(morph)
        for k, (pop, index, cell, comp) in enumerate(morph):
            self.blocks.append(CellBlock(pop, index, cell, comp, base, k))
            base += comp.n - 1

    def _point_population(self, pop) -> None:
        mech = self.model.mechanisms[pop.component]
        if mech.kind != "cell":
            raise UnsupportedError(f"population '{pop.id}' of {mech.component_type} "
                                   f"'{mech.name}': not a cell")
        code = self.code(mech.name)
        implicit = "v" in mech.states and mech.states["v"].rhs is not None
        self.points[pop.id] = PointGroup(pop.id, pop.id, code, pop.size, implicit)

    def _tree(self) -> None:
        n_roots = len(self.blocks)
        n = n_roots + sum(b.comp.n - 1 for b in self.blocks)
        self.n_nodes, self.n_roots = n, n_roots
        self.parent = np.zeros(n, dtype=np.int64)
        self.area = np.zeros(n)
        self.membrane = np.zeros(n, dtype=bool)
        self.ri_prev = np.zeros(n)
        self.ri_left = np.ones(n)       # roots: unused, 1 keeps 1/r finite
        self.path = np.zeros(n)
        self.ra_src: list = [None] * n
        self.cm_src: list = [0.0] * n
        self.v0_src: list = [None] * n
        self.node_label: list[str] = [""] * n
        for b in self.blocks:
            c = b.comp
            for i in range(c.n):
                g = b.g(i)
                self.parent[g] = g if i == 0 else b.g(int(c.parent[i]))
                self.area[g], self.membrane[g] = c.area[i], c.membrane[i]
                if i:
                    self.ri_prev[g], self.ri_left[g] = c.ri_prev[i], c.ri_left[i]
                self.path[g] = c.path_length[i]
                self.ra_src[g] = c.ra[int(c.section[i])]
                self.cm_src[g] = 0.0 if c.cm[i] is None else c.cm[i]
                self.v0_src[g] = c.init_v[i]
                self.node_label[g] = _node_label(b, i)

    def cell_block(self, population: str, index: int) -> CellBlock | None:
        for b in self.blocks:
            if b.population == population and b.index == index:
                return b
        return None

    # ---- mechanisms on cells

    def _channels(self) -> list[ChannelGroup]:
        placed: dict[tuple, dict[str, list[int]]] = {}     # (cell, mechanism, ion) -> ...
        placements: dict[str, Placement] = {}
        cells: dict[str, Cell] = {}
        for b in self.blocks:
            for pl in b.cell.placements:
                mode = pl.erev_mode if pl.erev_mode in GHK_MODES else ""
                nodes = placed.setdefault((b.cell.id, pl.mechanism, placement_ion(pl), mode),
                                          {})
                nodes.setdefault(pl.id, []).extend(b.g(i) for i in placement_nodes(b.comp, pl))
                placements[f"{b.cell.id}/{pl.id}"] = pl
                cells[b.cell.id] = b.cell
        ions: dict[tuple, set] = {}
        for cell, mech, ion, _mode in placed:
            ions.setdefault((cell, mech), set()).add(ion)
        groups = []
        for (cell, mech, ion, mode), by_placement in placed.items():
            key = f"{cell}/{mech}" + (f"/{ion}" if len(ions[(cell, mech)]) > 1 else "")
            key += f"/{mode}" if mode else ""      # GHK placements: a current of their own
            g = ChannelGroup(key, cells[cell], self.code(mech, mode), ion)
            for pid, nodes in by_placement.items():
                if nodes:
                    g.pieces.append(Piece(placements[f"{cell}/{pid}"], len(g.nodes), nodes))
            if g.pieces:
                groups.append(g)
        return groups

    def _pools(self) -> list[PoolGroup]:
        groups: dict[str, PoolGroup] = {}
        for b in self.blocks:
            for sp in b.cell.species:
                key = f"{b.cell.id}/{sp.id}/{sp.group}"
                code = self.code(sp.concentration_model)
                if key not in groups:
                    groups[key] = PoolGroup(key, b.cell, sp, code, [])
                present = set(sp.segments)
                groups[key].nodes += [b.g(i) for i in range(b.comp.n)
                                      if b.comp.membrane[i] and b.comp.segment[i] in present]
        return [g for g in groups.values() if g.nodes]

    def pool_sources(self, ion: str, nodes: list[int]) -> list[tuple[PoolGroup, int] | None]:
        """For each node, the pool of ``ion`` there and the node's position in it (None
        where no pool manages the ion: NEURON leaves the concentration at its default)."""
        where = {}
        for pool in self.pools:
            if pool.species.ion == ion:
                for k, n in enumerate(pool.nodes):
                    where.setdefault(n, (pool, k))
        return [where.get(n) for n in nodes]

    # ---- inputs

    def _inputs(self) -> list[InputGroup]:
        """Inputs grouped by component and, for point cells, by population (each group is
        one vectorised call)."""
        groups: dict[str, InputGroup] = {}
        codes: dict[str, InputCode] = {}
        for ip in self.sim.inputs:
            if ip.input not in self.model.mechanisms:
                raise UnsupportedError(f"input '{ip.input}': {self._why(ip.input)}")
            if ip.input not in codes:
                codes[ip.input] = InputCode(self.model.mechanisms[ip.input])
            target = self._input_target(ip, codes[ip.input])
            key = ip.input if target[0] == "node" else f"{ip.input}@{target[1]}"
            if key not in groups:
                groups[key] = InputGroup(key, ip.input, codes[ip.input])
            groups[key].placements.append((ip, target))
        return list(groups.values())

    def _why(self, comp_id: str) -> str:
        reason = [u.reason for u in self.model.unsupported if u.id == comp_id]
        return reason[0] if reason else "not an input with equations"

    def _input_target(self, ip, code: InputCode):
        block = self.cell_block(ip.population, ip.cell_index)
        if block is not None:
            if code.dimensionless:
                raise UnsupportedError(f"dimensionless input '{ip.input}' on the "
                                       f"morphological cell {block.cell.id}")
            return ("node", block.g(block.comp.node_of_segment(block.cell, ip.segment_id,
                                                               ip.fraction_along)))
        pop = self.sim.populations[ip.population]
        position = [i.id for i in pop.instances].index(ip.cell_index) if pop.instances \
            else ip.cell_index
        return ("point", ip.population, position)


def placement_ion(pl: Placement) -> str:
    """The ion a density's current and Nernst potential belong to (ir/ion_binding.py: a
    channelDensityNernstCa2's is the second calcium pool's, ``ca2``)."""
    return density_ion(pl.kind, pl.ion)


def _read_ion(g: ChannelGroup, ion: str) -> str:
    """The pool a channel's ``<ion>Conc`` read comes from: a NernstCa2 density's ``caConc``
    is its ``ca2`` pool's (the NEURON backend binds it to ca2i)."""
    ca2 = {is_second_pool_density(pc.placement.kind) for pc in g.pieces}
    if ion != "ca" or ca2 == {False}:
        return ion
    if len(ca2) > 1:
        raise UnsupportedError(f"{g.key}: reads caConc on channelDensityNernstCa2 and other "
                               "densities of one ion (ca2 and ca pools at once)")
    return "ca2"


def _node_label(b: CellBlock, i: int) -> str:
    c = b.comp
    if not c.membrane[i]:
        where = "root" if i == 0 else f"{c.sections[int(c.section[i])].name}(1)"
        return f"{b.population}[{b.index}] {where}"
    sec = int(c.section[i])
    nodes = c.section_nodes[sec]
    j = nodes.index(i)
    x = (j + 0.5) / (len(nodes) - 1)
    return f"{b.population}[{b.index}] {c.sections[sec].name}({x:g})"


# ============================================================================ the module

#: Index constants emitted as a slice when their nodes are a contiguous run (mechanism and
#: input placements, read with ``x[N]`` and accumulated with ``rt.add_rows``).
_SLICED = ("N_CH", "N_POOL", "N_IN")


class ModuleWriter:
    """Turns a Plan into the pieces the module template prints (constants, functions and the
    bodies of ``init``, ``_advance``, ``_events`` and ``_record``)."""

    def __init__(self, plan: Plan, jacobian: str):
        self.plan = plan
        self.jacobian = jacobian
        self.consts: list[str] = []
        self.const_names: dict[str, str] = {}     # array text -> constant name
        self.used: dict[str, Function] = {}
        self.extra: list[str] = []                # extra module-level functions (text)

    # ---- helpers -----------------------------------------------------------------------

    def fn(self, f: Function) -> Function:
        self.used.setdefault(f.name, f)
        return self.used[f.name]

    def nodes(self, name: str, values: list[int], comment: str = "") -> str:
        """An index array constant (shared when the same indices recur for the same kind
        of thing: the name's prefix)."""
        body = (name.rstrip("0123456789"), ", ".join(str(int(v)) for v in values))
        if body in self.const_names:
            return self.const_names[body]
        self.const_names[body] = name
        note = f"  # {comment}" if comment else ""
        run = [int(v) for v in values]
        if name.startswith(_SLICED) and run and run == list(range(run[0], run[0] + len(run))):
            # a contiguous run of nodes: a slice indexes without gather or scatter
            self.consts.append(f"{name} = slice({run[0]}, {run[0] + len(run)}){note}")
        else:
            self.consts.append(f"{name} = np.array([{body[1]}], dtype=np.int64){note}")
        return name

    def array(self, name: str, values, comment: str = "") -> str:
        body = ", ".join(_num(v) for v in np.asarray(values, dtype=float).tolist())
        note = f"  # {comment}" if comment else ""
        self.consts.append(f"{name} = np.array([{body}]){note}")
        return name

    @staticmethod
    def source(src) -> str:
        """A Parameter (tunable: read from ``p``) or a number."""
        if src is None:
            return "0.0"
        if isinstance(src, (int, float)):
            return _num(src)
        return f'p["{src.path}"]'

    def per_node(self, sources: list, name: str) -> str:
        """Per-node values from a few distinct sources: a table and an index array."""
        table, index = [], []
        for s in sources:
            text = self.source(s)
            if text not in table:
                table.append(text)
            index.append(table.index(text))
        if len(table) == 1:
            return f"jnp.full(N_NODES, {table[0]})"
        idx = self.nodes(f"{name}_INDEX", index)
        return f"jnp.stack([{', '.join(table)}])[{idx}]"

    @staticmethod
    def call(f: Function, values: dict[str, str], fixed: tuple = ("p",)) -> str:
        missing = [a for a in f.args if a not in values]
        if missing:
            raise UnsupportedError(f"{f.name}: cannot supply {', '.join(missing)}")
        args = list(fixed) + [f"{a}={values[a]}" for a in f.args]
        return f"{f.name}({', '.join(args)})"

    # ---- the parts ---------------------------------------------------------------------

    def parts(self) -> dict:
        plan = self.plan
        self._tree_constants()
        self.groups = {}
        for k, g in enumerate(plan.channels):
            self.groups[g.key] = self.nodes(f"N_CH{k}", g.nodes, f"{g.key} ({g.code.mech.name})")
        for k, g in enumerate(plan.pools):
            self.groups[g.key] = self.nodes(f"N_POOL{k}", g.nodes, f"{g.key} ({g.code.mech.name})")
        self.input_targets = self._input_constants()
        self.ion_records = self._recorded_ions()
        init = self._init()
        currents = self._currents()
        update = self._update()
        events, spike_names = self._events()
        record, outputs = self._record()
        functions = [f.render() for f in sorted(self.used.values(), key=lambda f: f.name)]
        return dict(consts=self.consts, functions=functions + self.extra, init=init,
                    currents=currents, update=update, events=events, record=record,
                    outputs=outputs, spikes=spike_names, n_nodes=plan.n_nodes,
                    n_roots=plan.n_roots, has_tree=plan.n_nodes > 0,
                    node_table=self._node_table())

    # ---- the tree ----------------------------------------------------------------------

    def _tree_constants(self) -> None:
        plan = self.plan
        if not plan.n_nodes:
            return
        self.nodes("PARENT", plan.parent, "parent node (a root: itself)")
        self.array("AREA", plan.area, "um2; 100 for nodes without membrane (NEURON)")
        self.array("RI_PREV", plan.ri_prev, "right half of the previous segment, "
                   "sum dx/(d1 d2) (1/um)")
        self.array("RI_LEFT", plan.ri_left, "this segment's left half (roots: unused)")
        self.array("PATH_LENGTH", plan.path, "um from the root (inhomogeneous densities)")
        self.ra = self.per_node(plan.ra_src, "RA")
        self.cm = self.per_node(plan.cm_src, "CM")
        self.v0 = self.per_node(plan.v0_src, "V0")

    def _node_table(self) -> list[str]:
        plan = self.plan
        rows = [f"{i:5d}  {plan.parent[i]:5d}  "
                f"{(f'{plan.area[i]:.6g}' if plan.membrane[i] else '-'):>10}  "
                f"{plan.node_label[i]}" for i in range(plan.n_nodes)]
        if len(rows) > 60:
            rows = rows[:30] + [f"  ... ({len(rows) - 60} more)"] + rows[-30:]
        return rows

    # ---- inputs ------------------------------------------------------------------------

    def _input_constants(self) -> dict:
        out = {}
        for k, g in enumerate(self.plan.inputs):
            nodes = [t[1] for _, t in g.placements if t[0] == "node"]
            points = [(t[1], t[2]) for _, t in g.placements if t[0] == "point"]
            weights = [ip.weight for ip, _ in g.placements]
            w = self.array(f"W_IN{k}", weights, f"{g.key}: weight of each placement")
            if nodes:
                out[g.key] = ("node", self.nodes(f"N_IN{k}", nodes, f"{g.key}: target nodes"), w)
            else:
                pops = sorted({pop for pop, _ in points})
                pos = self.nodes(f"P_IN{k}", [i for _, i in points], f"{g.key}: target cells")
                out[g.key] = ("point", pops[0], pos, w)
        return out

    # ---- init --------------------------------------------------------------------------

    def _init(self) -> list[str]:
        plan = self.plan
        lines = []
        if plan.n_nodes:
            lines += ["v = " + self.v0, 's = {"v": v}']
        else:
            lines += ["s = {}"]
        for g in plan.pools:
            f = self.fn(g.code.init())
            values = self._pool_reads(g, "init")
            lines.append(f'# {g.key}: {g.code.mech.name} ({g.code.mech.component_type})')
            lines.append(f's["{g.key}"] = rt.broadcast({self.call(f, values)}, '
                         f'{len(g.nodes)})')
        for g in plan.channels:
            if not g.code.sm.states:
                continue
            f = self.fn(g.code.init())
            values = self._channel_values(g, "init")
            lines.append(f's["{g.key}"] = rt.broadcast({self.call(f, values)}, '
                         f'{len(g.nodes)})')
            if g.code.lagged():
                lines.append("# jnml_neuron: the gates before INITIAL set them (NEURON: 0)")
                lines.append(f's["{g.key}:lag"] = {{k: jnp.zeros({len(g.nodes)}) '
                             f'for k in s["{g.key}"]}}')
        for g in plan.inputs:
            x = g.code.var
            value = ModuleWriter._expr_text(g.code.sm.init[x], g.code)
            lines.append(f's["input:{g.key}"] = jnp.full({len(g.placements)}, {value}, '
                         'dtype=jnp.float64)')
        for g in plan.points.values():
            f = self.fn(g.code.init())
            values = {a: "0.0" for a in f.args}
            values.update(self._point_reads(g, "init"))
            lines.append(f's["{g.key}"] = rt.broadcast({self.call(f, values)}, {g.size})')
        if self.ion_records:
            lines += self._initial_ion_currents()
        lines.append("return rt.float64(s)")
        return lines

    def _recorded_ions(self) -> list[str]:
        """The ions whose cell-level current (``iCa``, ``iCa2``) an output records: the
        module keeps their current densities in the state (``"ion:ca"``), as NEURON keeps
        ``ica``: the value of the last current evaluation."""
        ions = set()
        for of in self.plan.sim.outputs:
            for col in of.columns:
                ref = col.quantity
                if ref.path or ref.variable not in CELL_ION_CURRENTS:
                    continue
                ion = CELL_ION_CURRENTS[ref.variable]
                block = self.plan.cell_block(ref.population, ref.index)
                if block is None:           # a point cell's own exposure, if it has one
                    continue
                if not any(g.species.ion == ion and g.cell is block.cell
                           for g in self.plan.pools):
                    raise UnsupportedError(f"cannot record '{ref.text}': no cell with a "
                                           f"{ion} pool for {ref.variable} to come from")
                ions.add(ion)
        return sorted(ions)

    def _initial_ion_currents(self) -> list[str]:
        """``s["ion:ION"]`` at t = 0: NEURON's finitialize evaluates the currents once after
        INITIAL (with jnml_neuron's lagged gates at 0: no gated current), so a recorded
        ``iCa`` starts at the current of the initial state."""
        lines = ["# recorded ion currents at t = 0 (finitialize evaluates the currents)",
                 "t_mid, dt = 0.0, DT_MS"]
        for ion in self.ion_records:
            name = f"ion_{_ident(ion)}"
            lines.append(f"{name} = jnp.zeros(N_NODES)")
            lines += [self._add_ion_current(g, self._channel_current(g))
                      for g in self.plan.channels if g.ion == ion]
            lines.append(f's["ion:{ion}"] = {name}')
        return lines

    def _channel_current(self, g: ChannelGroup, v: str | None = None) -> str:
        """The call of g's current function, ``{ion: (i, di/dv)}`` on its nodes (at the
        membrane potential ``v`` if given)."""
        values = self._channel_values(g, "current")
        return self.call(self.fn(g.code.current()), values if v is None else dict(values, v=v))

    def _add_ion_current(self, g: ChannelGroup, c: str) -> str:
        """Add the total of g's currents ``c`` to its ion's current density."""
        name = f"ion_{_ident(g.ion)}"
        return f"{name} = rt.add_rows({name}, {self.groups[g.key]}, rt.total_current({c}))"

    @staticmethod
    def _expr_text(expr, code) -> str:
        names = {py_name(n): f'p["{p.path}"]' for n, p in code.mech.parameters.items()}
        return JaxPrinter({n: names.get(py_name(n), py_name(n))
                           for n in (s.name for s in sympy.sympify(expr).free_symbols)}
                          ).doprint(expr)

    # ---- value resolution ----------------------------------------------------------------

    def _channel_values(self, g: ChannelGroup, phase: str) -> dict[str, str]:
        """Python text for every argument a channel function may take, in ``phase``."""
        N = self.groups[g.key]
        state = {"current": "s", "update": "out", "init": "s"}[phase]
        v = {"current": f"v[{N}]", "update": f"v_new[{N}]", "init": f"v[{N}]"}[phase]
        t = {"current": "t_mid", "update": "t_new", "init": "0.0"}[phase]
        values = {"v": v, "t": t, "temperature": "CELSIUS", "dt": "dt"}
        if phase != "init":
            values.update({py_name(x): f's["{g.key}"]["{x}"]' for x in g.code.sm.states})
        if phase == "current":
            values.update({py_name(f"lag_{x}"): f's["{g.key}:lag"]["{x}"]'
                           for x in g.code.lag_states()})
        if g.code.erev_mode:
            values.update(self._ghk_values(g, state))
        else:
            values["gmax"] = self._per_piece(g, "gmax", lambda pc, n: self._gmax(g, pc, n))
            values["erev"] = self._per_piece(g, "erev",
                                             lambda pc, n: self._erev(g, pc, n, state))
        extra = {name for pc in g.pieces for name in pc.placement.parameters} - {
            "condDensity", "erev", "number", "permeability"}
        for name in sorted(extra | {"vShift"}):    # vShift: 0 where a placement has none
            values[py_name(name)] = self._per_piece(
                g, name, lambda pc, n: self.source(pc.placement.parameters.get(name, 0.0)))
        for read in g.code.mech.reads:
            if read.endswith("Conc") and py_name(read) not in values:
                values[py_name(read)] = self._concentration(
                    g.key, g.nodes, _read_ion(g, read[:-4]), state, "concentration")
        return values

    def _ghk_values(self, g: ChannelGroup, state: str) -> dict[str, str]:
        """The arguments of a GHK/GHK2 current: the ion's concentrations on the group's
        nodes (pools, else NEURON's defaults), the temperature, permeability or gmax."""
        values = {"ghk_celsius": "CELSIUS"}
        for arg, which in (("ghk_ci", "concentration"), ("ghk_co", "extConcentration")):
            values[arg] = self._concentration(g.key, g.nodes, g.ion, state, which)
        if g.code.erev_mode == "ghk":
            def permeability(pc, n):
                pl = pc.placement
                if "permeability" in pl.inhomogeneous:
                    raise UnsupportedError(f"{pl.kind} '{pl.id}': an inhomogeneous "
                                           "permeability in the JAX backend")
                if "permeability" not in pl.parameters:
                    raise UnsupportedError(f"{pl.kind} '{pl.id}': no permeability")
                return self.source(pl.parameters["permeability"])
            values["permeability"] = self._per_piece(g, "permeability", permeability)
        else:
            values["gmax"] = self._per_piece(g, "gmax", lambda pc, n: self._gmax(g, pc, n))
        return values

    def _per_piece(self, g: ChannelGroup, what: str, text) -> str:
        """A value per node of the group from each placement's own (``text(piece, N)``,
        N the name of the piece's node array): one value, a table, or a concatenation."""
        def nodes_of(k, pc):
            return lambda: self.nodes(f"N_{_ident(g.key)}_{k}", pc.nodes,
                                      f"{g.key}: {pc.placement.id}")
        texts = [text(pc, _Lazy(nodes_of(k, pc))) for k, pc in enumerate(g.pieces)]
        if len(set(texts)) == 1:
            return texts[0]
        if all(_SCALAR.fullmatch(t) for t in texts):
            table = list(dict.fromkeys(texts))
            index = [table.index(t) for t, pc in zip(texts, g.pieces) for _ in pc.nodes]
            idx = self.nodes(f"I_{_ident(g.key)}_{_ident(what)}", index,
                             f"{g.key}: {what} of each node")
            return f"jnp.stack([{', '.join(table)}])[{idx}]"
        parts = [f"jnp.broadcast_to({t}, ({len(pc.nodes)},))" for t, pc in zip(texts, g.pieces)]
        return f"jnp.concatenate([{', '.join(parts)}])"

    def _gmax(self, g: ChannelGroup, pc: Piece, N) -> str:
        pl = pc.placement
        if "condDensity" in pl.inhomogeneous:
            return self._inhomogeneous(g, pl, pl.inhomogeneous["condDensity"], N)
        if pl.kind == "channelPopulation":
            cond = g.code.mech.parameters["conductance"]
            # a count of channels at one node: density = number * g / area (S/cm2)
            return f'p["{pl.parameters["number"].path}"] * p["{cond.path}"] * 100.0 / AREA[{N}]'
        if "condDensity" not in pl.parameters:
            raise UnsupportedError(f"{pl.kind} '{pl.id}': no condDensity")
        return self.source(pl.parameters["condDensity"])

    def _inhomogeneous(self, g: ChannelGroup, pl: Placement, inh, N) -> str:
        var = inh.parameter.variable
        binds = {py_name(n): prm.path for n, prm in inh.constants.items()}
        expr = sympy.Float(inh.factor) * inh.expr
        f = Function(f"_gmax_{_ident(g.cell.id)}_{_ident(pl.id)}", f"{pl.id}: conductance "
                     "density (S/cm2) "
                     f"along the path length x (um): {inh.text} (SI) times {inh.factor:g}.",
                     ["x"], binds, [("gmax", expr.xreplace({symbol(var): symbol("x")}))],
                     )
        self.fn(f)
        shift = inh.parameter.translation_start
        x = f"PATH_LENGTH[{N}]" + (f" - {_num(shift)}" if shift else "")
        return f"{f.name}(p, x={x})"

    def _erev(self, g: ChannelGroup, pc: Piece, N, state: str) -> str:
        pl = pc.placement
        if pl.erev_mode == "fixed":
            return self.source(pl.parameters["erev"])
        if pl.erev_mode == "nernst":
            ion = placement_ion(pl)
            if ion not in VALENCE:
                raise UnsupportedError(f"Nernst potential of ion '{ion}' (valence unknown)")
            key = f"{g.cell.id}/{pl.id}"
            ci = self._concentration(key, pc.nodes, ion, state, "concentration")
            co = self._concentration(key, pc.nodes, ion, state, "extConcentration")
            return f"rt.nernst({ci}, {co}, {VALENCE[ion]}, CELSIUS)"
        raise UnsupportedError(f"{pl.kind} '{pl.id}': reversal potential mode {pl.erev_mode}")

    def _concentration(self, who: str, nodes: list[int], ion: str, state: str,
                       which: str) -> str:
        """The concentration of ``ion`` (inside, or outside for ``extConcentration``) at
        ``nodes``: from the pools that manage it, NEURON's default elsewhere."""
        sources = self.plan.pool_sources(ion, nodes)
        default = NEURON_CONC0.get(ion, (None, None))[which == "extConcentration"]
        if None in sources and default is None:
            raise UnsupportedError(f"{who} reads the {which} of '{ion}', which no "
                                   "concentration model manages on all its nodes")
        pools = list(dict.fromkeys(src[0].key for src in sources if src is not None))
        if not pools:
            return _num(default)
        by_key = {src[0].key: src[0] for src in sources if src is not None}
        arrays = []
        for key in pools:
            exposed = by_key[key].code.mech.exposures.get(which, which)
            if exposed not in by_key[key].code.mech.states:
                raise UnsupportedError(f"pool {key} has no state '{which}'")
            arrays.append(f'{state}["{key}"]["{exposed}"]')
        offsets = {key: sum(len(by_key[k].nodes) for k in pools[:i])
                   for i, key in enumerate(pools)}
        total = sum(len(by_key[k].nodes) for k in pools)
        index = [total if src is None else offsets[src[0].key] + src[1] for src in sources]
        P = self.nodes(f"P_{_ident(who)}_{_ident(ion)}", index, f"{who}: its {ion} pools")
        if len(arrays) == 1 and None not in sources:
            return f"{arrays[0]}[{P}]"
        if None in sources:
            arrays.append(f"jnp.full(1, {_num(default)})")
        return f"jnp.concatenate([{', '.join(arrays)}])[{P}]"

    def _pool_reads(self, g: PoolGroup, phase: str) -> dict[str, str]:
        N = self.groups[g.key]
        sp = g.species
        values = {"surfaceArea": f"AREA[{N}]", "temperature": "CELSIUS", "dt": "dt",
                  "t": {"update": "t_new", "init": "0.0"}.get(phase, "t_mid"),
                  "v": {"update": f"v_new[{N}]"}.get(phase, f"v[{N}]")}
        for name, param in sp.parameters.items():
            values[py_name(name)] = self.source(param)
        ion_read = "i" + sp.ion[:1].upper() + sp.ion[1:]
        values[py_name(ion_read)] = (f"-ion_{_ident(sp.ion)}[{N}] * AREA[{N}] * 0.01"
                                     if phase == "update" else "0.0")
        if phase == "update":
            values.update({py_name(x): f's["{g.key}"]["{x}"]' for x in g.code.sm.states})
        return values

    def _point_reads(self, g: PointGroup, phase: str) -> dict[str, str]:
        values = {"temperature": "CELSIUS", "dt": "dt",
                  "t": {"update": "t_new", "init": "0.0"}.get(phase, "t_mid")}
        for read in g.code.mech.reads:
            if read.startswith("synapses_"):
                name = f"syn_{_ident(g.key)}_{read[len('synapses_'):]}"
                values[py_name(read)] = name if phase != "init" else "0.0"
                values[f"d_{py_name(read)}_dv"] = f"d{name}" if phase != "init" else "0.0"
        if phase != "init":
            values.update({py_name(x): f's["{g.key}"]["{x}"]' for x in g.code.sm.states})
        return values

    # ---- currents (phase 1) --------------------------------------------------------------

    def _currents(self) -> list[str]:
        plan = self.plan
        lines = []
        ions = sorted({g.species.ion for g in plan.pools})
        if plan.n_nodes:
            lines += ["i_m = jnp.zeros(N_NODES)  # membrane current density, mA/cm2, outward",
                      "g_m = jnp.zeros(N_NODES)  # its derivative in v, S/cm2"]
            lines += [f"ion_{_ident(ion)} = jnp.zeros(N_NODES)  # {ion} current (mA/cm2)"
                      for ion in ions]
        for g in plan.channels:
            N = self.groups[g.key]
            lines.append(f"# {g.key}: {g.code.mech.name} ({g.code.mech.component_type}) "
                         f"on {len(g.nodes)} node(s)")
            if self.jacobian == "neuron":
                lines.append(f"c = rt.neuron_didv(lambda vv: {self._channel_current(g, 'vv')}, "
                             f"v[{N}])")
            else:
                lines.append(f"c = {self._channel_current(g)}")
            lines.append(f"i_m, g_m = rt.add_currents(i_m, g_m, {N}, c)")
            if g.ion in ions:
                lines.append(self._add_ion_current(g, "c"))
        for ion in self.ion_records:   # a recorded iCa: the current of this step (NEURON's ica)
            lines.append(f'out["ion:{ion}"] = ion_{_ident(ion)}')
        for g in plan.points.values():
            for read in g.code.mech.reads:
                if read.startswith("synapses_"):
                    name = f"syn_{_ident(g.key)}_{read[len('synapses_'):]}"
                    lines += [f"{name} = jnp.zeros({g.size})",
                              f"d{name} = jnp.zeros({g.size})"]
        for k, g in enumerate(plan.inputs):
            lines += self._input_current(g)
        return lines

    def _input_current(self, g: InputGroup) -> list[str]:
        f = self.fn(g.code.function())
        target = self.input_targets[g.key]
        held = f's["input:{g.key}"]'
        lines = [f"# input {g.key} ({g.code.mech.component_type}) at t + dt/2"]
        if target[0] == "node":
            _, N, w = target
            lines.append(f"x, dx = {self.call(f, {'t': 't_mid', 'v': f'v[{N}]', py_name(g.code.var): held})}")
            lines.append(f'out["input:{g.key}"] = x')
            lines.append(f"i_m = rt.add_rows(i_m, {N}, -{w} * x * 100.0 / AREA[{N}])"
                         "  # electrode: nA into the cell")
            lines.append(f"g_m = rt.add_rows(g_m, {N}, -{w} * dx * 100.0 / AREA[{N}])")
            return lines
        _, pop, P, w = target
        group = self.plan.points[pop]
        reads = [r for r in group.code.mech.reads if r.startswith("synapses_")]
        var = g.code.var
        read = f"synapses_{var}"
        if read not in reads:
            raise UnsupportedError(f"input '{g.key}' gives {var}, but cell "
                                   f"{group.code.mech.name} reads {reads or 'no input'}")
        v = f's["{pop}"]["v"][{P}]' if "v" in group.code.mech.states else "0.0"
        name = f"syn_{_ident(pop)}_{var}"
        lines.append(f"x, dx = {self.call(f, {'t': 't_mid', 'v': v, py_name(var): held})}")
        lines.append(f'out["input:{g.key}"] = x')
        lines.append(f"{name} = {name}.at[{P}].add({w} * x)")
        lines.append(f"d{name} = d{name}.at[{P}].add({w} * dx)")
        return lines

    # ---- voltage solve and state updates (phases 2, 3) -------------------------------------

    def _update(self) -> list[str]:
        plan = self.plan
        lines = []
        if plan.n_nodes:
            lines += [
                "# -- implicit step of the cable equation (nrn_lhs/nrn_rhs, nrn_solve, update)",
                "a, b = _axial(p)",
                "d = g_m + _cm(p) * (0.001 / dt)  # nrn_cap_jacob: cm/dt (S/cm2)",
                "d, rhs = rt.tree_matrix(PARENT, a, b, N_ROOTS, v, d, -i_m)",
                "v_new = v + rt.hines_solve(PARENT, a, b, d, rhs, N_ROOTS)",
                'out["v"] = v_new',
                "# -- states with v(t + dt) (nonvint): pools before the channels reading them"]
            self.extra += [self._axial_function(), self._cm_function()]
        for g in plan.pools:
            f = self.fn(g.code.advance())
            lines.append(f"out[\"{g.key}\"] = rt.broadcast("
                         f"{self.call(f, self._pool_reads(g, 'update'))}, {len(g.nodes)})")
        for g in plan.channels:
            if not g.code.sm.states:
                continue
            f = self.fn(g.code.advance())
            lines.append(f"out[\"{g.key}\"] = rt.broadcast("
                         f"{self.call(f, self._channel_values(g, 'update'))}, {len(g.nodes)})")
            if g.code.lagged():   # jnml_neuron: the next step's current uses these gates
                lines.append(f'out["{g.key}:lag"] = s["{g.key}"]')
        for g in plan.points.values():
            lines += self._point_update(g)
        return lines

    def _axial_function(self) -> str:
        return "\n".join([
            "def _axial(p):",
            '    """NEURON\'s coupling coefficients (treeset.cpp nrn_area_ri, connection_coef):',
            "    a: a node's coefficient in its parent's row, b: the parent's in its row (per",
            '    unit area of the row\'s node, so negative S/cm2)."""',
            f"    ra = {self.ra}  # ohm cm, the section's",
            "    r = RI_PREV * ra / PI * 0.04 + RI_LEFT * ra / PI * 0.04  # MOhm to the parent",
            "    rinv = 1.0 / r",
            "    return -100.0 * rinv / AREA[PARENT], -100.0 * rinv / AREA"])

    def _cm_function(self) -> str:
        return "\n".join([
            "def _cm(p):",
            '    """Specific capacitance per node (uF/cm2; 0 without membrane)."""',
            f"    return {self.cm}"])

    def _point_update(self, g: PointGroup) -> list[str]:
        values = self._point_reads(g, "update")
        lines = [f"# {g.key}: {g.code.mech.name} ({g.code.mech.component_type})"]
        if g.implicit_v:
            f = self.fn(self._dvdt(g.code))
            lines.append(f"f, dfdv = {self.call(f, values)}")
            lines.append(f'v_{_ident(g.key)} = s["{g.key}"]["v"] + dt * f / (1.0 - dt * dfdv)'
                         "  # linearised backward Euler (NEURON's v step)")
            values["v_new"] = f"v_{_ident(g.key)}"
        adv = self.fn(g.code.advance(exclude={"v"} if g.implicit_v else set(),
                                     v_new=g.implicit_v))
        update = self.call(adv, values)
        if g.implicit_v:
            update = f'dict({update}, v=v_{_ident(g.key)})'
        lines.append(f'out["{g.key}"] = rt.broadcast({update}, {g.size})')
        return lines

    @staticmethod
    def _dvdt(code: MechanismCode) -> Function:
        v = symbol("v")
        rhs = code.sm.rhs["v"]
        dfdv = sympy.diff(rhs, v)
        for read in code.mech.reads:
            if read.startswith("synapses_"):
                dfdv += sympy.diff(rhs, symbol(read)) * symbol(f"d_{read}_dv")
        exprs = [rhs, dfdv]
        args = code._reads_in(exprs) + code.states + [f"d_{py_name(r)}_dv" for r in code.mech.reads
                                                      if r.startswith("synapses_")]
        return Function(f"{code.fn}_dvdt", f"{code.mech.name}: dv/dt and its derivative "
                        "in v (through the inputs too).", _dedupe(args), code.binds,
                        [("f", rhs), ("dfdv", dfdv)])

    # ---- events (phase 4) ----------------------------------------------------------------

    def _events(self) -> tuple[list[str], list[str]]:
        """Point cells' events on the stepped state, then the spike flags of every
        EventSelection (morphological cells: NEURON's NetCon test v > threshold after the
        step, having been below it before)."""
        lines = ["out = dict(s)", "fired = {}"]
        for g in self.plan.points.values():
            evs = [e for e in g.code.sm.events if e.condition is not None and e.assign]
            if not evs:
                continue
            fn = self.fn(self._event_function(g.code, evs))
            values = self._point_reads(g, "update")
            values["t"] = "t"
            lines.append(f'out["{g.key}"], fired["{g.key}"] = {self.call(fn, values)}')
        spikes = []
        for ef in self.plan.sim.event_outputs:
            for sel in ef.selections:
                spikes.append((f"{ef.id}/{sel.id}", self._spike(sel.select)))
        lines.append("return out, (" + "".join(f"{t}, " for _, t in spikes) + ")")
        return lines, [k for k, _ in spikes]

    def _spike(self, ref: QuantityRef) -> str:
        block = self.plan.cell_block(ref.population, ref.index)
        if block is not None:
            seg = block.cell.sections[0].segments[0]
            node = block.g(block.comp.node_of_segment(block.cell, 0, 0.5))
            thr = self.source(_group_param(block.cell, "spikeThresh", seg))
            return f'(s_old["v"][{node}] <= {thr}) & (s["v"][{node}] > {thr})'
        g = self.plan.points.get(ref.population)
        if g is None:
            raise UnsupportedError(f"cannot record spikes of '{ref.text}'")
        if not any(e.emits for e in g.code.sm.events):
            raise UnsupportedError(f"cannot record spikes of '{ref.text}': "
                                   f"{g.code.mech.name} emits none")
        pop = self.plan.sim.populations[g.population]
        k = [i.id for i in pop.instances].index(ref.index) if pop.instances else ref.index
        return f'fired["{g.key}"][{k}]'

    def _event_function(self, code: MechanismCode, events) -> Function:
        """Events in order, each on the values the previous ones left (assignments within
        one event are simultaneous); returns the new states and whether a spike fired."""
        cur = {symbol(s): symbol(s) for s in code.sm.states}
        fired = sympy.false
        for ev in events:
            cond = ev.condition.xreplace(cur)
            new = {symbol(k): sympy.Piecewise((val.xreplace(cur), cond), (cur[symbol(k)], True))
                   for k, val in ev.assign.items()}
            cur.update(new)
            if ev.emits:
                fired = sympy.Or(fired, cond)
        outs = [(s, cur[symbol(s)]) for s in code.sm.states]
        outs.append(("fired", fired))
        exprs = [e for _, e in outs]
        args = code._reads_in(exprs) + code.states
        return Function(f"{code.fn}_events", f"{code.mech.name}: threshold/reset events after "
                        "the step.", _dedupe(args), code.binds, outs, "dict_last")

    # ---- recording -----------------------------------------------------------------------

    def _record(self) -> tuple[list[str], list[tuple[str, str, str, str]]]:
        lines, outputs = [], []
        for of in self.plan.sim.outputs:
            for col in of.columns:
                text, unit = self._quantity(col.quantity)
                scale = _SI_SCALE.get("" if unit == "1" else unit)
                outputs.append((f"{of.id}/{col.id}", unit,
                                "None" if scale is None else _num(scale), col.quantity.text))
                lines.append(f"{text},  # {col.quantity.text}")
        return lines, outputs

    def _quantity(self, ref: QuantityRef) -> tuple[str, str]:
        plan = self.plan
        block = plan.cell_block(ref.population, ref.index)
        if block is not None:
            return self._cell_quantity(ref, block)
        if ref.population in plan.points:
            return self._point_quantity(ref, plan.points[ref.population])
        raise UnsupportedError(f"cannot record '{ref.text}': no such cell")

    def _cell_quantity(self, ref: QuantityRef, block: CellBlock) -> tuple[str, str]:
        seg = 0 if ref.segment is None else ref.segment
        try:
            node = block.g(block.comp.node_of_segment(block.cell, seg, 0.5))
        except KeyError:
            raise UnsupportedError(f"cannot record '{ref.text}': cell {block.cell.id} has no "
                                   f"segment {seg}") from None
        if not ref.path and ref.variable == "v":
            return f's["v"][{node}]', "mV"
        ion = None if ref.path else concentration_ion(ref.variable)
        if ion is not None:
            for pool in self.plan.pools:
                if pool.species.ion == ion and node in pool.nodes:
                    k = pool.nodes.index(node)
                    name = pool.code.mech.exposures.get("concentration", "concentration")
                    return f's["{pool.key}"]["{name}"][{k}]', "mM"
            if ion in NEURON_CONC0:
                return _num(NEURON_CONC0[ion][0]), "mM"      # NEURON's default, constant
            raise UnsupportedError(f"cannot record '{ref.text}': no {ion} pool there")
        if not ref.path and ref.variable in CELL_ION_CURRENTS:
            # LEMS iCa: the ion's current into the compartment, nA (NEURON backend, jNeuroML:
            # the compartment of the recorded segment, from its ica in mA/cm2 outward)
            ion = CELL_ION_CURRENTS[ref.variable]
            return f'-s["ion:{ion}"][{node}] * AREA[{node}] * 0.01', "nA"
        if len(ref.path) >= 3 and ref.path[1].startswith("membraneProperties"):
            return self._channel_quantity(ref, block, node)
        if len(ref.path) == 1 and ref.path[0] in {g.component for g in self.plan.inputs}:
            return self._input_quantity(ref, ("node", node))
        raise UnsupportedError(f"cannot record '{ref.text}': the JAX backend records v, "
                               "concentrations, channel variables (.../membraneProperties/"
                               "DENSITY/gDensity|iDensity|erev|fopen or .../CHANNEL/GATE/q) "
                               "and inputs")

    def _channel_quantity(self, ref: QuantityRef, block: CellBlock, node: int):
        density, rest, var = ref.path[2], ref.path[3:], ref.variable
        group = next((g for g in self.plan.channels if g.cell is block.cell
                      and g.piece(density) is not None), None)
        piece = group.piece(density) if group is not None else None
        if piece is None or node not in piece.nodes:
            raise UnsupportedError(f"cannot record '{ref.text}': no channel density "
                                   f"'{density}' at segment {ref.segment or 0}")
        k = piece.start + piece.nodes.index(node)
        code = group.code
        values = self._channel_values(group, "init")
        values.update({py_name(x): f's["{group.key}"]["{x}"][{k}]' for x in code.sm.states})
        N = self.groups[group.key]
        values = {a: _at(t, N, k) for a, t in values.items()}
        values["v"] = f's["v"][{node}]'
        values["t"] = "t"
        if rest:
            if rest[0] != piece.placement.mechanism:
                raise UnsupportedError(f"cannot record '{ref.text}': {density} places "
                                       f"{piece.placement.mechanism}, not {rest[0]}")
            name = "_".join(rest[1:] + [var])
        else:
            name = var
        if name in code.sm.states:
            return f's["{group.key}"]["{name}"][{k}]', code.mech.states[name].unit or "1"
        if code.erev_mode and name == "iDensity" and not rest:
            # the group's own current (outward, mA/cm2) at this node; NeuroML's sign: inward
            f = self.fn(code.current())
            values.update({py_name(f"lag_{x}"): f's["{group.key}:lag"]["{x}"][{k}]'
                           for x in code.lag_states()})
            return f'-{self.call(f, values)}["{code.sm.currents[0].ion}"][0]', "mA_per_cm2"
        if code.erev_mode and name in ("gDensity", "erev"):
            raise UnsupportedError(f"cannot record '{ref.text}': {name} of a "
                                   f"channelDensity{code.erev_mode.upper()} in the JAX backend")
        gmax, erev, v = values.get("gmax"), values.get("erev"), values["v"]
        if name in ("gDensity", "iDensity", "erev", "fopen") and not rest:
            fopen = self.call(self.fn(code.derived("fopen")), values)
            return {"gDensity": (f"{gmax} * {fopen}", "S_per_cm2"),
                    "iDensity": (f"{gmax} * {fopen} * ({erev} - {v})", "mA_per_cm2"),
                    "erev": (erev, "mV"), "fopen": (fopen, "1")}[name]
        if name in code.mech.derived:
            f = self.fn(code.derived(name))
            return self.call(f, values), code.mech.derived[name].unit or "1"
        raise UnsupportedError(f"cannot record '{ref.text}': {code.mech.name} has no "
                               f"variable '{name}'")

    def _point_quantity(self, ref: QuantityRef, g: PointGroup) -> tuple[str, str]:
        pop = self.plan.sim.populations[g.population]
        k = [i.id for i in pop.instances].index(ref.index) if pop.instances else ref.index
        mech = g.code.mech
        if len(ref.path) == 1 and ref.path[0] in {x.component for x in self.plan.inputs}:
            return self._input_quantity(ref, ("point", g.key, k))
        if ref.path:
            raise UnsupportedError(f"cannot record '{ref.text}' on point cell {mech.name}")
        name = mech.exposures.get(ref.variable, ref.variable)
        if name in mech.states:
            return f's["{g.key}"]["{name}"][{k}]', mech.states[name].unit or "1"
        if name in mech.derived:
            f = self.fn(g.code.derived(name))
            values = {py_name(x): f's["{g.key}"]["{x}"][{k}]' for x in g.code.sm.states}
            values.update({"t": "t", "temperature": "CELSIUS"})
            for read in mech.reads:
                if read.startswith("synapses_"):
                    values[py_name(read)] = "0.0"   # inputs are not part of the state
            return self.call(f, values), mech.derived[name].unit or "1"
        raise UnsupportedError(f"cannot record '{ref.text}': {mech.name} has no '{name}'")

    def _input_quantity(self, ref: QuantityRef, target) -> tuple[str, str]:
        for g in self.plan.inputs:
            if g.component != ref.path[0]:
                continue
            for k, (_, tgt) in enumerate(g.placements):
                if tuple(tgt) == tuple(target):
                    unit = g.code.mech.states[g.code.var].unit or "1"
                    return f's["input:{g.key}"][{k}]', unit
        raise UnsupportedError(f"cannot record '{ref.text}': input not on that cell")


def _group_param(cell: Cell, quantity: str, segment: int):
    return group_parameters(cell, quantity)[segment]


def _at(text: str, N: str, k: int) -> str:
    """Element k of a per-group value, which may also be a scalar (a parameter, a number)."""
    if _SCALAR.fullmatch(text):
        return text
    return f"jnp.broadcast_to({text}, (rt.count({N}),))[{k}]"


# ============================================================================ entry points

def emit(model: Model, sim: Simulation, *, jacobian: str = "analytic",
         command: str | None = None, params: list[str] | tuple[str, ...] = (),
         integration: str = "exact") -> str:
    """The JAX module text for ``sim`` of ``model`` (deterministic: same input, same bytes).

    ``jacobian``: see :data:`JACOBIANS`.  ``command`` is recorded in the header.
    ``params``: parameter paths (``inspect --params``) whose forward sensitivities the
    module computes (``SENS_PARAMS``, ``simulate_sens``, ``loss_and_grad``); none: the
    primal module alone.  ``integration``: see :data:`INTEGRATIONS`."""
    if jacobian not in JACOBIANS:
        raise ModelError(f"jacobian must be one of {JACOBIANS}, not {jacobian!r}")
    if integration not in INTEGRATIONS:
        raise ModelError(f"integration must be one of {INTEGRATIONS}, not {integration!r}")
    if params and integration != "exact":
        # the sensitivity writer differentiates the discretize map (exact integration)
        raise UnsupportedError(f"sensitivities with integration {integration} in the JAX "
                               "backend (use integration exact)")
    plan = Plan(model, sim, integration)
    ghk = [g.key for g in plan.channels if g.code.erev_mode]
    if params and ghk:
        raise UnsupportedError(f"sensitivities of GHK currents in the JAX backend ({ghk[0]})")
    writer = ModuleWriter(plan, jacobian)
    parts = writer.parts()
    if params and writer.ion_records:
        raise UnsupportedError("sensitivities of a recorded cell ion current (iCa, iCa2) in "
                               "the JAX backend")
    sens = _sensitivity_parts(model, writer, list(params)) if params else {}
    template = environment("jax").get_template("module.py.j2")
    return template.render(
        source=_display_path(model.source), simulation=sim.id,
        command=command or (f"nml_gradiff.backends.jax.emit(jacobian={jacobian!r}"
                            + (f", integration={integration!r})" if integration != "exact"
                               else ")")),
        dt=_num(sim.dt_ms), duration=_num(sim.length_ms), celsius=_num(plan.celsius),
        jacobian=jacobian, integration=integration, params=_params(model, integration),
        sens=bool(params),
        **{**parts, **sens})


def _sensitivity_parts(model: Model, writer: "ModuleWriter", params: list[str]) -> dict:
    from .sens_writer import SensitivityWriter
    known = {p.path for p in model.parameters()}
    unknown = [p for p in params if p not in known]
    if unknown:
        raise ModelError(f"no parameters {unknown} in this model (see inspect --params)")
    if len(set(params)) != len(params):
        raise ModelError("sensitivity parameters listed twice")
    sw = SensitivityWriter(writer, params)
    init, advance, record = sw.init_lines(), sw.advance_lines(), sw.record_lines()
    primal = [f.render() for f in sorted(writer.used.values(), key=lambda f: f.name)]
    return dict(functions=primal + writer.extra, sens_params=params,
                sens_functions=sw.functions() + sw.extra_functions(), init_sens=init,
                advance_sens=advance, record_sens=record)


def _display_path(path: str) -> str:
    # The file name only: the module must not depend on where it was generated.
    return Path(path).name


def _params(model: Model, integration: str = "exact") -> list[tuple[str, str, str]]:
    """(path, value text, unit) of every parameter, for PARAMS.  With ``jnml_neuron`` a
    mechanism's parameters are read as NEURON reads jNeuroML's mods (:func:`nocmodl_default`);
    a cell's (condDensity, erev, cm, ...) are set from jNeuroML's hoc at full precision."""
    mechanism = {id(p) for m in model.mechanisms.values() for p in m.parameters.values()}
    seen, out = set(), []
    for p in model.parameters():
        if p.path and p.path not in seen:
            seen.add(p.path)
            value = p.value
            if integration == "jnml_neuron" and id(p) in mechanism:
                value = nocmodl_default(value)
            out.append((p.path, _num(value), p.unit or "1"))
    return out


def nocmodl_default(value: float) -> float:
    """A PARAMETER's default as NEURON holds it: nocmodl prints the defaults of RANGE
    parameters into the C code with printf's ``%g``, six significant digits (NEURON 7's
    ``nrn_alloc``, NEURON 9's ``_parm_default``: ``13.888889`` runs as ``13.8889``).
    jNeuroML's export declares every parameter of a channel, gate, pool, input or abstract
    cell a RANGE PARAMETER, so the reference data it made ran with these values (docs/jax.md,
    "Reference-compatible integration"; docs/omv-jax.md, fourth round)."""
    value = float(value)
    return value if not math.isfinite(value) else float(f"{value:g}")


def load_module(text: str, name: str = "nml_gradiff_generated") -> types.ModuleType:
    """Execute generated module text and return the module (registered in sys.modules so
    jax can pickle/inspect its functions)."""
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(text, f"<{name}>", "exec"), module.__dict__)
    sys.modules[name] = module
    return module
