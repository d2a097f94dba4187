"""The discrete step map: schemes, NEURON's conventions, events, and numeric helpers.

The helpers at the top (a small mechanism builder and numpy/jax evaluation of step maps) are
shared with test_sensitivity.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from nml_gradiff.errors import UnsupportedError
from nml_gradiff.ingest.model import load_model
from nml_gradiff.ir.functions import (ExpRelr, ExpRelrDerivative, exprelr_np,
                                      exprelr_prime_np, heaviside)
from nml_gradiff.ir.mechanism import (Current, Derived, Event, KineticScheme, Mechanism,
                                      Parameter, State, Transition, symbol)
from nml_gradiff.passes.discretize import (DT, READ_AFTER_SOLVE, READ_BEFORE_SOLVE,
                                           READ_CONSTANT, READ_INITIAL, dag_cse, discretize)

HH = Path(__file__).resolve().parents[1] / "models" / "hh" / "hh_channels.nml"
S = symbol


# ----------------------------------------------------------------------------- helpers

def mechanism(name="m", kind="channel", params=None, states=None, derived=None, reads=("v",),
              currents=(), events=(), kinetic=(), placement=(), exposures=None) -> Mechanism:
    """A Mechanism from short specs: params {name: value}, states {name: (rhs, init)}."""
    units = {"v": "mV", "t": "ms", "temperature": "degC", "caConc": "mM", "iCa": "nA",
             "surfaceArea": "um2", "initialConcentration": "mM"}
    return Mechanism(
        name=name, kind=kind, component_type=name,
        parameters={p: Parameter(p, v, "", "none", f"{name}/{p}")
                    for p, v in (params or {}).items()},
        states={n: State(n, _expr(rhs), _expr(init), "", "none")
                for n, (rhs, init) in (states or {}).items()},
        derived={n: Derived(n, _expr(e), "", "none") for n, e in (derived or {}).items()},
        currents=[Current(ion, e) for ion, e in currents],
        reads={r: units.get(r, "") for r in reads}, events=list(events), kinetic=list(kinetic),
        placement={p: Parameter(p, 0.0, "", "none", "") for p in placement},
        exposures=dict(exposures or {}))


def _expr(e):
    return None if e is None else sympy.S(e)   # test literals only: numbers -> sympy


def _exprelr_derivative_np(n, x):
    f = np.vectorize(lambda k, y: float(ExpRelrDerivative(int(k), sympy.Float(y)).evalf(30)))
    return f(n, x)


NUMPY_NS = {"ExpRelr": exprelr_np, "ExpRelrPrime": exprelr_prime_np,
            "ExpRelrDerivative": _exprelr_derivative_np}


def numpy_function(inputs, exprs):
    """float64 numpy evaluation of a list of expressions.

    With the pass's own linear-time cse: sympy's rebuilds with evaluation, which folds
    ``1/Piecewise((0, Eq(a + b, 0)), ...)`` (a NeuroML time course that is 0 when both rates
    are) into an unprintable ``zoo`` branch, and is several times slower here.
    """
    return sympy.lambdify(list(inputs), list(exprs), modules=[NUMPY_NS, "numpy"],
                          cse=dag_cse, use_imps=False, printer=_printer())


def _printer():
    # lambdify's own settings, plus order="none": sorting terms for printing is slow here
    from sympy.printing.numpy import NumPyPrinter
    return NumPyPrinter({"fully_qualified_modules": False, "inline": True,
                         "allow_unknown_functions": True, "user_functions": {},
                         "order": "none"})


def evaluate(inputs, exprs, values) -> np.ndarray:
    """Evaluate at ``values`` (one array per input; broadcasting evaluates many points)."""
    out = numpy_function(inputs, exprs)(*values)
    shape = np.broadcast_shapes(*(np.shape(v) for v in values))
    return np.array([np.broadcast_to(np.asarray(o, dtype=float), shape) for o in out])


def _log_uniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def physiological(step, mech, rng) -> dict[str, float]:
    """Random but physiological values for every input of a step map.

    v in [-90, 40] mV, gates and occupancies in (0, 1) (occupancies summing to 1),
    concentrations 1e-5..1e-2 mM, temperature 6.3..37 degC, parameters at their model
    values, gmax 1e-3..0.1 S/cm2 and erev -90..60 mV where placed.
    """
    vals: dict[str, float] = {}
    for n, s in mech.states.items():
        if s.unit == "mM" or s.dimension == "concentration":
            vals[n] = _log_uniform(rng, 1e-5, 1e-2)
        elif s.unit == "mV":
            vals[n] = rng.uniform(-90, 40)
        else:
            vals[n] = rng.uniform(0.05, 0.95)
    for ks in step.kinetic:
        occ = rng.uniform(0.05, 1.0, len(ks.states))
        vals.update(zip(ks.states, occ / occ.sum()))
    for r, unit in mech.reads.items():
        vals[r] = {"mV": rng.uniform(-90, 40) if r == "v" else rng.uniform(-5, 5),
                   "degC": rng.uniform(6.3, 37), "mM": _log_uniform(rng, 1e-5, 1e-2),
                   "nA": rng.uniform(-0.5, 0.0), "mA_per_cm2": rng.uniform(-1e-3, 0.0),
                   "um2": rng.uniform(100, 2000), "ms": rng.uniform(0, 100)}.get(unit, 0.5)
    for p, par in mech.parameters.items():
        vals[p] = par.value
    for p in mech.placement:
        if p not in mech.parameters:
            vals[p] = rng.uniform(1e-3, 0.1) if p == "gmax" else rng.uniform(-90, 60)
    vals[DT.name] = 0.025
    return vals


def load_hh():
    return load_model(HH).mechanisms


# ----------------------------------------------------------------------------- schemes

def test_hh_channels_use_exponential_euler_with_v_after_the_solve():
    mechs = load_hh()
    na = discretize(mechs["hh_na"])
    assert na.schemes == {"m_q": "exponential_euler", "h_q": "exponential_euler"}
    assert na.forward_euler == [] and na.reads == {"v": READ_AFTER_SOLVE}
    assert {"gmax", "erev", "m_forwardRate_midpoint"} <= set(na.parameters)
    assert na.next["m_q"].has(ExpRelr) and S("m_q") in na.next["m_q"].free_symbols
    # every public expression is over inputs only: derived quantities are inlined
    inputs = set(na.inputs())
    for e in [*na.next.values(), *na.init.values(), na.currents[0].expr, na.currents[0].di_dv]:
        assert e.free_symbols <= inputs
    leak = discretize(mechs["hh_leak"])
    assert leak.states == [] and leak.currents[0].di_dv == S("gmax")


def _cnexp(x, a, b, dt):
    """NMODL cnexp for x' = a - b x: x + (1 - exp(dt*(-b)))*(-(a/(-b)) - x)."""
    return x + (1.0 - math.exp(dt * -b)) * (-(a / -b) - x)


