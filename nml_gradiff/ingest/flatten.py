"""Flatten a LEMS component tree into one mechanism of sympy equations (in SI units).

Every variable of every component in the tree becomes one symbol whose name is the path of
component labels joined by ``_`` (``m_forwardRate_r``); every parameter also gets its public
path (``naChan/m/forwardRate/midpoint``).  References between components are resolved the
LEMS way:

* ``select="forwardRate/r"`` reads the exposure ``r`` of the child in slot ``forwardRate``;
  ``select="gates[*]/fcond" reduce="multiply"`` multiplies over all children in ``gates``
  (an empty product is 1, an empty sum 0);
* a ``Requirement`` is looked up in the enclosing components, innermost first; one that no
  component provides is something the mechanism reads from where it lives (``v``,
  ``temperature``, ``caConc``, ...);
* ``select`` over ``Attachments`` (synaptic currents into a point cell) becomes a read named
  ``<attachments>_<exposure>``, summed by whatever attaches to the cell.

The result is still in SI; :mod:`.internal_units` converts it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy

from ..errors import ModelError, UnsupportedError
from ..ir.mechanism import Event, Origin, Scope as ScopeInfo, symbol
from .components import Component
from .expr import parse_condition, parse_expression
from .lems_types import DerivedVar, Handler, KineticSchemeDef, Regime, Where

_BUILTINS = {"t": "time"}
# a select step: "gates", "gates[*]" or "populations[ion='ca']"
_SELECT_STEP = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\*|([A-Za-z_][A-Za-z0-9_]*)\s*=\s*'([^']*)')\])?$")


def _integrated(dyn) -> set[str]:
    """State variables with a time derivative (in any regime)."""
    return set(dyn.time_derivatives) | {v for r in dyn.regimes for v in r.time_derivatives}


@dataclass
class Scope:
    """The names visible inside one component of the tree."""

    comp: Component
    prefix: str                       # symbol prefix of this component's variables
    path: str                         # parameter-path prefix
    parent: "Scope | None"
    names: dict[str, sympy.Expr] = field(default_factory=dict)
    children: list["Scope"] = field(default_factory=list)

    def child_scopes(self, slot: str) -> list["Scope"]:
        return [s for s in self.children if s.comp.slot == slot]


@dataclass
class Quantity:
    name: str
    dimension: str


@dataclass
class SIParameter(Quantity):
    value: float = 0.0
    path: str = ""
    internal: float | None = None     # exact internal value when known (see ingest.units)
    origin: Origin | None = None      # the attribute it was read from, if its own


@dataclass
class SIState(Quantity):
    rhs: sympy.Expr | None = None
    init: sympy.Expr | None = sympy.Integer(0)


@dataclass
class SIDerived(Quantity):
    expr: sympy.Expr = sympy.Integer(0)


@dataclass
class FlatModel:
    """A flattened component in SI units: what :mod:`.internal_units` consumes."""

    root: Component
    parameters: dict[str, SIParameter] = field(default_factory=dict)
    states: dict[str, SIState] = field(default_factory=dict)
    derived: dict[str, SIDerived] = field(default_factory=dict)
    reads: dict[str, str] = field(default_factory=dict)              # name -> dimension
    events: list[Event] = field(default_factory=list)
    kinetic: list[tuple[list[str], list[tuple[str, str, sympy.Expr, sympy.Expr]]]] = \
        field(default_factory=list)
    exposures: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    scopes: dict[str, ScopeInfo] = field(default_factory=dict)      # prefix -> component
    owner: dict[str, str] = field(default_factory=dict)             # state/derived -> prefix


def _origin(where: Where, attribute: str) -> Origin | None:
    return Origin(where.file, where.line, attribute) if where.file and where.line else None


def _jlems_derived_order(ctype) -> tuple[str, ...]:
    """The derived variables of a component in jLEMS's evaluation order (StateType.evalDerived:
    selects, then DerivedVariables, then ConditionalDerivedVariables, each in the order of
    the merged ``extends`` chain); a variable that reads one after it gets the previous
    step's value there."""
    dyn = ctype.dynamics
    if dyn is None:
        return ()
    ranked = [*ctype.plain_order, *ctype.conditional_order]
    ranked += [n for n in dyn.derived if n not in ranked]
    known = [n for n in dict.fromkeys(ranked) if n in dyn.derived]
    selects = [n for n in known if dyn.derived[n].select is not None]
    plain = [n for n in known if dyn.derived[n].select is None and dyn.derived[n].cases is None]
    conditional = [n for n in known if dyn.derived[n].cases is not None]
    return tuple(selects + plain + conditional)


