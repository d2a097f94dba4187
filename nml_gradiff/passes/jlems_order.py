"""jLEMS's update order for a mechanism flattened from a LEMS component tree (IR -> IR).

jLEMS (``StateInstance.advance``, ``StateType.eulerAdvance``) steps a component tree from
``x[n]`` to ``x[n+1]`` so, each component after its children (recursively):

1. its ``t`` is the step's end time;
2. each of its LEMS Requirements is copied from its parent as the parent holds it now
   (``getVariable`` climbs to the first ancestor that has the name);
3. its derived variables, in order (a ``select`` reads the children's exposures, which were
   stepped already);
4. one forward-Euler step from these values;
5. its OnConditions, on its new states and the values of 2 and 3;
6. its exposures are synchronised.

Recorders sample after the step, at its end time.  Initialisation leaves every value
consistent with the initial states.  So, in flattened terms, an expression of component X
at step n reads

* its own states ``x[n]`` and the derived values computed in this step;
* a derived value S of an ancestor A as A computed it in the step before, ``S^(n-1)``, and
  a state of A as ``x[n]`` (A is stepped after X); every component between X and A that
  requires the name too holds a copy one step older: with k of them, ``S^(n-1-k)``,
  ``x[n-k]``;
* the derived values of a descendant computed in this step, and a descendant's state as
  ``x[n+1]`` (its new value: refused where it feeds the update, kept where it is only
  recorded, where the backends' values after the step are jLEMS's);
* in an OnCondition: its own states new, every other value as in 2 and 3;
* a derived value of X that jLEMS evaluates after the one reading it (selects first, then
  DerivedVariables, then ConditionalDerivedVariables, each in the order of the merged
  ``extends`` chain, where a redefined variable keeps its base's place): the value of the
  step before.

The pass keeps the values of earlier steps in registers (:attr:`State.each_step`,
``<name>_jlems<j>`` holds the value of ``j`` steps before) and rewrites the expressions to
read them; the flat mechanism then needs only forward Euler (its states) and the registers'
shift after each step (their ``each_step`` evaluated before the update).  For a flat
component the only change is an OnCondition that reads a derived value.
"""

from __future__ import annotations

import dataclasses

import sympy

from ..errors import UnsupportedError
from ..ir.mechanism import Mechanism, State, symbol

__all__ = ["jlems_order"]


def jlems_order(mech: Mechanism) -> Mechanism:
    """``mech`` with jLEMS's update order made explicit (see the module docstring); the
    result is meant for forward Euler.  A mechanism without a LEMS component tree is
    returned as it is."""
    if not mech.scopes:
        return mech
    if mech.kinetic:
        raise UnsupportedError(f"jLEMS's update order for {mech.name}: kinetic schemes")
    return _Order(mech).apply()