def _relaxation_step():
    m = mechanism(params={"a": 0.0, "b": 0.0}, states={"x": (S("a") - S("b") * S("x"), S("a"))})
    step = discretize(m)
    assert step.schemes["x"] == "exponential_euler"
    return numpy_function([S("x"), S("a"), S("b"), DT], [step.next["x"]])


RELAXATION = _relaxation_step()


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-2, 2), a=st.floats(-5, 5), b=st.floats(-3, 10),
       dt=st.sampled_from([0.001, 0.025, 0.1, 1.0]))
def test_exponential_euler_is_the_exact_solution_for_frozen_inputs(x, a, b, dt):
    """x' = a - b x from x0 over dt is x0 exp(-b dt) + a (1 - exp(-b dt))/b (= a dt at
    b = 0), written here with expm1 so the reference itself is accurate at small b."""
    (got,) = RELAXATION(x, a, b, dt)
    z = b * dt
    phi = 1.0 if z == 0 else -math.expm1(-z) / z
    exact = x * math.exp(-z) + a * dt * phi
    assert got == pytest.approx(exact, rel=1e-12, abs=1e-14)
    if abs(z) > 1e-3:    # NEURON's cnexp divides by b: compare only away from 0
        assert got == pytest.approx(_cnexp(x, a, b, dt), rel=1e-9, abs=1e-12)


def test_exponential_euler_is_finite_at_zero_rate():
    m = mechanism(params={"a": 1.0, "b": 0.0}, states={"x": (S("a") - S("b") * S("x"), 0)})
    f = discretize(m).next["x"]
    assert f.subs({S("b"): 0}) == S("x") + DT * S("a")
    grad = sympy.diff(f, S("b")).subs({S("b"): 0})     # ExpRelr' is finite at 0
    assert sympy.simplify(grad - (-DT * S("x") - DT**2 * S("a") / 2)) == 0


def test_exponential_euler_matches_the_solution_of_the_ode():
    t, a, b, x0 = sympy.symbols("t a b x0", positive=True)
    xf = sympy.Function("x")
    sol = sympy.dsolve(sympy.Eq(xf(t).diff(t), a - b * xf(t)), xf(t), ics={xf(0): x0}).rhs
    m = mechanism(params={"a": 0, "b": 0}, states={"x": (S("a") - S("b") * S("x"), 0)})
    step = discretize(m).next["x"].rewrite(sympy.exp)
    ours = step.subs({S("a"): a, S("b"): b, S("x"): x0, DT: t})
    assert sympy.simplify(ours - sol) == 0


