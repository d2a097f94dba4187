"""One fixed step of a mechanism's states, as NEURON's fixed-step method performs it.

:func:`discretize` turns a :class:`~nml_gradiff.ir.mechanism.Mechanism` into a
:class:`StepMap`: pure sympy expressions for ``x[n+1]`` as a function of the states at step
``n`` (symbols named after the states), the membrane potential ``v`` at ``n+1``, the other
reads, the parameters and ``dt``.  The sensitivity pass differentiates exactly this map, so
it must be the update a backend really performs (docs/sensitivity.md, "Numerics that
matter" in ARCHITECTURE.md).

Schemes, chosen per state (each reproduces what NEURON does with the method named):

* ``exponential_euler`` -- rhs linear in its own state, ``f = a - b*x`` with ``a``, ``b`` free
  of ``x``: ``x + (1 - exp(-b*dt))*(a/b - x)`` (NMODL ``cnexp``), written
  ``x + dt*f/ExpRelr(-b*dt)`` so that it stays finite and differentiable at ``b = 0``.
* ``kinetic_backward_euler`` -- the states of a kinetic scheme: one backward-Euler step of the
  linear system with the conservation law replacing one state's row (NMODL ``sparse`` with
  ``CONSERVE``), solved symbolically by a fill-free elimination (:class:`SparseLU`; at most
  :data:`MAX_KINETIC_STATES` states).
* ``forward_euler`` -- anything else: ``x + dt*f`` (NMODL ``euler``; NOT ``derivimplicit``,
  which iterates Newton to convergence on backward Euler).  Listed in
  :attr:`StepMap.forward_euler` so that users know the step is only first-order accurate.
* ``constant`` -- a state without rhs changes only at events.
* ``register`` -- a state with ``each_step`` (jLEMS's update order,
  :mod:`.jlems_order`): ``x[n+1]`` is that expression at step n.

All right-hand sides use the values at step ``n`` (a simultaneous update).  Derived
quantities are inlined into every public expression.  Internally the map is also kept over
the derived symbols (:class:`Definitions`), so the sensitivity pass differentiates by the
chain rule through them (each derived quantity once) instead of differentiating the inlined
trees.  The inlined results share subexpressions: :func:`dag_cse` shares them in linear time
and without re-evaluating (see docs/sensitivity.md, "Printing").
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import sympy

from ..errors import ModelError, UnsupportedError
from ..ir.functions import ExpRelr
from ..ir.mechanism import Mechanism, symbol

__all__ = ["StepMap", "KineticStep", "EventStep", "CurrentStep", "Definitions", "discretize",
           "SparseLU", "elimination_order", "dag_xreplace", "dag_cse", "partial",
           "almost_everywhere", "read_time", "DT", "MAX_KINETIC_STATES", "READ_AFTER_SOLVE",
           "READ_BEFORE_SOLVE", "READ_CONSTANT", "READ_INITIAL"]

#: The time step symbol (ms).
DT = symbol("dt")
#: Larger kinetic schemes are refused (none in the corpus); KineticStep has the matrix form.
MAX_KINETIC_STATES = 8

#: When each read is sampled for the state update (see docs/sensitivity.md): v after the
#: voltage solve; concentrations after the pools' own update (NEURON orders the mechanisms
#: that write concentrations before those that read them); ionic currents from this step's
#: current evaluation (at v[n], states[n]); geometry and temperature are constant; some
#: reads are used by the initial values only.
READ_AFTER_SOLVE = "n+1"
READ_BEFORE_SOLVE = "n"
READ_CONSTANT = "constant"
READ_INITIAL = "initial"
_CURRENT_UNITS = {"nA", "pA", "uA", "mA", "A", "mA_per_cm2", "uA_per_cm2", "A_per_m2"}


# ----------------------------------------------------------------------------- results

@dataclass
class KineticStep:
    """Backward Euler for a kinetic scheme: ``matrix * x[n+1] = rhs``.

    ``generator`` is ``A`` in ``d occ/dt = A occ``; ``matrix`` is ``I - dt*A`` with row
    ``conserve_row`` replaced by ones and ``rhs`` is ``x[n]`` with that entry replaced by 1
    (``CONSERVE sum = 1``).  ``steady_matrix`` (``A`` with the same row replaced) and
    ``steady_rhs`` (``e_c``) give the initial steady state, at the initial values.  The
    conserved row is that of the state eliminated last in ``elimination_order`` (a
    fill-free order for tree-shaped schemes): a NEURON KINETIC block must list that state
    last in its CONSERVE statement (nocmodl replaces that state's equation).
    """

    states: list[str]
    generator: sympy.Matrix
    matrix: sympy.Matrix
    rhs: sympy.Matrix
    conserve_row: int
    steady_matrix: sympy.Matrix
    steady_rhs: sympy.Matrix
    elimination_order: list[int]


@dataclass
class EventStep:
    """An event applied to the states after the continuous update of the step.

    ``kind``: ``port`` (an input event at an externally given time), ``no-op`` (assigns
    nothing), ``time`` (condition on t and parameters only), ``continuous`` (state-dependent,
    but the assignment is the identity on the condition's boundary: a clamp such as
    ``c < 0 -> c = 0``), ``flag`` (state-dependent, assigns only event-only states that the
    mechanism's dynamics never read, e.g. ``spiking``), ``reset`` (state-dependent and
    discontinuous in states that matter: a threshold reset).
    """

    condition: sympy.Basic | None
    assign: dict[str, sympy.Expr]
    emits: bool
    port: str | None
    kind: str


@dataclass
class CurrentStep:
    """A membrane current ``I(v, x, reads, params)`` (outward positive) and ``dI/dv``.

    NEURON evaluates it at ``(v[n], x[n])`` before the voltage solve and linearises it in v
    (``di_dv`` is the exact derivative; NEURON's own is a 0.001 mV difference quotient).
    """

    ion: str
    expr: sympy.Expr
    di_dv: sympy.Expr


@dataclass
class RawKinetic:
    """A kinetic block over derived symbols, with the factorizations of its solves."""

    matrix: sympy.Matrix            # raw I - dt A (conservation row)
    steady_matrix: sympy.Matrix     # raw A (conservation row), initial-value definitions
    step_lu: "SparseLU"
    init_lu: "SparseLU"


@dataclass
class Raw:
    """The map over derived symbols, for the chain rule (see :class:`Definitions`)."""

    step: "Definitions"                 # states are inputs
    init: "Definitions"                 # states are defined by their initial values
    next: dict[str, sympy.Expr]         # non-kinetic states
    rhs: dict[str, sympy.Expr]
    currents: list[tuple[sympy.Expr, sympy.Expr]]   # (I, dI/dv)
    events: list[dict[str, sympy.Expr]]             # assignments
    kinetic: list["RawKinetic"]
    sensitivities: dict = field(default_factory=dict)  # params tuple -> SensitivityMap


@dataclass
class StepMap:
    """The symbolic one-step update of a mechanism (see module docstring)."""

    mechanism: str
    kind: str
    states: list[str]
    next: dict[str, sympy.Expr]          # x[n+1]
    schemes: dict[str, str]
    rhs: dict[str, sympy.Expr]           # continuous d x/dt, inlined (0 for event-only states)
    init: dict[str, sympy.Expr]          # x[0]
    currents: list[CurrentStep]
    kinetic: list[KineticStep]
    events: list[EventStep]
    reads: dict[str, str]                # read name -> READ_* (when it is sampled)
    parameters: list[str]                # own parameters, then placement (gmax, erev)
    dt: sympy.Symbol = DT
    raw: Raw | None = field(default=None, repr=False, compare=False)

    @property
    def forward_euler(self) -> list[str]:
        """States integrated by plain forward Euler (first order, not exact for frozen v)."""
        return [s for s in self.states if self.schemes[s] == "forward_euler"]

    @property
    def has_v(self) -> bool:
        """Whether ``v`` is a read (a channel) rather than a state (a point cell) or absent."""
        return "v" in self.reads

    def inputs(self) -> list[sympy.Symbol]:
        """Every symbol the step's expressions may contain, in a stable order."""
        names = [*self.states, *self.reads, *self.parameters]
        return [symbol(n) for n in names] + [self.dt]


# ----------------------------------------------------------------------------- definitions

class Definitions:
    """Named intermediate quantities over a set of inputs: inlining and the chain rule.

    ``defs`` maps a symbol to its expression over inputs and other defined symbols.
    :meth:`diff` is the total derivative of an expression over defined symbols by forward
    mode: each expression's partial derivatives are computed once (memoized), and each
    defined symbol's total derivative once per input.  :meth:`inline` substitutes the fully
    inlined definitions, visiting shared subexpressions once (:func:`dag_xreplace`), so the
    results share subexpressions.
    """

    def __init__(self, owner: str, defs: dict, inputs: set):
        self.owner, self.defs, self.inputs = owner, defs, inputs
        self.inlined: dict[sympy.Symbol, sympy.Expr] = {}
        self.deps: dict[sympy.Symbol, frozenset] = {}
        self._inline_memo: dict = {}
        self._partials: dict = {}
        self._totals: dict = {}
        for s in defs:
            self._resolve(s, ())

    def _resolve(self, s, path):
        if s in self.inlined:
            return
        if s in path:
            cycle = " -> ".join(str(p) for p in (*path, s))
            raise ModelError(f"{self.owner}: definitions form a cycle: {cycle}")
        expr = self.defs[s]
        free = expr.free_symbols
        for d in free:
            if d in self.defs:
                self._resolve(d, (*path, s))
        self.inlined[s] = dag_xreplace(expr, self.inlined, self._inline_memo)
        self.deps[s] = frozenset().union(*(self.deps[d] if d in self.defs else {d}
                                           for d in free))

    def base(self, expr) -> frozenset:
        """The input symbols ``expr`` depends on, through definitions; unknown ones fail."""
        out = frozenset().union(*(self.deps[s] if s in self.defs else {s}
                                  for s in expr.free_symbols))
        unknown = out - self.inputs
        if unknown:
            raise ModelError(f"{self.owner}: {expr} uses unknown symbols "
                             f"{sorted(map(str, unknown))}")
        return out

    def inline(self, expr):
        return dag_xreplace(expr, self.inlined, self._inline_memo)

    def diff(self, expr, z) -> sympy.Expr:
        """Total d expr/dz, over defined symbols (DiracDelta kept; see
        :func:`almost_everywhere`)."""
        terms = []
        for s, p in self._partial(expr).items():
            if s == z:
                terms.append(p)
            elif s in self.defs and z in self.deps[s]:
                d = self._total(s, z)
                if d != 0:
                    terms.append(p * d)
        return sympy.Add(*terms)

    def _partial(self, expr) -> dict:
        hit = self._partials.get(expr)
        if hit is None:
            hit = {s: partial(expr, s) for s in expr.free_symbols}
            self._partials[expr] = hit = {s: p for s, p in hit.items() if p != 0}
        return hit

    def _total(self, s, z):
        key = (s, z)
        if key not in self._totals:
            self._totals[key] = self.diff(self.defs[s], z)
        return self._totals[key]


def partial(e: sympy.Expr, s: sympy.Symbol) -> sympy.Expr:
    """``d e/ds`` by the plain chain rule: about 4x faster than ``sympy.diff`` here, which
    spends its time building and evaluating ``Derivative`` objects.  Piecewise conditions are
    not differentiated (derivative almost everywhere); functions use their ``fdiff`` (so
    ExpRelr's rule and Random's refusal apply)."""
    if e == s:
        return sympy.S.One
    if s not in e.free_symbols:
        return sympy.S.Zero
    if e.is_Add:
        return sympy.Add(*(partial(a, s) for a in e.args))
    if e.is_Mul:
        a = e.args
        return sympy.Add(*(sympy.Mul(*a[:i], partial(a[i], s), *a[i + 1:])
                           for i in range(len(a)) if s in a[i].free_symbols))
    if e.is_Pow:
        b, x = e.args
        if s not in x.free_symbols:
            return x * b ** (x - 1) * partial(b, s)
        if s not in b.free_symbols:
            return e * sympy.log(b) * partial(x, s)
        return e * (partial(x, s) * sympy.log(b) + x * partial(b, s) / b)
    if isinstance(e, sympy.Piecewise):
        return sympy.Piecewise(*((partial(x, s), c) for x, c in e.args))
    if isinstance(e, sympy.Function):
        return sympy.Add(*(e.fdiff(i + 1) * partial(a, s)
                           for i, a in enumerate(e.args) if s in a.free_symbols))
    return sympy.diff(e, s)


def almost_everywhere(expr: sympy.Expr) -> sympy.Expr:
    """Derivative almost everywhere: a Heaviside's DiracDelta is zero off its jump."""
    if expr.has(sympy.DiracDelta):
        return expr.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.S.Zero)
    return expr


def _inputs(mech: Mechanism, states: bool) -> set:
    names = [*mech.parameters, *mech.placement, *mech.reads]
    if DT.name in names or DT.name in mech.states or DT.name in mech.derived:
        raise UnsupportedError(f"{mech.name} has a quantity named '{DT.name}', which the "
                               "discrete step reserves for the time step")
    syms = {symbol(n) for n in names} | {DT}
    return syms | {symbol(n) for n in mech.states} if states else syms


def _step_definitions(mech: Mechanism) -> Definitions:
    defs = {symbol(n): d.expr for n, d in mech.derived.items()}
    return Definitions(mech.name, defs, _inputs(mech, states=True))


def _init_definitions(mech: Mechanism, kinetic_states: set) -> Definitions:
    """Derived quantities plus each ordinary state := its initial value (kinetic states,
    whose initial value is a solved steady state, stay inputs)."""
    defs = {symbol(n): d.expr for n, d in mech.derived.items()}
    for n, s in mech.states.items():
        if n in kinetic_states:
            continue
        if s.init is None:
            raise ModelError(f"{mech.name}: state {n} has no initial value")
        defs[symbol(n)] = s.init
    inputs = _inputs(mech, states=False) | {symbol(n) for n in kinetic_states}
    return Definitions(f"{mech.name} (initial values)", defs, inputs)


# ----------------------------------------------------------------------------- schemes

def _update(defs: Definitions, x: sympy.Symbol, f: sympy.Expr):
    """(scheme, raw x[n+1]) for a state with rhs ``f``.

    ``f`` is affine in x when df/dx is free of x (a Heaviside or Piecewise switching on x
    leaves x, or a DiracDelta of it, in the derivative).  Then ``f = a - b*x`` with
    ``b = -df/dx`` and the exponential-Euler step ``x + (1 - exp(-b dt))(a/b - x)`` equals
    ``x + dt*f/ExpRelr(-b dt)``; ExpRelr > 0 for every real argument, so the division is
    safe and b -> 0 gives forward Euler ``x + dt*f``.
    """
    b = -defs.diff(f, x)
    if x in defs.base(b) or b.has(sympy.DiracDelta):
        return "forward_euler", x + increment(f)
    return "exponential_euler", x + increment(f, b)


def increment(f: sympy.Expr, b: sympy.Expr | None = None) -> sympy.Expr:
    """x[n+1] - x[n] of a state with rhs ``f``: exponential Euler ``dt*f/ExpRelr(-b dt)``
    for ``f = a - b*x`` (``b = -df/dx``), forward Euler ``dt*f`` when ``b`` is None.  One
    formula for this pass and for a backend that writes the step out (the NEURON emitter)."""
    return DT * f if b is None else DT * f / ExpRelr(-b * DT)


# ----------------------------------------------------------------------------- linear solves

def _placeholders(M: sympy.Matrix, prefix: str):
    """Replace non-numeric entries by dummies so the LU solve stays small; return the map."""
    subs: dict[sympy.Dummy, sympy.Expr] = {}

    def ph(i, j, e):
        if e.is_Number:
            return e
        d = sympy.Dummy(f"{prefix}{i}_{j}")
        subs[d] = e
        return d

    return sympy.Matrix(M.rows, M.cols, lambda i, j: ph(i, j, M[i, j])), subs


def _rebuild(func, args):
    """``func(*args)`` without sympy's evaluation, but without 0 and 1 factors/terms."""
    if func is sympy.Mul or func is sympy.Add:
        unit = sympy.S.One if func is sympy.Mul else sympy.S.Zero
        if func is sympy.Mul and any(a is sympy.S.Zero for a in args):
            return sympy.S.Zero
        nums = [a for a in args if a.is_Number]
        rest = [a for a in args if not a.is_Number]
        coeff = func(*nums) if nums else unit
        args = ([coeff] if coeff is not unit else []) + rest
        if len(args) <= 1:
            return args[0] if args else unit
    if func is sympy.Pow and args[1] is sympy.S.One:
        return args[0]
    try:
        return func(*args, evaluate=False)
    except TypeError:           # e.g. ExprCondPair takes no options
        return func(*args)


def dag_xreplace(expr: sympy.Basic, mapping: dict, memo: dict | None = None) -> sympy.Basic:
    """``expr.xreplace(mapping)``, visiting each distinct subexpression once.

    sympy's own xreplace walks the expression as a tree; inlined definitions and the LU
    solution of a kinetic scheme share subexpressions heavily, so the tree can be much larger
    than the DAG.  This keeps the sharing.  Parents are rebuilt unevaluated: substituting
    equal values cannot create anything to simplify that evaluation would be worth its cost
    (sympy's flattening and assumption queries were most of the pass's time).
    """
    memo = {} if memo is None else memo

    def walk(e):
        hit = memo.get(e)
        if hit is not None:
            return hit
        if e in mapping:
            out = mapping[e]
        elif not e.args:
            out = e
        else:
            args = [walk(a) for a in e.args]
            out = _rebuild(e.func, args) if any(a is not b for a, b in zip(args, e.args)) else e
        memo[e] = out
        return out

    return walk(expr)


def dag_cse(exprs, prefix: str = "_x") -> tuple[list, list]:
    """Like ``sympy.cse(exprs)``: ``(replacements, reduced)``, but linear in the DAG size.

    Every non-atomic subexpression used more than once becomes a temporary, in dependency
    order.  sympy's cse orders arguments canonically by counting tree nodes (costly on
    heavily shared expressions) and rebuilds with evaluation (which can fold a never-taken
    ``1/0`` Piecewise branch into an unprintable ``zoo``); this one is deterministic (it
    follows the expressions' own argument order), never evaluates, and takes milliseconds.
    Booleans (Piecewise conditions) are never replaced by temporaries.
    """
    if isinstance(exprs, sympy.Basic):      # lambdify may pass a single expression
        repl, (out,) = dag_cse([exprs], prefix)
        return repl, out
    uses: dict = {}

    def count(e):
        if e.is_Atom:
            return
        uses[e] = uses.get(e, 0) + 1
        if uses[e] == 1:
            for a in e.args:
                count(a)

    for e in exprs:
        count(e)
    names = (sympy.Symbol(f"{prefix}{i}") for i in itertools.count())
    repl, memo = [], {}

    def rebuild(e):
        if e.is_Atom:
            return e
        hit = memo.get(e)
        if hit is None:
            args = [rebuild(a) for a in e.args]
            hit = _rebuild(e.func, args) if any(a is not b for a, b in zip(args, e.args)) else e
            if uses[e] > 1 and isinstance(e, sympy.Expr):
                name = next(names)
                repl.append((name, hit))
                hit = name
            memo[e] = hit
        return hit

    return repl, [rebuild(e) for e in exprs]


def elimination_order(pattern: sympy.Matrix) -> list[int]:
    """Minimum-degree order of the (symmetrised) nonzero pattern: leaves of a tree-shaped
    scheme first, so eliminating in this order creates no fill and the solved expressions
    stay small (a generic LU in the states' own order multiplies them several-fold)."""
    n = pattern.rows
    adj = {i: {j for j in range(n) if j != i and (pattern[i, j] != 0 or pattern[j, i] != 0)}
           for i in range(n)}
    order = []
    while adj:
        k = min(adj, key=lambda i: (len(adj[i]), i))
        near = adj.pop(k)
        for i in near:
            adj[i] |= near - {i}
            adj[i].discard(k)
        order.append(k)
    return order


class SparseLU:
    """``M = L U`` of a small sparse symbolic matrix, eliminated in ``order`` (no pivoting).

    Every matrix factored here is a backward-Euler matrix ``I - dt A`` of a kinetic scheme (a
    nonsingular M-matrix) or its generator ``A`` (a singular M-matrix of a connected scheme,
    whose leading blocks are nonsingular), with the row of the state eliminated last replaced
    by the conservation law: all pivots are nonzero.  The elimination runs on placeholders;
    :meth:`solve` substitutes the entries afterwards, so results share subexpressions.
    """

    def __init__(self, M: sympy.Matrix, order: list[int]):
        Mp, self._subs = _placeholders(M, "m")
        self.order, n = order, M.rows
        pos = {o: i for i, o in enumerate(order)}
        rows = [{pos[j]: Mp[o, j] for j in range(n) if Mp[o, j] != 0} for o in order]
        self._lower = []
        for k in range(n):
            for i in range(k + 1, n):
                if k in rows[i]:
                    mult = rows[i].pop(k) / rows[k][k]
                    self._lower.append((i, k, mult))
                    for j, u in rows[k].items():
                        if j > k:
                            rows[i][j] = rows[i].get(j, sympy.S.Zero) - mult * u
        self._upper = rows
        self._b = [sympy.Dummy(f"b{i}") for i in range(n)]
        self._generic = None
        self._memo: dict = {}

    def solve(self, b) -> list[sympy.Expr]:
        """``M^-1 b`` (b: expressions in the original order)."""
        if self._generic is None:     # the solve once, for placeholder right-hand sides
            y = [self._b[o] for o in self.order]
            for i, k, mult in self._lower:
                y[i] = y[i] - mult * y[k]
            x = [sympy.S.Zero] * len(y)
            for i in reversed(range(len(y))):
                rest = sympy.Add(*(u * x[j] for j, u in self._upper[i].items() if j > i))
                x[i] = (y[i] - rest) / self._upper[i][i]
            out = [x[self.order.index(o)] for o in range(len(y))]
            self._generic = [dag_xreplace(e, self._subs, self._memo) for e in out]
        fill = dict(zip(self._b, b))
        memo: dict = {}
        return [dag_xreplace(e, fill, memo) for e in self._generic]


def _kinetic(mech, scheme, defs: Definitions, init_defs: Definitions, rhs: dict):
    """(public KineticStep, RawKinetic) of one kinetic scheme."""
    names = list(scheme.states)
    n = len(names)
    if n > MAX_KINETIC_STATES:
        raise UnsupportedError(f"{mech.name}: kinetic scheme with {n} states: the symbolic "
                               f"backward-Euler solve is limited to {MAX_KINETIC_STATES}")
    xs = [symbol(s) for s in names]
    A = sympy.Matrix(n, n, lambda i, j: defs.diff(rhs[names[i]], xs[j]))
    zero = {x: sympy.S.Zero for x in xs}
    if (any(defs.base(a) & set(xs) for a in A)
            or any(defs.inline(rhs[s]).xreplace(zero) != 0 for s in names)):
        raise ModelError(f"{mech.name}: kinetic scheme over {names} is not linear and "
                         "homogeneous in its occupancies")
    order = elimination_order(A)
    c = order[-1]   # CONSERVE replaces the row of the state eliminated last: no fill
    M = sympy.eye(n) - DT * A
    M[c, :] = sympy.ones(1, n)
    r = sympy.Matrix(xs)
    r[c] = sympy.S.One
    M0 = A.copy()
    M0[c, :] = sympy.ones(1, n)
    r0 = sympy.zeros(n, 1)
    r0[c] = sympy.S.One
    frozen = sympy.ImmutableMatrix
    step_M = M.applyfunc(defs.inline)
    public = KineticStep(names, frozen(A.applyfunc(defs.inline)), frozen(step_M), frozen(r),
                         c, frozen(M0.applyfunc(defs.inline)), frozen(r0), order)
    raw = RawKinetic(M, M0, SparseLU(step_M, order),
                     SparseLU(M0.applyfunc(init_defs.inline), order))
    return public, raw


# ----------------------------------------------------------------------------- events

def _inert_states(mech: Mechanism, defs: Definitions, dynamics, events) -> set[str]:
    """Event-only states the mechanism's dynamics never read: not the right-hand sides, the
    currents, nor events that assign anything else (``spiking`` of a point cell, the
    current of a pulse generator).  They may be exposed: outputs piecewise constant in
    every parameter, whose derivative is zero almost everywhere."""
    inert = {n for n, s in mech.states.items() if s.rhs is None and s.each_step is None}
    while True:
        used: set = set()
        for e in dynamics:
            used |= defs.base(e)
        for cond, assign in events:
            live = [s for s in assign if s not in inert]
            for s in live:
                used |= defs.base(assign[s])
            if live and cond is not None:
                used |= defs.base(cond)
        still = {s for s in inert if symbol(s) not in used}
        if still == inert:
            return inert
        inert = still


def _continuous_at_boundary(cond, assign: dict[str, sympy.Expr]) -> bool:
    """True for ``g(x) < 0 -> x = R`` with ``R = x`` wherever ``g(x) = 0`` (a clamp)."""
    if not isinstance(cond, sympy.core.relational.Relational) or len(assign) != 1:
        return False
    (name, value), = assign.items()
    x = symbol(name)
    g = cond.lhs - cond.rhs
    if x not in g.free_symbols:
        return False
    roots = sympy.solve(g, x)
    return len(roots) == 1 and sympy.simplify(value.xreplace({x: roots[0]}) - roots[0]) == 0


def _event_kind(ev, cond, assign, base, constants: set, inert: set) -> str:
    if ev.port is not None or cond is None:
        return "port"
    if not assign:
        return "no-op"
    if {s.name for s in base} <= constants | {"t"}:
        return "time"
    if _continuous_at_boundary(cond, assign):
        return "continuous"
    if set(assign) <= inert:
        return "flag"
    return "reset"


def _events(mech, defs: Definitions, rhs, currents) -> list[EventStep]:
    raw = [(ev.condition, dict(ev.assign)) for ev in mech.events]
    registers = [s.each_step for s in mech.states.values() if s.each_step is not None]
    inert = _inert_states(mech, defs, [*rhs.values(), *currents, *registers], raw)
    constants = set(mech.parameters) | set(mech.placement)
    out = []
    for ev, (cond, assign) in zip(mech.events, raw):
        c = defs.inline(cond) if cond is not None else None
        a = {k: defs.inline(v) for k, v in assign.items()}
        base = defs.base(cond) if cond is not None else frozenset()
        out.append(EventStep(c, a, ev.emits, ev.port,
                             _event_kind(ev, c, a, base, constants, inert)))
    return out


# ----------------------------------------------------------------------------- reads

def read_time(name: str, unit: str) -> str:
    """When a read is sampled for the state update (module constants READ_*)."""
    if name in ("v", "t") or unit == "mM":
        return READ_AFTER_SOLVE
    if unit in _CURRENT_UNITS:
        return READ_BEFORE_SOLVE
    return READ_CONSTANT


def _reads(mech, defs: Definitions, init_defs: Definitions, exprs) -> dict[str, str]:
    """Read name -> when it is sampled; READ_INITIAL if only the initial values use it."""
    used: set = set()
    for e in exprs:
        used |= {s.name for s in defs.base(e)}
    at_init = {s.name for n in mech.states for s in init_defs.deps.get(symbol(n), ())}
    return {n: (READ_INITIAL if n in at_init and n not in used else read_time(n, u))
            for n, u in mech.reads.items()}


# ----------------------------------------------------------------------------- the map

def _initial_values(mech, init_defs: Definitions, kinetic, raw_kinetic) -> dict:
    """x[0]: resolved State.init of ordinary states; solved steady state of kinetic ones."""
    kin = {s for ks in kinetic for s in ks.states}
    init = {}
    for n in mech.states:
        if n not in kin:
            x = symbol(n)
            if init_defs.base(x) & {symbol(s) for s in kin}:
                raise UnsupportedError(f"{mech.name}: the initial value of {n} depends on "
                                       "kinetic-scheme occupancies")
            init[n] = init_defs.inlined[x]
    for ks, rk in zip(kinetic, raw_kinetic):
        init.update(zip(ks.states, rk.init_lu.solve(list(ks.steady_rhs))))
    return {n: init[n] for n in mech.states}


#: Mechanisms of the same structure (a model places many copies of one channel or input type,
#: differing only in parameter values, which stay symbols here) share one map.
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 512


def _structure(mech: Mechanism) -> tuple:
    return (tuple(mech.parameters), tuple(mech.placement),
            tuple((n, s.rhs, s.init, s.each_step) for n, s in mech.states.items()),
            tuple((n, d.expr) for n, d in mech.derived.items()),
            tuple((c.ion, c.expr) for c in mech.currents), tuple(mech.reads.items()),
            tuple((e.condition, tuple(e.assign.items()), e.emits, e.port, e.scope)
                  for e in mech.events),
            tuple((tuple(k.states), tuple((t.source, t.target, t.forward, t.reverse)
                                          for t in k.transitions)) for k in mech.kinetic),
            tuple(mech.exposures.items()))


def discretize(mech: Mechanism) -> StepMap:
    """The symbolic fixed-step update of ``mech`` (see the module docstring).

    Cached by structure: the result is shared with every mechanism of the same equations
    (its matrices are immutable; do not mutate its dicts).
    """
    key = _structure(mech)
    hit = _CACHE.get(key)
    if hit is None:
        hit = _CACHE[key] = _discretize(mech)
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return replace(hit, mechanism=mech.name, kind=mech.kind)


def _discretize(mech: Mechanism) -> StepMap:
    defs = _step_definitions(mech)
    rhs = {n: (s.rhs if s.rhs is not None else sympy.S.Zero) for n, s in mech.states.items()}
    kin_names = {s for ks in mech.kinetic for s in ks.states}
    init_defs = _init_definitions(mech, kin_names)
    solved = [_kinetic(mech, ks, defs, init_defs, rhs) for ks in mech.kinetic]
    kinetic, raw_kinetic = [k for k, _ in solved], [rk for _, rk in solved]
    raw_next, schemes = {}, {}
    for n, s in mech.states.items():
        if n in kin_names:
            schemes[n] = "kinetic_backward_euler"
        elif s.each_step is not None:
            schemes[n], raw_next[n] = "register", s.each_step
        elif s.rhs is None:
            schemes[n], raw_next[n] = "constant", symbol(n)
        else:
            schemes[n], raw_next[n] = _update(defs, symbol(n), rhs[n])
    nxt = {n: defs.inline(e) for n, e in raw_next.items()}
    for ks, rk in zip(kinetic, raw_kinetic):
        nxt.update(zip(ks.states, rk.step_lu.solve(list(ks.rhs))))
    v = symbol("v")
    raw_currents = [(c.expr, defs.diff(c.expr, v) if "v" in mech.reads else sympy.S.Zero)
                    for c in mech.currents]
    currents = [CurrentStep(c.ion, defs.inline(i), defs.inline(almost_everywhere(g)))
                for c, (i, g) in zip(mech.currents, raw_currents)]
    events = _events(mech, defs, rhs, [i for i, _ in raw_currents])
    used = [*rhs.values(), *(i for i, _ in raw_currents),
            *(e.condition for e in mech.events if e.condition is not None),
            *(a for e in mech.events for a in e.assign.values())]
    raw = Raw(defs, init_defs, raw_next, rhs, raw_currents,
              [dict(e.assign) for e in mech.events], raw_kinetic)
    return StepMap(
        mechanism=mech.name, kind=mech.kind, states=list(mech.states),
        next={n: nxt[n] for n in mech.states}, schemes=schemes,
        rhs={n: defs.inline(e) for n, e in rhs.items()},
        init=_initial_values(mech, init_defs, kinetic, raw_kinetic), currents=currents,
        kinetic=kinetic, events=events, reads=_reads(mech, defs, init_defs, used),
        parameters=[*mech.parameters, *(p for p in mech.placement if p not in mech.parameters)],
        raw=raw)
