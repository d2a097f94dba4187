"""Exact derivatives of a mechanism's discrete step (forward sensitivities).

For a parameter theta, ``S_x = dx/dtheta`` of the discrete map ``x[n+1] = F(x[n], v[n+1],
reads, theta)`` of :mod:`.discretize` obeys, exactly,

    S_x[n+1] = dF/dx S_x[n] + dF/dv S_v[n+1] + dF/dreads S_reads + dF/dtheta

so the sensitivities a backend propagates are the derivative of the update it performs, not
the continuous sensitivity equations integrated approximately (docs/sensitivity.md).
:func:`sensitivities` computes every factor symbolically; :func:`propagate` and friends
assemble the update.  All expressions are sympy and share subexpressions: print them with a
cse (:func:`.discretize.dag_cse` is linear-time and does not re-evaluate).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import sympy

from ..errors import ModelError, UnsupportedError
from ..ir.mechanism import symbol
from .discretize import Definitions, StepMap, almost_everywhere

__all__ = ["Jacobians", "CurrentSensitivity", "EventSensitivity", "SensitivityMap",
           "sensitivities", "solved_symbol", "propagate", "propagate_all",
           "current_sensitivity", "propagate_event", "initial_sensitivity"]


@dataclass
class Jacobians:
    """Derivatives of a column of outputs: one matrix per kind of input.

    Columns follow :attr:`SensitivityMap.states`, ``[v]`` (no column when v is not a read),
    :attr:`SensitivityMap.reads` and :attr:`SensitivityMap.params`.
    """

    x: sympy.Matrix
    v: sympy.Matrix
    reads: sympy.Matrix
    theta: sympy.Matrix


@dataclass
class CurrentSensitivity:
    """A current's derivatives, and those of its conductance ``G = dI/dv``.

    NEURON's voltage step uses ``I(v[n], x[n]) + G (v[n+1] - v[n])``; the ``G`` derivatives
    are its exact derivative through that linearisation (zero for currents linear in v
    except through ``G``'s dependence on states and parameters).
    """

    ion: str
    current: Jacobians
    conductance: Jacobians


@dataclass
class EventSensitivity:
    """The jump of an event, ``x+ = R(x-)``: its Jacobians (rows: all states)."""

    index: int
    kind: str
    jump: Jacobians


@dataclass
class SensitivityMap:
    """All the factors of the sensitivity update of one mechanism (module docstring)."""

    step: StepMap
    params: list[str]
    states: list[str]
    reads: list[str]
    has_v: bool
    next: Jacobians                  # of x[n+1]
    currents: list[CurrentSensitivity]
    init: Jacobians                  # of x[0] (x block is zero; v is v[0])
    continuous: Jacobians            # of f in dx/dt = f: J, df/dv, df/dreads, df/dtheta
    events: list[EventSensitivity]
    notes: list[str] = field(default_factory=list)
    #: Symbols standing for solved kinetic occupancies in the kinetic rows of ``next`` and
    #: ``init`` -> their expressions (``x[n+1]``, ``x[0]``).  A backend has these values from
    #: the primal step; inlining them would multiply the rows' size (each solved occupancy
    #: is a large expression, and the derivative rule uses all of them).
    solved: dict[sympy.Symbol, sympy.Expr] = field(default_factory=dict)


# ----------------------------------------------------------------------------- derivatives

def solved_symbol(state: str, when: str) -> sympy.Symbol:
    """The symbol for a solved kinetic occupancy: ``<state>__next`` (x[n+1]) or
    ``<state>__init`` (x[0]); see :attr:`SensitivityMap.solved`."""
    return symbol(f"{state}__{when}")


class _Inputs:
    """The symbols differentiated with respect to, grouped as in :class:`Jacobians`."""

    def __init__(self, step: StepMap, params: list[str]):
        self.x = [symbol(s) for s in step.states]
        self.v = [symbol("v")] if step.has_v else []
        self.reads = [symbol(r) for r in _differentiated_reads(step)]
        self.theta = [symbol(p) for p in params]
        self.groups = (self.x, self.v, self.reads, self.theta)

    def jacobians(self, defs: Definitions, exprs: Sequence) -> Jacobians:
        """Jacobians of raw expressions (None: a row filled in later), inlined."""
        bases = [defs.base(e) if e is not None else frozenset() for e in exprs]
        mats = []
        for group in self.groups:
            mats.append(sympy.Matrix(len(exprs), len(group), lambda i, j: _total(
                defs, exprs[i], group[j]) if group[j] in bases[i] else sympy.S.Zero))
        return Jacobians(*mats)


def _total(defs: Definitions, expr, z) -> sympy.Expr:
    return defs.inline(almost_everywhere(defs.diff(expr, z)))


def _differentiated_reads(step: StepMap) -> list[str]:
    # t is not a quantity a parameter moves; v has its own column.
    return [r for r in step.reads if r not in ("v", "t")]


def _solve_derivative(defs: Definitions, lu, M_raw, r, X, z) -> list[sympy.Expr]:
    """``M X = r``  =>  ``dX/dz = M^-1 (dr/dz - dM/dz X)``: only the small matrix entries
    are differentiated, never the solved expressions; the solve reuses the factorization."""
    n = M_raw.rows
    g = []
    for i in range(n):
        gi = [_total(defs, r[i], z)]
        for j in range(n):
            if z in defs.base(M_raw[i, j]):
                gi.append(-_total(defs, M_raw[i, j], z) * X[j])
        g.append(sympy.Add(*gi))
    return lu.solve(g) if any(gi != 0 for gi in g) else [sympy.S.Zero] * n


def _kinetic_rows(step: StepMap, inputs: _Inputs, jac: Jacobians, initial: bool) -> None:
    """Fill the rows of kinetic states: the backward-Euler solve, or (``initial``) the
    steady state ``M0 X0 = e`` at the initial values."""
    index = {s: i for i, s in enumerate(step.states)}
    defs = step.raw.init if initial else step.raw.step
    for ks, rk in zip(step.kinetic, step.raw.kinetic):
        M_raw, r, lu = ((rk.steady_matrix, ks.steady_rhs, rk.init_lu) if initial
                        else (rk.matrix, ks.rhs, rk.step_lu))
        X = [solved_symbol(s, "init" if initial else "next") for s in ks.states]
        rows = [index[s] for s in ks.states]
        for mat, group in zip((jac.x, jac.v, jac.reads, jac.theta), inputs.groups):
            if initial and group is inputs.x:
                continue            # x[0] does not depend on a previous state
            for j, z in enumerate(group):
                col = _solve_derivative(defs, lu, M_raw, r, X, z)
                for k, i in enumerate(rows):
                    mat[i, j] = col[k]


# ----------------------------------------------------------------------------- events

def _check_events(step: StepMap, params: list[str]) -> None:
    """Refuse what the derivative of the fixed-step map cannot represent."""
    for k, ev in enumerate(step.events):
        if ev.kind == "reset":
            raise UnsupportedError(
                f"sensitivities through events: {step.mechanism} event {k} (when "
                f"{ev.condition}: {ev.assign}) is a state-dependent reset, discontinuous at "
                "its threshold; the firing step of a fixed-step update is an integer "
                "(derivative zero almost everywhere), so the spike-time shift needs a "
                "saltation term, which is not implemented")
        if ev.kind in ("time", "flag"):
            moved = sorted(p for p in params if symbol(p) in ev.condition.free_symbols)
            if moved:
                raise UnsupportedError(
                    f"sensitivities with respect to {moved} of {step.mechanism}: they set "
                    f"when event {k} ({ev.condition}) fires; the fixed-step update is "
                    "piecewise constant in them")


_EVENT_NOTES = {
    "time": "fires at fixed times; its jump is differentiated",
    "continuous": "a clamp, continuous across its boundary (the assignment is the identity "
                  "there); its derivative is that of the active branch; from a valid state "
                  "it does not fire",
    "flag": "sets a flag the dynamics never read (an output, piecewise constant): its "
            "sensitivity is zero",
    "port": "an input event at an external time; its jump is differentiated",
    "no-op": "assigns nothing",
}


def _notes(step: StepMap) -> list[str]:
    notes = [f"event {k} (when {ev.condition}: {ev.assign}): {_EVENT_NOTES[ev.kind]}"
             for k, ev in enumerate(step.events)]
    return notes + [f"{s} is integrated by forward Euler (nonlinear in itself)"
                    for s in step.forward_euler]


def _event_sensitivities(step: StepMap, inputs: _Inputs) -> list[EventSensitivity]:
    out = []
    for k, (ev, assign) in enumerate(zip(step.events, step.raw.events)):
        if not assign:
            continue
        after = [assign.get(s, symbol(s)) for s in step.states]
        out.append(EventSensitivity(k, ev.kind, inputs.jacobians(step.raw.step, after)))
    return out


# ----------------------------------------------------------------------------- the map

def _event_time_params(step: StepMap) -> set[str]:
    """Parameters that only move when a time-triggered or flag event fires."""
    return {p for ev in step.events if ev.kind in ("time", "flag")
            for p in step.parameters if symbol(p) in ev.condition.free_symbols}


def _check_params(step: StepMap, params: list[str] | None) -> list[str]:
    if params is None:      # all that have a derivative (see _check_events for the others)
        skip = _event_time_params(step)
        return [p for p in step.parameters if p not in skip]
    unknown = [p for p in params if p not in step.parameters]
    if unknown:
        raise KeyError(f"{step.mechanism} has no parameters {unknown}; it has "
                       f"{step.parameters}")
    return list(params)


def _wrap(step: StepMap, fn, *args):
    try:
        return fn(*args)
    except UnsupportedError as exc:     # e.g. a random draw: name the mechanism
        if step.mechanism in exc.what:
            raise
        raise UnsupportedError(f"{step.mechanism}: {exc.what}") from exc


def _freeze(jac: Jacobians) -> Jacobians:
    # Results are cached and shared between mechanisms of the same structure: immutable.
    return Jacobians(*(sympy.ImmutableMatrix(m) for m in (jac.x, jac.v, jac.reads, jac.theta)))


def sensitivities(step: StepMap, params: list[str] | None = None) -> SensitivityMap:
    """Every derivative of ``step`` needed to propagate sensitivities to ``params``.

    ``params``: IR symbol names of the mechanism's own parameters and placement parameters
    (``gmax``, ``erev``); None means all of them except those that only set when a
    time-triggered or flag event fires (asking for one of those explicitly is refused).
    Results are cached per mechanism structure (see :func:`.discretize.discretize`).
    """
    params = _check_params(step, params)
    _check_events(step, params)
    hit = step.raw.sensitivities.get(tuple(params))
    if hit is None:
        hit = step.raw.sensitivities[tuple(params)] = _wrap(step, _compute, step, params)
    return replace(hit, step=step)


def _compute(step: StepMap, params: list[str]) -> SensitivityMap:
    inputs = _Inputs(step, params)
    raw, kin = step.raw, {s for ks in step.kinetic for s in ks.states}
    nxt = inputs.jacobians(raw.step, [raw.next.get(s) for s in step.states])
    _kinetic_rows(step, inputs, nxt, False)
    init = inputs.jacobians(raw.init, [None if s in kin else symbol(s) for s in step.states])
    _kinetic_rows(step, inputs, init, True)
    currents = [CurrentSensitivity(c.ion, _freeze(inputs.jacobians(raw.step, [i])),
                                   _freeze(inputs.jacobians(raw.step, [g])))
                for c, (i, g) in zip(step.currents, raw.currents)]
    continuous = inputs.jacobians(raw.step, [raw.rhs[s] for s in step.states])
    events = [EventSensitivity(e.index, e.kind, _freeze(e.jump))
              for e in _event_sensitivities(step, inputs)]
    solved = {solved_symbol(s, when): values[s] for ks in step.kinetic for s in ks.states
              for when, values in (("next", step.next), ("init", step.init))}
    if set(solved) & set(step.inputs()):
        raise ModelError(f"{step.mechanism}: a quantity is named like a solved occupancy "
                         f"({sorted(map(str, set(solved) & set(step.inputs())))})")
    return SensitivityMap(step=step, params=params, states=list(step.states),
                          reads=_differentiated_reads(step), has_v=step.has_v,
                          next=_freeze(nxt), currents=currents, init=_freeze(init),
                          continuous=_freeze(continuous), events=events, notes=_notes(step),
                          solved=solved)


# ----------------------------------------------------------------------------- assembly

def _reads_vector(sens: SensitivityMap, S_reads) -> list:
    if S_reads is None:
        return [sympy.S.Zero] * len(sens.reads)
    if isinstance(S_reads, Mapping):
        return [S_reads.get(r, sympy.S.Zero) for r in sens.reads]
    S_reads = list(S_reads)
    if len(S_reads) != len(sens.reads):
        raise ValueError(f"S_reads has {len(S_reads)} entries for reads {sens.reads}")
    return S_reads


def _apply(jac: Jacobians, sens: SensitivityMap, S_x, S_v, S_reads, theta_index):
    S_x = list(S_x)
    if len(S_x) != len(sens.states):
        raise ValueError(f"S_x has {len(S_x)} entries for states {sens.states}")
    sr = _reads_vector(sens, S_reads)
    out = []
    for i in range(jac.x.rows):
        terms = [jac.x[i, j] * S_x[j] for j in range(len(S_x))]
        if sens.has_v:
            terms.append(jac.v[i, 0] * S_v)
        terms += [jac.reads[i, j] * sr[j] for j in range(len(sr))]
        if theta_index is not None:
            terms.append(jac.theta[i, theta_index])
        out.append(sympy.Add(*terms))
    return out


def propagate(sens: SensitivityMap, S_x: Sequence, S_v=sympy.S.Zero, S_reads=None,
              theta_index: int | None = None) -> list[sympy.Expr]:
    """``S_x[n+1]`` for one parameter, from ``S_x[n]``, ``S_v[n+1]`` and the reads' S.

    ``theta_index`` indexes :attr:`SensitivityMap.params` (None: a parameter of another
    mechanism, reaching this one only through v and the reads).  The result is linear in
    the S inputs, so a backend can bind each S symbol to an array over P parameters and add
    ``sens.next.theta`` column-wise instead (see :func:`propagate_all`).
    """
    return _apply(sens.next, sens, S_x, S_v, S_reads, theta_index)


def propagate_all(sens: SensitivityMap, S_x: sympy.Matrix, S_v: sympy.Matrix | None = None,
                  S_reads: sympy.Matrix | None = None) -> sympy.Matrix:
    """All of :attr:`SensitivityMap.params` at once: ``S_x`` is states x P (columns in
    params order), ``S_v`` 1 x P, ``S_reads`` reads x P."""
    out = sens.next.x * S_x + sens.next.theta
    if sens.has_v and S_v is not None:
        out += sens.next.v * S_v
    if S_reads is not None and sens.reads:
        out += sens.next.reads * S_reads
    return out


def current_sensitivity(sens: SensitivityMap, S_x: Sequence, S_v=sympy.S.Zero, S_reads=None,
                        theta_index: int | None = None, dv=None) -> list[sympy.Expr]:
    """For each current: ``dI/dx S_x + dI/dv S_v + dI/dreads S_r + dI/dtheta`` at (v[n], x[n]).

    With ``dv = v[n+1] - v[n]``, adds ``dv * (dG/dx S_x + ...)``, the derivative of
    NEURON's linearised current ``I + G (v[n+1] - v[n])`` beyond the ``G S_v[n+1]`` term that
    goes into the (shared) voltage matrix.  See docs/sensitivity.md for the voltage step.
    """
    out = []
    for c in sens.currents:
        (term,) = _apply(c.current, sens, S_x, S_v, S_reads, theta_index)
        if dv is not None:
            (dg,) = _apply(c.conductance, sens, S_x, S_v, S_reads, theta_index)
            term += dv * dg
        out.append(term)
    return out


def propagate_event(sens: SensitivityMap, event: EventSensitivity, S_x: Sequence,
                    S_v=sympy.S.Zero, S_reads=None, theta_index: int | None = None):
    """``S_x`` just after ``event`` fires, from ``S_x`` just before."""
    return _apply(event.jump, sens, S_x, S_v, S_reads, theta_index)


def initial_sensitivity(sens: SensitivityMap, S_v0=sympy.S.Zero, S_reads=None,
                        theta_index: int | None = None) -> list[sympy.Expr]:
    """``S_x[0] = dx0/dv0 S_v0 + dx0/dreads S_reads + dx0/dtheta``."""
    zeros = [sympy.S.Zero] * len(sens.states)
    return _apply(sens.init, sens, zeros, S_v0, S_reads, theta_index)