def test_nonlinear_state_is_forward_euler_and_flagged():
    m = mechanism(params={"k": 1.0}, states={"x": (-S("k") * S("x") ** 3, 1)})
    step = discretize(m)
    assert step.schemes["x"] == "forward_euler" and step.forward_euler == ["x"]
    assert step.next["x"] == S("x") + DT * (-S("k") * S("x") ** 3)


def test_heaviside_in_own_state_is_not_mistaken_for_linear():
    m = mechanism(states={"x": (heaviside(S("x") - 1), 0)})
    assert discretize(m).schemes["x"] == "forward_euler"


def test_linear_through_derived_quantities():
    """Linearity is judged after inlining: x' = g*(e - x) via derived g is exponential Euler;
    x' = g where g depends on x^2 is not."""
    lin = mechanism(params={"e": 1.0}, states={"x": (S("g") * (S("e") - S("x")), 0)},
                    derived={"g": 2 + S("v") ** 2})
    assert discretize(lin).schemes["x"] == "exponential_euler"
    non = mechanism(states={"x": (-S("g"), 0)}, derived={"g": S("x") ** 2})
    assert discretize(non).schemes["x"] == "forward_euler"


def test_event_only_state_is_constant():
    m = mechanism(params={"w": 1.0}, states={"x": (None, 0)}, reads=(),
                  events=[Event(None, {"x": S("x") + S("w")}, port="in")])
    step = discretize(m)
    assert step.schemes["x"] == "constant" and step.next["x"] == S("x")
    assert step.events[0].kind == "port"


# ----------------------------------------------------------------------------- kinetic

def three_state_scheme():
    """C <-> O <-> I with voltage-dependent rates."""
    a, b, c, d = (S(n) for n in ("a", "b", "c", "d"))
    C, O, I = S("C"), S("O"), S("I")
    rates = {"a": S("ka") * sympy.exp(S("v") / 20), "b": S("kb") * sympy.exp(-S("v") / 30),
             "c": S("kc"), "d": S("kd") * sympy.exp(S("v") / 40)}
    return mechanism(
        name="ks3", params={"ka": 0.5, "kb": 0.3, "kc": 0.2, "kd": 0.1},
        states={"C": (-a * C + b * O, None), "O": (a * C - b * O - c * O + d * I, None),
                "I": (c * O - d * I, None)},
        derived=rates,
        kinetic=[KineticScheme(["C", "O", "I"], [Transition("C", "O", a, b),
                                                 Transition("O", "I", c, d)])],
        currents=[("k", S("gmax") * S("O") * (S("v") - S("erev")))], placement=("gmax", "erev"))


def _generator(vals):
    ev = math.exp
    a = vals["ka"] * ev(vals["v"] / 20)
    b = vals["kb"] * ev(-vals["v"] / 30)
    c, d = vals["kc"], vals["kd"] * ev(vals["v"] / 40)
    return np.array([[-a, b, 0], [a, -b - c, d], [0, c, -d]])


def test_kinetic_scheme_is_backward_euler_with_conservation():
    m = three_state_scheme()
    step = discretize(m)
    assert set(step.schemes.values()) == {"kinetic_backward_euler"}
    ks = step.kinetic[0]
    assert ks.conserve_row == 2 and list(ks.matrix.row(2)) == [1, 1, 1]
    vals = {"ka": 0.5, "kb": 0.3, "kc": 0.2, "kd": 0.1, "v": -20.0, "dt": 0.1,
            "C": 0.5, "O": 0.3, "I": 0.2}
    inputs = [S(n) for n in vals]
    got = evaluate(inputs, [step.next[s] for s in "COI"], list(vals.values()))
    A = _generator(vals)
    expected = np.linalg.solve(np.eye(3) - vals["dt"] * A, [0.5, 0.3, 0.2])
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    assert got.sum() == pytest.approx(1.0, abs=1e-14)
    # the initial value is the steady state: A x = 0, sum 1
    x0 = evaluate(inputs, [step.init[s] for s in "COI"], list(vals.values()))
    np.testing.assert_allclose(A @ x0, 0, atol=1e-14)
    assert x0.sum() == pytest.approx(1.0)


def test_too_large_kinetic_scheme_is_refused():
    names = [f"s{i}" for i in range(9)]
    chain = [Transition(a, b, S("k"), S("k")) for a, b in zip(names, names[1:])]
    flows = {n: 0 for n in names}
    for t in chain:
        flows[t.source] += -S("k") * S(t.source) + S("k") * S(t.target)
        flows[t.target] += S("k") * S(t.source) - S("k") * S(t.target)
    m = mechanism(params={"k": 1.0}, states={n: (flows[n], None) for n in names},
                  kinetic=[KineticScheme(names, chain)])
    with pytest.raises(UnsupportedError, match="kinetic scheme with 9 states"):
        discretize(m)