class _Order:
    def __init__(self, mech: Mechanism):
        self.mech = mech
        self.taken = set(mech.parameters) | set(mech.placement) | set(mech.states) \
            | set(mech.derived) | set(mech.reads)
        self.registers: dict[tuple[str, int], str] = {}
        self.earlier: dict[str, sympy.Symbol] = {}   # register -> what it copies each step
        self.below: dict[str, set[str]] = {}   # expression -> descendant states it reads

    # ---------------------------------------------------------------- the component tree
    def depth(self, scope: str) -> int:
        d, s = 0, self.mech.scopes[scope].parent
        while s is not None:
            d, s = d + 1, self.mech.scopes[s].parent
        return d

    def relation(self, reader: str, name: str) -> tuple[str, int]:
        """How component ``reader`` reaches ``name``: ("own", 0), ("up", k) with k copies
        in between, ("down", 0); ("none", 0) for parameters and outside reads."""
        owner = self.mech.owner.get(name)
        if owner is None:
            return "none", 0
        if owner == reader:
            return "own", 0
        local, scopes = name[len(owner):], self.mech.scopes
        k, s = 0, scopes[reader].parent
        while s is not None and s != owner:
            k += local in scopes[s].requirements
            s = scopes[s].parent
        if s == owner:
            return "up", k
        s = scopes[owner].parent
        while s is not None and s != reader:
            s = scopes[s].parent
        if s == reader:
            return "down", 0
        raise UnsupportedError(f"jLEMS's update order for {self.mech.name}: "
                               f"'{reader or 'the root'}' reads {name} of a component that "
                               "is neither its ancestor nor its descendant")

    # ---------------------------------------------------------------- registers
    def register(self, name: str, steps: int) -> sympy.Symbol:
        """The value of ``name`` ``steps`` steps before (0: itself)."""
        if steps == 0:
            return symbol(name)
        key = (name, steps)
        if key not in self.registers:
            earlier = self.register(name, steps - 1)
            reg = f"{name}_jlems{steps}"
            while reg in self.taken:
                reg += "_"
            self.taken.add(reg)
            self.registers[key] = reg
            self.earlier[reg] = earlier
        return symbol(self.registers[key])

    # ---------------------------------------------------------------- rewriting
    def later(self, reader: str, what: str, name: str) -> bool:
        """Whether jLEMS evaluates the derived ``name`` of ``reader`` after its derived
        ``what`` (which then reads the value of the step before)."""
        order = self.mech.scopes[reader].derived_order
        a, b = what[len(reader):], name[len(reader):]
        return what in self.mech.derived and a in order and b in order \
            and order.index(b) >= order.index(a)

    def before(self, expr, reader: str, what: str):
        """``expr`` of component ``reader`` during the step (values of step n); ``what``
        names the derived quantity or state (rhs) it defines."""
        mapping = {}
        for s in sympy.sympify(expr).free_symbols:
            how, k = self.relation(reader, s.name)
            state = s.name in self.mech.states
            if how == "own" and not state and self.later(reader, what, s.name):
                mapping[s] = self.register(s.name, 1)
            elif how == "up":
                mapping[s] = self.register(s.name, k if state else k + 1)
            elif how == "down" and state:
                self.below.setdefault(what, set()).add(s.name)
        return sympy.sympify(expr).xreplace(mapping)

    def after(self, expr, reader: str):
        """``expr`` of an OnCondition of ``reader``: tested after the update, on the new
        states of ``reader`` (and of its descendants) and the other values of the step."""
        mapping = {}
        for s in sympy.sympify(expr).free_symbols:
            how, k = self.relation(reader, s.name)
            state = s.name in self.mech.states
            if how == "up":
                mapping[s] = self.register(s.name, k + 1 if state else k + 2)
            elif how in ("own", "down") and not state:
                mapping[s] = self.register(s.name, 1)
        return sympy.sympify(expr).xreplace(mapping)

    # ---------------------------------------------------------------- the pass
    def apply(self) -> Mechanism:
        m = self.mech
        derived = {n: dataclasses.replace(d, expr=self.before(d.expr, m.owner[n], n))
                   for n, d in m.derived.items()}
        states = {n: dataclasses.replace(s, rhs=None if s.rhs is None else
                                         self.before(s.rhs, m.owner[n], n))
                  for n, s in m.states.items()}
        # children's conditions run before their parents' (jLEMS steps children first)
        events = sorted(m.events, key=lambda e: -self.depth(e.scope))
        events = [dataclasses.replace(
            e, condition=None if e.condition is None else self.after(e.condition, e.scope),
            assign={n: self.after(v, e.scope) for n, v in e.assign.items()})
            for e in events]
        self._check_update(m, derived, states, events)
        for (name, steps), reg in sorted(self.registers.items(), key=lambda kv: kv[0]):
            source = m.states.get(name) or m.derived[name]
            states[reg] = State(reg, None, symbol(name), source.unit, source.dimension,
                                each_step=self.earlier[reg])
        return dataclasses.replace(m, derived=derived, states=states, events=events)

    def _check_update(self, m: Mechanism, derived, states, events) -> None:
        """Refuse a descendant's state that feeds the update: jLEMS reads its new value."""
        used = [s.rhs for s in states.values() if s.rhs is not None]
        used += [symbol(n) for n, _ in self.registers]
        used += [x for e in events for x in [e.condition, *e.assign.values()] if x is not None]
        used += [c.expr for c in m.currents]
        todo = {s.name for e in used for s in sympy.sympify(e).free_symbols}
        seen: set[str] = set()
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in derived:
                todo |= {s.name for s in derived[n].expr.free_symbols}
        for what, below in sorted(self.below.items()):
            if what in seen or what in states:     # a derived value it uses, or a rhs
                raise UnsupportedError(
                    f"jLEMS's update order for {m.name}: {what} reads the state "
                    f"{sorted(below)[0]} of a component below its own, whose "
                    "new value jLEMS uses")
