"""Convert a flattened model from SI to the internal (NEURON) units and build the Mechanism.

Conversion is per quantity, never per base dimension (NEURON's units are not a coherent
system; see :mod:`nml_gradiff.ir.units`).  Each symbol ``x`` of dimension D stands for
``x_SI = scale_D * x + offset_D``: substituting that into an SI expression and mapping the
result back with its own dimension's scale gives the same equation in internal units, exactly.
A sloppy dimension declaration in a model (a time declared dimensionless) therefore changes
only how a value is displayed, never the dynamics.
"""

from __future__ import annotations

import graphlib

import sympy

from ..ir.mechanism import (Current, Derived, Event, KineticScheme, Mechanism, Parameter,
                            State, Transition, symbol)
from ..ir.singularities import remove_singularities
from ..ir.units import internal_unit
from .flatten import FlatModel

_TIME = "time"


class UnitMap:
    """Scale and offset of every symbol of one flattened model."""

    def __init__(self, units, dims: dict[str, str]):
        self.units = units
        self.info = {name: self._unit(dim) for name, dim in dims.items()}
        self.subs = {symbol(n): _rat(u.scale) * symbol(n) + _rat(u.offset)
                     for n, u in self.info.items() if (u.scale, u.offset) != (1.0, 0.0)}

    def _unit(self, dim: str):
        return internal_unit(self.units.dimension("none" if not dim else dim))

    def unit_of(self, dim: str) -> str:
        return self._unit(dim).symbol

    def expr(self, e):
        return e.xreplace(self.subs) if self.subs else e

    def value_of(self, name: str, e: sympy.Expr) -> sympy.Expr:
        """An SI expression for quantity ``name`` -> the same value in its internal unit."""
        u = self.info[name]
        return (self.expr(e) - _rat(u.offset)) / _rat(u.scale)

    def rate_of(self, name: str, e: sympy.Expr) -> sympy.Expr:
        """d(name)/dt in SI per second -> internal units per internal time unit."""
        t = self._unit(_TIME)
        return self.expr(e) * _rat(t.scale) / _rat(self.info[name].scale)


def _rat(x: float) -> sympy.Rational:
    # Exact decimal scales (1e-3, 273.15) keep unit factors from leaving float dust behind.
    return sympy.Rational(repr(float(x)))


def _clean(e):
    return remove_singularities(e) if isinstance(e, sympy.Expr) else e


def _order_derived(derived: dict[str, Derived]) -> dict[str, Derived]:
    """Evaluation order: each derived quantity after those it uses."""
    # sorted predecessors: set order depends on the hash seed, and the order must not
    # (generated code is byte-for-byte deterministic)
    graph = {n: sorted(s.name for s in d.expr.free_symbols if s.name in derived)
             for n, d in derived.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise ValueError(f"derived variables depend on each other in a cycle: {exc.args[1]}")
    return {n: derived[n] for n in order}


def to_mechanism(flat: FlatModel, units, *, name: str, kind: str,
                 source: str | None = None) -> Mechanism:
    dims = {**{n: p.dimension for n, p in flat.parameters.items()},
            **{n: s.dimension for n, s in flat.states.items()},
            **{n: d.dimension for n, d in flat.derived.items()},
            **flat.reads}
    um = UnitMap(units, dims)
    mech = Mechanism(name=name, kind=kind, component_type=flat.root.type.name,
                     source=source, texts=dict(flat.texts), exposures=dict(flat.exposures),
                     scopes=dict(flat.scopes), owner=dict(flat.owner))
    for n, p in flat.parameters.items():
        value = p.internal if p.internal is not None else float(
            um.value_of(n, sympy.Float(p.value, 17)))
        mech.parameters[n] = Parameter(n, value, um.unit_of(p.dimension), p.dimension, p.path,
                                       p.origin)
    for n, s in flat.states.items():
        rhs = None if s.rhs is None else _clean(um.rate_of(n, s.rhs))
        init = None if s.init is None else _clean(um.value_of(n, s.init))
        mech.states[n] = State(n, rhs, init, um.unit_of(s.dimension), s.dimension)
    derived = {n: Derived(n, _clean(um.value_of(n, d.expr)), um.unit_of(d.dimension),
                          d.dimension) for n, d in flat.derived.items()}
    mech.derived = _order_derived(derived)
    mech.reads = {n: um.unit_of(d) for n, d in flat.reads.items()}
    mech.events = [_event(e, um) for e in flat.events]
    mech.kinetic = [_kinetic(states, edges, um) for states, edges in flat.kinetic]
    return mech


def _event(e: Event, um: UnitMap) -> Event:
    cond = None if e.condition is None else um.expr(e.condition)
    assign = {n: _clean(um.value_of(n, v)) for n, v in e.assign.items()}
    return Event(cond, assign, e.emits, e.port, scope=e.scope)


def _kinetic(states, edges, um: UnitMap) -> KineticScheme:
    t_scale = _rat(internal_unit(um.units.dimension(_TIME)).scale)
    return KineticScheme(states, [Transition(a, b, _clean(um.expr(rf) * t_scale),
                                             _clean(um.expr(rr) * t_scale))
                                  for a, b, rf, rr in edges])


def add_channel_current(mech: Mechanism, units) -> None:
    """A channel's current density where it is placed: ``gmax * fopen * (v - erev)``.

    ``gmax`` and ``erev`` belong to the placement (a NeuroML channelDensity), not to the
    channel, so they are :attr:`Mechanism.placement` parameters with no value yet.
    """
    fopen = mech.exposures.get("fopen")
    if fopen is None:
        raise ValueError(f"channel {mech.name} exposes no fopen")
    cd = units.dimension("conductanceDensity")
    volt = units.dimension("voltage")
    mech.placement["gmax"] = Parameter("gmax", 0.0, internal_unit(cd).symbol,
                                       "conductanceDensity", "")
    mech.placement["erev"] = Parameter("erev", 0.0, internal_unit(volt).symbol, "voltage", "")
    mech.reads.setdefault("v", internal_unit(volt).symbol)
    ion = mech.texts.get("species") or "non_specific"
    mech.ion = None if ion == "non_specific" else ion
    mech.currents.append(Current(ion, symbol("gmax") * symbol(fopen)
                                 * (symbol("v") - symbol("erev"))))