# ----------------------------------------------------------------------------- reads, events

def test_read_times_follow_neurons_order():
    pool = mechanism(
        kind="concentration", params={"tau": 10.0, "rho": 1.0},
        states={"c": (S("rho") * S("iCa") / S("surfaceArea") - S("c") / S("tau"),
                      S("initialConcentration"))},
        reads=("iCa", "surfaceArea", "initialConcentration"))
    assert discretize(pool).reads == {"iCa": READ_BEFORE_SOLVE, "surfaceArea": READ_CONSTANT,
                                      "initialConcentration": READ_INITIAL}
    kca = mechanism(params={"k": 1.0}, states={"q": (S("caConc") * S("k") * (1 - S("q")), 0)},
                    reads=("v", "caConc"))
    assert discretize(kca).reads == {"v": READ_AFTER_SOLVE, "caConc": READ_AFTER_SOLVE}


def test_event_kinds():
    c, v = S("c"), S("v")
    clamp = Event(sympy.StrictLessThan(c, 0), {"c": sympy.S.Zero})
    pool = mechanism(kind="concentration", params={"tau": 1.0},
                     states={"c": (-c / S("tau"), 1)}, reads=(), events=[clamp])
    assert discretize(pool).events[0].kind == "continuous"
    reset = Event(sympy.StrictGreaterThan(v, S("th")), {"v": S("vr")}, emits=True)
    cell = mechanism(kind="cell", params={"th": -50.0, "vr": -70.0, "tau": 10.0},
                     states={"v": (-v / S("tau"), -65)}, reads=(), events=[reset])
    assert discretize(cell).events[0].kind == "reset"
    flag = Event(sympy.StrictGreaterThan(v, S("th")), {"spiking": sympy.S.One})
    cell2 = mechanism(kind="cell", params={"th": -50.0, "tau": 10.0}, reads=(),
                      states={"v": (-v / S("tau"), -65), "spiking": (None, 0)}, events=[flag])
    assert discretize(cell2).events[0].kind == "flag"
    exposed = mechanism(kind="cell", params={"th": -50.0, "tau": 10.0}, reads=(),
                        states={"v": (-v / S("tau"), -65), "spiking": (None, 0)},
                        events=[flag], exposures={"spiking": "spiking"})
    assert discretize(exposed).events[0].kind == "flag"       # an output only
    regime = mechanism(kind="cell", params={"th": -50.0, "tau": 10.0}, reads=(),
                       states={"v": (-v * S("r") / S("tau"), -65), "r": (None, 1)},
                       events=[Event(sympy.StrictGreaterThan(v, S("th")), {"r": sympy.S.Zero})])
    assert discretize(regime).events[0].kind == "reset"       # r feeds back into v
    pulse = Event(sympy.StrictLessThan(S("t"), S("delay")), {"i": S("amp")})
    inp = mechanism(kind="input", params={"delay": 10.0, "amp": 1.0}, reads=("t",),
                    states={"i": (None, 0)}, events=[pulse], exposures={"i": "i"})
    assert discretize(inp).events[0].kind == "time"


def test_reserved_dt_name_is_refused():
    m = mechanism(params={"dt": 1.0}, states={"x": (-S("x"), 0)})
    with pytest.raises(UnsupportedError, match="reserves"):
        discretize(m)


def test_same_structure_shares_one_map():
    a = mechanism(name="a", params={"k": 1.0}, states={"x": (-S("k") * S("x"), 1)})
    b = mechanism(name="b", params={"k": 2.0}, states={"x": (-S("k") * S("x"), 1)})
    sa, sb = discretize(a), discretize(b)
    assert (sa.mechanism, sb.mechanism) == ("a", "b") and sa.raw is sb.raw


def test_initial_values_resolve_other_states():
    """A point cell: gates start at inf(v0) where v itself starts at v0."""
    m = mechanism(kind="cell", params={"v0": -65.0, "tau": 1.0}, reads=(),
                  states={"v": (-S("v") / S("tau"), S("v0")),
                          "m": ((S("minf") - S("m")) / S("tau"), S("minf"))},
                  derived={"minf": 1 / (1 + sympy.exp(-S("v") / 10))})
    init = discretize(m).init
    assert init["v"] == S("v0")
    assert sympy.simplify(init["m"] - 1 / (1 + sympy.exp(-S("v0") / 10))) == 0