def s_attr(scope: Scope, name: str) -> str | None:
    """A text attribute of a component (for select predicates such as [ion='ca'])."""
    return scope.comp.attributes.get(name)


class Flattener:
    """Turns one component tree into a :class:`FlatModel`."""

    def __init__(self, units, root: Component, *, path_root: str | None = None):
        self.units = units
        self.model = FlatModel(root)
        self._owner: dict[str, str] = {}      # symbol name -> what declared it
        self._pending: list[tuple[Scope, DerivedVar]] = []
        self._shadowed: set[str] = set()      # states whose derived namesake wins
        root_label = path_root if path_root is not None else root.label
        self.root_scope = self._declare(root, None, "", root_label)

    # ----------------------------------------------------------------- phase 1: declare

    def _claim(self, name: str, what: str, where: Where) -> sympy.Symbol:
        if name in self._owner:
            raise where.error(f"name clash after flattening: '{name}' is both "
                              f"{self._owner[name]} and {what}")
        self._owner[name] = what
        return symbol(name)

    def _declare(self, comp: Component, parent: Scope | None, prefix: str,
                 path: str) -> Scope:
        scope = Scope(comp, prefix, path, parent)
        self.model.scopes[prefix] = ScopeInfo(None if parent is None else parent.prefix,
                                              frozenset(comp.type.requirements),
                                              _jlems_derived_order(comp.type))
        self._declare_parameters(scope)
        self._declare_dynamics(scope)
        for child in comp.children:
            scope.children.append(self._declare(child, scope, f"{prefix}{child.name_part}_",
                                                f"{path}/{child.label}"))
        return scope

    def _quantity(self, text: str, dim: str, where: Where, element: str):
        return self.units.parse_quantity(text, dim, file=where.file, line=where.line,
                                         element=element)

    def _declare_parameters(self, scope: Scope) -> None:
        comp, ctype = scope.comp, scope.comp.type
        element = ctype.name
        for name, (dim, value) in ctype.constants.items():
            si = self._quantity(value, dim, ctype.where, element).si
            scope.names[name] = sympy.Float(si, 17)
        values = {**{k: v for k, v in ctype.fixed.items()}, **comp.attributes}
        for name, (dim, default) in ctype.properties.items():
            if name not in values and default is not None:
                values[name] = default
        declared = {**ctype.parameters, **{k: d for k, (d, _) in ctype.properties.items()}}
        for name, dim in declared.items():
            if name not in values:
                raise comp.where.error(f"missing parameter '{name}' ({dim}) for a "
                                       f"{ctype.name}", element=element)
            q = self._quantity(values[name], dim, comp.where, element)
            if dim == "*":       # LEMS "any dimension": the value's own unit decides
                dim = self.units.name_of(q.dimension)
            sym = self._claim(scope.prefix + name, f"parameter {scope.path}/{name}", comp.where)
            self.model.parameters[sym.name] = SIParameter(
                sym.name, dim, q.si, f"{scope.path}/{name}", q.internal,
                _origin(comp.where, name) if name in comp.attributes else None)
            scope.names[name] = sym
        for name in ctype.texts:
            if name in comp.attributes and scope.parent is None:
                self.model.texts[name] = comp.attributes[name]
        for name, (dim, value) in ctype.derived_parameters.items():
            sym = self._claim(scope.prefix + name, "derived parameter", comp.where)
            self.model.owner[sym.name] = scope.prefix
            scope.names[name] = sym
            self._pending.append((scope, DerivedVar(name, dim, value=value, where=comp.where)))

    def _declare_dynamics(self, scope: Scope) -> None:
        dyn = scope.comp.type.dynamics
        if dyn is None:
            return
        for name, dim in dyn.state_variables.items():
            if name in dyn.derived and name not in _integrated(dyn):
                # Declared as both (the core pinskyRinzelCA3Cell's Sisat, Pinsky-Rinzel's
                # v = Vs): a derived variable is recomputed after every update, so its
                # definition is the value; assignments to the state cannot be seen.
                self._shadowed.add(scope.prefix + name)
                continue
            sym = self._claim(scope.prefix + name, "state variable", scope.comp.where)
            self.model.states[sym.name] = SIState(sym.name, dim)
            self.model.owner[sym.name] = scope.prefix
            scope.names[name] = sym
        if dyn.regimes:
            sym = self._claim(scope.prefix + "regime", "regime index", scope.comp.where)
            self.model.states[sym.name] = SIState(sym.name, "none")
            self.model.owner[sym.name] = scope.prefix
            scope.names["regime"] = sym
        for name, dv in dyn.derived.items():
            scope.names[name] = self._claim(scope.prefix + name, "derived variable", dv.where)
            self.model.owner[scope.prefix + name] = scope.prefix
            self._pending.append((scope, dv))

    # ----------------------------------------------------------------- name resolution

    def lookup(self, scope: Scope, name: str, where: Where) -> sympy.Expr:
        s: Scope | None = scope
        while s is not None:
            if name in s.names:
                return s.names[name]
            s = s.parent
        return self._external(scope, name, where)

    def _external(self, scope: Scope, name: str, where: Where) -> sympy.Expr:
        dim = None
        s: Scope | None = scope
        while s is not None and dim is None:
            dim = s.comp.type.requirements.get(name)
            s = s.parent
        dim = dim or _BUILTINS.get(name)
        if dim is None:
            raise where.error(f"undefined symbol '{name}' in {scope.comp.type.name} "
                              f"'{scope.path}'")
        self.model.reads.setdefault(name, dim)
        return symbol(name)

    def expression(self, scope: Scope, text: str, where: Where, element: str,
                   condition: bool = False) -> sympy.Basic:
        parse = parse_condition if condition else parse_expression
        raw = parse(text, file=where.file, line=where.line, element=element)
        mapping = {s: self.lookup(scope, s.name, where) for s in raw.free_symbols}
        return raw.xreplace(mapping)

    # ----------------------------------------------------------------- select paths

    def _exposure_of(self, scope: Scope, exposure: str, where: Where) -> sympy.Expr:
        dyn = scope.comp.type.dynamics
        if dyn is not None:
            for var, exp_name in dyn.exposed_as.items():
                if exp_name == exposure:
                    return scope.names[var]
        if exposure in scope.names:
            return scope.names[exposure]
        raise where.error(f"'{scope.path}' ({scope.comp.type.name}) exposes no '{exposure}'")

    def select(self, scope: Scope, dv: DerivedVar) -> sympy.Expr:
        steps = dv.select.split("/")
        current = [scope]
        for step in steps[:-1]:
            m = _SELECT_STEP.match(step)
            if m is None:
                raise UnsupportedError(f"select path '{dv.select}'", file=dv.where.file,
                                       line=dv.where.line)
            slot, selector, attr, value = m.groups()
            ctype = scope.comp.type
            if slot in ctype.attachments and len(current) == 1:
                return self._attachment(scope, slot, steps[-1], dv)
            if slot in ctype.instance_requirements:
                raise UnsupportedError(f"'{dv.select}' reads another cell instance "
                                       f"('{slot}', e.g. a gap junction's peer)",
                                       file=dv.where.file, line=dv.where.line)
            nxt = [c for s in current for c in s.child_scopes(slot)
                   if attr is None or s_attr(c, attr) == value]
            if not nxt and selector is None:     # a step may also name a child by its id
                nxt = [c for s in current for c in s.children if c.comp.id == slot]
            if selector is None and len(nxt) > 1:
                raise dv.where.error(f"'{dv.select}': several children in '{slot}'")
            current = nxt
        values = [self._exposure_of(s, steps[-1], dv.where) for s in current]
        return self._reduce(values, dv, scope)

    def _reduce(self, values: list[sympy.Expr], dv: DerivedVar, scope: Scope) -> sympy.Expr:
        if dv.reduce in ("multiply", "add"):
            op = sympy.Mul if dv.reduce == "multiply" else sympy.Add
            return op(*values) if values else (sympy.Integer(1) if dv.reduce == "multiply"
                                               else sympy.Integer(0))
        if len(values) == 1:
            return values[0]
        if not values and not dv.required:
            return sympy.Integer(0)
        raise dv.where.error(f"select '{dv.select}' in '{scope.path}' found "
                             f"{len(values)} values and no reduce")

    def _attachment(self, scope: Scope, slot: str, exposure: str, dv: DerivedVar):
        name = f"{scope.prefix}{slot}_{exposure}"
        self.model.reads.setdefault(name, dv.dimension)
        return symbol(name)

    # ----------------------------------------------------------------- phase 2: define

    def flatten(self) -> FlatModel:
        for scope, dv in self._pending:
            self._define_derived(scope, dv)
        self._define_dynamics(self.root_scope)
        self.model.exposures = {
            exp: str(self._exposure_of(self.root_scope, exp, self.root_scope.comp.where))
            for exp in self.root_scope.comp.type.exposures
            if self._has_exposure(self.root_scope, exp)}
        return self.model

    def _has_exposure(self, scope: Scope, exposure: str) -> bool:
        try:
            self._exposure_of(scope, exposure, scope.comp.where)
        except ModelError:
            return False
        return True

    def _define_derived(self, scope: Scope, dv: DerivedVar) -> None:
        name = scope.prefix + dv.name
        if dv.cases is not None:
            expr = self._conditional(scope, dv)
        elif dv.select is not None:
            expr = self.select(scope, dv)
        elif dv.value is not None:
            expr = self.expression(scope, dv.value, dv.where, "DerivedVariable")
        else:
            raise dv.where.error(f"derived variable '{dv.name}' has no value or select")
        self.model.derived[name] = SIDerived(name, dv.dimension, expr)

    def _conditional(self, scope: Scope, dv: DerivedVar) -> sympy.Expr:
        pieces = []
        for case in dv.cases:
            value = self.expression(scope, case.value, dv.where, "Case")
            cond = (sympy.true if case.condition is None else
                    self.expression(scope, case.condition, dv.where, "Case", condition=True))
            pieces.append((value, cond))
        if all(c is not sympy.true for _, c in pieces):
            # jLEMS leaves the value unchanged when no case holds; with complementary
            # conditions (the usual x == 0 / x != 0) the last case is the otherwise case.
            pieces[-1] = (pieces[-1][0], sympy.true)
        return sympy.Piecewise(*pieces)

    def _define_dynamics(self, scope: Scope) -> None:
        dyn = scope.comp.type.dynamics
        if dyn is not None:
            self._define_time_derivatives(scope, dyn.time_derivatives)
            for handler in dyn.handlers:
                self._define_handler(scope, handler)
            if dyn.regimes:
                self._define_regimes(scope, dyn.regimes)
            for ks in dyn.kinetic:
                self._define_kinetic(scope, ks)
        for child in scope.children:
            self._define_dynamics(child)

    def _state(self, scope: Scope, variable: str, where: Where, element: str) -> SIState:
        sym = scope.names.get(variable)
        if sym is None or sym.name not in self.model.states:
            raise where.error(f"'{variable}' is not a state variable of "
                              f"{scope.comp.type.name}", element=element)
        return self.model.states[sym.name]

    def _define_time_derivatives(self, scope: Scope, derivs: dict[str, str]) -> None:
        for var, text in derivs.items():
            st = self._state(scope, var, scope.comp.where, "TimeDerivative")
            st.rhs = self.expression(scope, text, scope.comp.where, "TimeDerivative")

    def _assignments(self, scope: Scope, handler: Handler) -> dict[str, sympy.Expr]:
        out = {}
        for a in handler.assignments:
            if scope.prefix + a.variable in self._shadowed:
                continue
            st = self._state(scope, a.variable, handler.where, "StateAssignment")
            out[st.name] = self.expression(scope, a.value, handler.where, "StateAssignment")
        return out

    def _define_handler(self, scope: Scope, handler: Handler,
                        guard: sympy.Basic | None = None) -> Event | None:
        assign = self._assignments(scope, handler)
        if handler.kind == "start":
            for name, value in assign.items():
                self.model.states[name].init = value
            return None
        if handler.kind == "entry":
            return None
        if handler.kind == "event":
            event = Event(None, assign, bool(handler.event_out), port=handler.port,
                          scope=scope.prefix)
        else:
            cond = self.expression(scope, handler.test, handler.where, "OnCondition",
                                   condition=True)
            event = Event(cond if guard is None else sympy.And(guard, cond), assign,
                          bool(handler.event_out), scope=scope.prefix)
        self.model.events.append(event)
        return event

    def _define_regimes(self, scope: Scope, regimes: list[Regime]) -> None:
        regime = scope.names["regime"]
        index = {r.name: i for i, r in enumerate(regimes)}
        initial = [r for r in regimes if r.initial] or regimes[:1]
        self.model.states[regime.name].init = sympy.Integer(index[initial[0].name])
        self._regime_derivatives(scope, regimes, regime)
        for i, r in enumerate(regimes):
            for handler in r.handlers:
                if handler.kind == "entry":
                    continue
                event = self._define_handler(scope, handler, sympy.Eq(regime, i))
                if handler.transition is not None and event is not None:
                    self._transition(scope, regimes, index, handler, event, regime)

    def _regime_derivatives(self, scope, regimes, regime) -> None:
        states = {v for r in regimes for v in r.time_derivatives}
        for var in sorted(states):
            st = self._state(scope, var, scope.comp.where, "TimeDerivative")
            pieces = []
            for i, r in enumerate(regimes):
                text = r.time_derivatives.get(var)
                value = (self.expression(scope, text, scope.comp.where, "TimeDerivative")
                         if text else sympy.Integer(0))
                pieces.append((value, sympy.Eq(regime, i)))
            pieces[-1] = (pieces[-1][0], sympy.true)
            st.rhs = sympy.Piecewise(*pieces)

    def _transition(self, scope, regimes, index, handler, event, regime) -> None:
        if handler.transition not in index:
            raise handler.where.error(f"transition to unknown regime '{handler.transition}'")
        target = regimes[index[handler.transition]]
        event.assign[regime.name] = sympy.Integer(index[target.name])
        for entry in (h for h in target.handlers if h.kind == "entry"):
            event.assign.update(self._assignments(scope, entry))

    def _define_kinetic(self, scope: Scope, ks: KineticSchemeDef) -> None:
        nodes = scope.child_scopes(ks.nodes)
        by_id = {n.comp.id: n for n in nodes}
        occupancy = [n.names[ks.state_variable] for n in nodes]
        rhs = {o.name: sympy.Integer(0) for o in occupancy}
        edges = []
        for edge in scope.child_scopes(ks.edges):
            src = self._node(by_id, edge, ks.edge_source)
            dst = self._node(by_id, edge, ks.edge_target)
            rf = self._exposure_of(edge, ks.forward_rate, edge.comp.where)
            rr = self._exposure_of(edge, ks.reverse_rate, edge.comp.where)
            a, b = src.names[ks.state_variable], dst.names[ks.state_variable]
            flux = rf * a - rr * b
            rhs[a.name] -= flux
            rhs[b.name] += flux
            edges.append((a.name, b.name, rf, rr))
        for o in occupancy:
            st = self.model.states[o.name]
            st.rhs = rhs[o.name]
            st.init = None     # steady state at the start; see ir.mechanism.State
        self.model.kinetic.append(([o.name for o in occupancy], edges))

    @staticmethod
    def _node(by_id: dict[str, Scope], edge: Scope, link: str) -> Scope:
        target = edge.comp.attributes.get(link)
        if target not in by_id:
            raise edge.comp.where.error(f"transition '{edge.comp.label}': {link}="
                                        f"'{target}' is not a state of this gate")
        return by_id[target]
