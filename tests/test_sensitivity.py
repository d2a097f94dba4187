"""Sensitivities are the exact derivatives of the discrete step.

Every Jacobian of :func:`sensitivities` is compared with central finite differences of the
step map itself (float64 numpy) and with ``jax`` forward-mode derivatives of the same map
(float64), for the HH channels, a kinetic scheme, random small systems (hypothesis, over
several steps through :func:`propagate`) and every channel and concentration model of the
corpus.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest
import sympy
from conftest import CORPUS
from hypothesis import given, settings
from hypothesis import strategies as st
from test_discretize import (evaluate, load_hh, mechanism, numpy_function,
                             physiological, three_state_scheme)

from nml_gradiff.errors import ModelError, UnsupportedError
from nml_gradiff.ingest.model import load_model
from nml_gradiff.ir.mechanism import Event, symbol
from nml_gradiff.passes.discretize import dag_cse, discretize
from nml_gradiff.passes.sensitivity import (current_sensitivity, initial_sensitivity,
                                            propagate, propagate_all, propagate_event,
                                            sensitivities)

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
S = symbol

# Central differences with h = 1e-6 |z| (1e-6 at z = 0): truncation O(h^2) is ~1e-12
# relative; rounding is ~eps*scale/h = 2.2e-10 * scale/|z|, where scale is the size of the
# output and of its first-order terms (1 for kinetic occupancies, which the solve mixes).
# So: 1e-6 relative, plus a floor 1e-8*scale/|z| (45x the rounding bound).  Against jax
# (two exact derivatives of the same expression, evaluated in different orders): 1e-10
# relative plus a floor 1e-12*scale/|z| (~5000 ulp of the terms).
FD_REL, FD_FLOOR = 1e-6, 1e-8
JAX_REL, JAX_FLOOR = 1e-10, 1e-12


# ----------------------------------------------------------------------------- jax evaluation

# x/(e^x - 1) = sum B_n x^n / n! (B_1 = -1/2); below |x| = 0.1 eight terms leave < 1e-14.
_SERIES = [float(sympy.bernoulli(n) / sympy.factorial(n)) * (-1 if n == 1 else 1)
           for n in range(9)]


def _exprelr_jax(x):
    """x/(exp(x)-1), differentiable by jax everywhere (series near 0; safe branches)."""
    small = jnp.abs(x) < 0.1
    xs = jnp.where(small, x, 0.0)
    series = _SERIES[-1]
    for c in reversed(_SERIES[:-1]):
        series = series * xs + c
    xp = jnp.where(x > 0.1, x, 1.0)
    xn = jnp.where(x < -0.1, x, -1.0)
    pos = xp * jnp.exp(-xp) / -jnp.expm1(-xp)
    neg = xn / jnp.expm1(xn)
    return jnp.where(small, series, jnp.where(x > 0, pos, neg))


JAX_NS = {"ExpRelr": _exprelr_jax}


def jax_jvp(inputs, exprs, jit=False):
    """A function (point, tangent) -> jax.jvp of the lambdified map.

    All arguments are scalars, so eager jax's per-primitive compilations are shared by every
    mechanism (a vector argument would recompile them for each new length); ``jit`` compiles
    the whole jvp once, worth it for many tangents."""
    f = sympy.lambdify(list(inputs), list(exprs), modules=[JAX_NS, "jax"], cse=fast_cse,
                       use_imps=False)

    def g(*args):
        return [jnp.asarray(o, dtype=jnp.float64) for o in f(*args)]

    def tangent_out(prim, tan):
        return jax.jvp(g, prim, tan)[1]

    def eager(prim, tan):
        with jax.disable_jit():     # jnp's per-op jit wrappers cost ~ms each under jvp
            return tangent_out(prim, tan)

    run = jax.jit(tangent_out) if jit else eager

    def at(point, tangent):
        prim = tuple(jnp.float64(p) for p in point)
        tan = tuple(jnp.float64(t) for t in tangent)
        return np.array([float(d) for d in run(prim, tan)])

    return at


# ----------------------------------------------------------------------------- checks

def fast_cse(exprs):
    """The pass's linear-time cse (sympy's is far slower on these shared expressions)."""
    return dag_cse(list(exprs))


compile_numpy = numpy_function


def fd_jacobian(f, point, wrt) -> np.ndarray:
    """Central differences of the compiled map ``f`` in the inputs ``wrt``, in one call."""
    k = len(wrt)
    cols = [np.full(2 * k, float(v)) for v in point]
    h = np.array([1e-6 * abs(point[i]) if point[i] != 0 else 1e-6 for i in wrt])
    for n, i in enumerate(wrt):
        cols[i][2 * n] += h[n]
        cols[i][2 * n + 1] -= h[n]
    vals = np.array([np.broadcast_to(np.asarray(o, dtype=float), (2 * k,)) for o in f(*cols)])
    return (vals[:, 0::2] - vals[:, 1::2]) / (2 * h)


def _tolerance(F, J, zs, rel, floor, ref, unit_rows):
    scale = np.maximum(np.abs(F), np.max(np.abs(J) * zs, axis=1, initial=0.0))
    scale[unit_rows] = np.maximum(scale[unit_rows], 1.0)
    return rel * np.abs(ref) + floor * scale[:, None] / zs[None, :]


def _report(name, bad, got, ref, labels):
    return name + ": " + "; ".join(f"d{r}/d{labels[c]}: symbolic {got[r, c]:.17g} vs "
                                   f"{ref[r, c]:.17g}" for r, c in bad[:5])


def jacobian_columns(sens):
    return [*sens.states, *(["v"] if sens.has_v else []), *sens.reads, *sens.params]


def stacked(jac) -> sympy.Matrix:
    return sympy.Matrix.hstack(jac.x, jac.v, jac.reads, jac.theta)


def blocks(step, sens):
    """(name, outputs, their Jacobians, rows scaled by 1) for every map differentiated."""
    kin = [i for i, s in enumerate(step.states) if step.schemes[s] == "kinetic_backward_euler"]
    yield "next", [step.next[s] for s in step.states], sens.next, kin
    yield "init", [step.init[s] for s in step.states], sens.init, kin
    yield "rhs", [step.rhs[s] for s in step.states], sens.continuous, []
    for c, cs in zip(step.currents, sens.currents):
        yield f"current {c.ion}", [c.expr], cs.current, []
        yield f"conductance {c.ion}", [c.di_dv], cs.conductance, []


def check_exact(step, sens, points, jax_mode="directions"):
    """Every Jacobian against central differences of its map, and the step map's Jacobian
    against jax.jvp: along each input (``jax_mode="columns"``) or along a random direction
    (``"directions"``: cheap, and a wrong column shows in almost every direction).

    Kinetic rows use symbols for the solved occupancies (``sens.solved``): their values are
    computed from the step map at the same point and passed in, as a backend would.
    """
    inputs, solved = step.inputs(), list(sens.solved)
    labels = jacobian_columns(sens)
    wrt = [inputs.index(S(n)) for n in labels]
    parts = [b for b in blocks(step, sens) if b[1]]
    outs = [e for _, F, _, _ in parts for e in F]
    f_F = compile_numpy(inputs, outs + [sens.solved[x] for x in solved])
    f_J = compile_numpy([*inputs, *solved], [e for _, _, jac, _ in parts
                                             for e in stacked(jac)])
    nxt = [step.next[s] for s in step.states]
    jvp = jax_jvp(inputs, nxt, jit=jax_mode == "columns") if jax_mode and nxt else None
    rng = np.random.default_rng(0)
    for values in points:
        point = [values[s.name] for s in inputs]
        zs = np.array([abs(point[i]) if point[i] != 0 else 1.0 for i in wrt])
        Fall = np.array(f_F(*point), dtype=float)
        Jall = np.array(f_J(*point, *Fall[len(outs):]), dtype=float)
        fd = fd_jacobian(f_F, point, wrt)
        row = 0
        for name, F, _, unit in parts:
            n = len(F)
            Fv, fdv = Fall[row:row + n], fd[row:row + n]
            J = Jall[row * len(wrt):(row + n) * len(wrt)].reshape(n, len(wrt))
            row += n
            tol = _tolerance(Fv, J, zs, FD_REL, FD_FLOOR, fdv, unit)
            bad = np.argwhere(~(np.abs(J - fdv) <= tol))
            assert not len(bad), _report(f"{step.mechanism} {name} vs FD", bad, J, fdv, labels)
            if name == "next" and jvp is not None:
                _check_jvp(step, jvp, point, wrt, J, Fv, zs, unit, labels, jax_mode, rng)


def _check_jvp(step, jvp, point, wrt, J, F, zs, unit, labels, mode, rng):
    if mode == "columns":
        dirs = np.eye(len(wrt)) * zs
    else:                       # a random direction, each input scaled by its size
        dirs = rng.uniform(-1, 1, (1, len(wrt))) * zs
    for u in dirs:
        tangent = np.zeros(len(point))
        tangent[wrt] = u
        ref = jvp(point, tangent)
        got = J @ u
        scale = np.maximum(np.abs(F), np.abs(J) @ np.abs(u))
        scale[unit] = np.maximum(scale[unit], 1.0)
        tol = JAX_REL * np.maximum(np.abs(ref), np.abs(J) @ np.abs(u)) + JAX_FLOOR * scale
        bad = np.flatnonzero(~(np.abs(got - ref) <= tol))
        assert not len(bad), (f"{step.mechanism} next vs jax.jvp: " + "; ".join(
            f"row {r}: symbolic {got[r]:.17g} vs {ref[r]:.17g}" for r in bad[:5]))


# ----------------------------------------------------------------------------- HH, kinetic

@pytest.mark.parametrize("name", ["hh_na", "hh_k", "hh_leak"])
def test_hh_channels_are_differentiated_exactly(name):
    mech = load_hh()[name]
    step = discretize(mech)
    sens = sensitivities(step)
    assert sens.params == step.parameters and sens.has_v
    rng = np.random.default_rng(1)
    check_exact(step, sens, [physiological(step, mech, rng) for _ in range(3)],
                jax_mode="columns")


def test_hh_gate_jacobian_is_exp_of_minus_rate_dt():
    """For x' = (inf - x)/tau: dx[n+1]/dx[n] = exp(-dt/tau), a closed-form cross-check."""
    mech = load_hh()["hh_k"]
    step = discretize(mech)
    sens = sensitivities(step)
    vals = physiological(step, mech, np.random.default_rng(2))
    inputs = step.inputs()
    got, rate = evaluate(inputs, [sens.next.x[0, 0], -sens.continuous.x[0, 0]],
                         [vals[s.name] for s in inputs])
    assert got == pytest.approx(np.exp(-rate * vals["dt"]), rel=1e-13)


def test_kinetic_scheme_is_differentiated_exactly():
    mech = three_state_scheme()
    step = discretize(mech)
    sens = sensitivities(step)
    rng = np.random.default_rng(3)
    check_exact(step, sens, [physiological(step, mech, rng) for _ in range(3)],
                jax_mode="columns")


def test_kinetic_sensitivities_conserve_probability():
    """Rows of the conserved scheme: sum of dx[n+1]/dz is 0 for every z (CONSERVE row)."""
    step = discretize(three_state_scheme())
    sens = sensitivities(step)
    vals = physiological(step, three_state_scheme(), np.random.default_rng(4))
    inputs = step.inputs()
    J = stacked(sens.next).xreplace(sens.solved)
    sums = evaluate(inputs, [sum(J[:, j]) for j in range(J.cols)],
                    [vals[s.name] for s in inputs])
    np.testing.assert_allclose(sums, 0, atol=1e-12)


# ----------------------------------------------------------------------------- many steps

def _linear_system(n, coupling, kinds):
    """n states: x_i' = a_i(theta, v) - b_i(theta, v) x_i + c * x_{i-1}, a current."""
    th, v = S("th"), S("v")
    states, params = {}, {"th": 0.7, "c": coupling}
    for i in range(n):
        x = S(f"x{i}")
        a = [th * sympy.exp(v / 30), S(f"p{i}") / (1 + sympy.exp(-v / 10)), th**2][kinds[i] % 3]
        b = [S(f"p{i}") + th, th * sympy.exp(-v / 40) + 0.1, S(f"p{i}")][kinds[i] % 3]
        rhs = a - b * x + (S("c") * S(f"x{i - 1}") if i else 0)
        states[f"x{i}"] = (rhs, a / b)
        params[f"p{i}"] = 0.3 + 0.2 * i
    cur = sum(S(f"x{i}") for i in range(n)) * S("gmax") * (v - S("erev"))
    return mechanism(name=f"lin{n}", params=params, states=states, currents=[("k", cur)],
                     placement=("gmax", "erev"))


def check_trajectory(mech, params, vs, values):
    """S from x0 through len(vs) steps (v prescribed) by :func:`propagate` and
    :func:`initial_sensitivity` equals central differences of the final states."""
    step = discretize(mech)
    sens = sensitivities(step, params)
    inputs, solved = step.inputs(), list(sens.solved)
    Sx = [sympy.Symbol(f"S_{s}") for s in step.states]
    f_next = numpy_function(inputs, [step.next[s] for s in step.states])
    f_solved = numpy_function(inputs, [sens.solved[x] for x in solved])
    f_s = [numpy_function([*inputs, *Sx, *solved], propagate(sens, Sx, 0, None, k))
           for k in range(len(params))]
    init = numpy_function(inputs, [step.init[s] for s in step.states])
    f_s0 = [numpy_function([*inputs, *solved], initial_sensitivity(sens, 0, None, k))
            for k in range(len(params))]
    values = {s.name: 0.0 for s in inputs} | values | {"v": vs[0]}

    def run(vals):
        args = [vals[s.name] for s in inputs]
        x = np.array(init(*args), dtype=float)
        extra = f_solved(*args) if solved else []
        sx = [np.array(f(*args, *extra), dtype=float) for f in f_s0]
        for v in vs:
            args = [{**vals, "v": v, **dict(zip(step.states, x))}[s.name] for s in inputs]
            extra = f_solved(*args) if solved else []
            sx = [np.array(f(*args, *sk, *extra), dtype=float) for f, sk in zip(f_s, sx)]
            x = np.array(f_next(*args), dtype=float)
        return x, sx

    x, sx = run(values)
    for k, p in enumerate(params):
        h = 1e-6 * max(abs(values[p]), 1.0)   # rounding ~eps*|x|/h stays ~2e-10 |x|
        up, down = run({**values, p: values[p] + h})[0], run({**values, p: values[p] - h})[0]
        fd = (up - down) / (2 * h)
        np.testing.assert_allclose(sx[k], fd, rtol=1e-6, atol=1e-8 * max(1, np.abs(x).max()))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), coupling=st.floats(-0.5, 0.5),
       kinds=st.lists(st.integers(0, 2), min_size=3, max_size=3),
       vs=st.lists(st.floats(-80, 30), min_size=6, max_size=6))
def test_propagated_sensitivities_match_finite_differences_over_steps(n, coupling, kinds, vs):
    """Random small systems linear in each state (coupled, voltage-dependent)."""
    mech = _linear_system(n, coupling, kinds)
    assert set(discretize(mech).schemes.values()) == {"exponential_euler"}
    values = {p: par.value for p, par in mech.parameters.items()}
    check_trajectory(mech, ["th", "c"], vs, values | {"gmax": 0.1, "erev": -80.0, "dt": 0.1})


@settings(max_examples=10, deadline=None)
@given(rates=st.lists(st.floats(0.01, 2.0), min_size=4, max_size=4),
       vs=st.lists(st.floats(-80, 30), min_size=5, max_size=5),
       dt=st.sampled_from([0.025, 0.1, 1.0]))
def test_kinetic_sensitivities_match_finite_differences_over_steps(rates, vs, dt):
    """A kinetic scheme with random rates, from its steady state, through five steps."""
    values = dict(zip(["ka", "kb", "kc", "kd"], rates)) | {"gmax": 0.1, "erev": -80.0,
                                                           "dt": dt}
    check_trajectory(three_state_scheme(), ["ka", "kd"], vs, values)


# ----------------------------------------------------------------------------- API

def test_propagate_all_agrees_with_propagate_per_parameter():
    mech = load_hh()["hh_na"]
    step = discretize(mech)
    sens = sensitivities(step, ["m_forwardRate_midpoint", "gmax", "h_reverseRate_rate"])
    P, n = len(sens.params), len(sens.states)
    Sx = sympy.Matrix(n, P, lambda i, j: sympy.Symbol(f"s{i}_{j}"))
    Sv = sympy.Matrix(1, P, lambda i, j: sympy.Symbol(f"v_{j}"))
    allp = propagate_all(sens, Sx, Sv)
    for j in range(P):
        one = propagate(sens, list(Sx[:, j]), Sv[0, j], None, j)
        assert all(sympy.expand(a - b) == 0 for a, b in zip(allp[:, j], one))


def test_current_sensitivity_and_its_linearisation_term():
    mech = load_hh()["hh_k"]
    step = discretize(mech)
    sens = sensitivities(step, ["gmax", "n_forwardRate_midpoint"])
    s, sv, dv = sympy.Symbol("s"), sympy.Symbol("sv"), sympy.Symbol("dv")
    (plain,) = current_sensitivity(sens, [s], sv, None, 0)
    i = step.currents[0].expr
    want = sympy.diff(i, S("n_q")) * s + sympy.diff(i, S("v")) * sv + sympy.diff(i, S("gmax"))
    (lin,) = current_sensitivity(sens, [s], sv, None, 0, dv=dv)
    g = step.currents[0].di_dv
    extra = dv * (sympy.diff(g, S("n_q")) * s + sympy.diff(g, S("gmax")))
    point = {x: 0.1 + 0.37 * k for k, x in enumerate(sorted(
        (lin - plain - extra + plain - want).free_symbols, key=str))}
    assert float((plain - want).subs(point)) == pytest.approx(0, abs=1e-12)
    assert float((lin - plain - extra).subs(point)) == pytest.approx(0, abs=1e-12)


def test_unknown_parameter_is_an_error():
    step = discretize(load_hh()["hh_k"])
    with pytest.raises(KeyError, match="nope"):
        sensitivities(step, ["nope"])


# ----------------------------------------------------------------------------- events

def _iaf():
    v = S("v")
    return mechanism(kind="cell", name="iaf", params={"th": -50.0, "vr": -70.0, "tau": 10.0,
                                                       "el": -40.0},
                     states={"v": ((S("el") - v) / S("tau"), -65)}, reads=(),
                     events=[Event(sympy.StrictGreaterThan(v, S("th")), {"v": S("vr")},
                                   emits=True)])


def test_threshold_reset_is_refused_with_the_mechanism_and_event():
    with pytest.raises(UnsupportedError, match=r"sensitivities through events: iaf event 0"):
        sensitivities(discretize(_iaf()))


def test_clamp_is_allowed_and_documented():
    c = S("c")
    pool = mechanism(kind="concentration", name="pool", params={"tau": 10.0, "rest": 1e-4},
                     states={"c": (S("iCa") - (c - S("rest")) / S("tau"), S("rest"))},
                     reads=("iCa",),
                     events=[Event(sympy.StrictLessThan(c, 0), {"c": sympy.S.Zero})])
    sens = sensitivities(discretize(pool))
    assert any("clamp" in n for n in sens.notes)
    (jump,) = sens.events
    assert jump.kind == "continuous" and jump.jump.x[0, 0] == 0 and jump.jump.theta.is_zero_matrix


def test_time_event_parameters_are_left_out_or_refused():
    pulse = [Event(sympy.StrictLessThan(S("t"), S("delay")), {"i": sympy.S.Zero}),
             Event(sympy.GreaterThan(S("t"), S("delay")), {"i": S("amp")})]
    inp = mechanism(kind="input", name="pulse", params={"delay": 10.0, "amp": 0.2},
                    reads=("t",), states={"i": (None, 0)}, events=pulse,
                    exposures={"i": "i"})
    step = discretize(inp)
    sens = sensitivities(step)
    assert sens.params == ["amp"]
    (s_after,) = propagate_event(sens, sens.events[1], [0], 0, None, 0)
    assert s_after == 1
    with pytest.raises(UnsupportedError, match=r"\['delay'\] of pulse"):
        sensitivities(step, ["delay", "amp"])


def test_port_event_jump():
    syn = mechanism(kind="synapse", name="syn", params={"tau": 5.0, "w": 0.5},
                    states={"g": (-S("g") / S("tau"), 0)},
                    events=[Event(None, {"g": S("g") + S("w")}, port="in")])
    sens = sensitivities(discretize(syn), ["w", "tau"])
    (jump,) = sens.events
    assert jump.kind == "port" and jump.jump.x[0, 0] == 1 and list(jump.jump.theta) == [1, 0]


# ----------------------------------------------------------------------------- corpus

def _corpus_models(spec_examples: bool):
    """Corpus files that define or include channels and concentration models (and, with
    ``spec_examples``, every file of the NeuroML2 spec's examples: each core type once).

    Files whose own text names a channel or pool type, plus, for those that cannot load on
    their own (types defined in a LEMS file), the first file of the same repository that
    includes them.  Loading the whole corpus takes ~45 s; the ingest test does that.
    """
    from test_corpus_ingest import include_dirs, model_files
    pat = re.compile(r"<\w*(ionChannel|ConcentrationModel|concentrationModel|ChannelPR)\w*"
                     r"[\s>]|extends=\"\w*(oncentrationModel|onChannel)")
    files = model_files()
    texts = {p: p.read_text(errors="replace") for p in files}

    def wanted(p):
        spec = spec_examples and p.relative_to(CORPUS).parts[0] == "NeuroML+NeuroML2"
        return spec or pat.search(texts[p])

    models = {}
    for p in files:
        if wanted(p):
            if p not in _LOADED:
                _LOADED[p] = _load(p, include_dirs)
            if _LOADED[p] is not None:
                models[p] = _LOADED[p]
    for f in [p for p in files if wanted(p) and _LOADED[p] is None]:
        repo = f.relative_to(CORPUS).parts[0]
        for q in files:
            if q not in models and q.relative_to(CORPUS).parts[0] == repo and f.name in texts[q]:
                if q not in _LOADED:
                    _LOADED[q] = _load(q, include_dirs)
                if _LOADED[q] is not None:
                    models[q] = _LOADED[q]
                    break
    return models


def _load(path, include_dirs):
    try:
        return load_model(path, include_dirs=include_dirs(path))
    except ModelError:
        return None     # not loadable on its own: covered by a file that includes it


_LOADED: dict = {}


def corpus_mechanisms(spec_examples: bool = False):
    """Distinct mechanisms (by name, kind and defining file) of :func:`_corpus_models`."""
    seen = {}
    for model in _corpus_models(spec_examples).values():
        for m in model.mechanisms.values():
            seen.setdefault((m.name, m.kind, m.source), m)
    return list(seen.values())


@pytest.mark.slow
@pytest.mark.corpus
def test_corpus_channels_and_pools_are_differentiated_exactly(corpus, capsys):
    """Every channel and concentration model: all Jacobians against finite differences, one
    check per distinct structure (copies differ only in parameter values).  The step map is
    also checked against jax.jvp for every kinetic scheme and every third structure (eager
    jax costs ~0.3 s a structure; the finite differences already cover every column)."""
    t0 = time.time()
    mechs = [m for m in corpus_mechanisms() if m.kind in ("channel", "concentration")]
    done, checked, refused, with_jax = set(), Counter(), [], 0
    rng = np.random.default_rng(5)
    for m in mechs:
        step = discretize(m)
        try:
            sens = sensitivities(step)
        except UnsupportedError as exc:
            refused.append(f"{m.name}: {exc}")
            continue
        checked[m.kind] += 1
        if id(step.raw) in done:
            continue
        use_jax = bool(step.kinetic) or len(done) % 3 == 0
        done.add(id(step.raw))
        with_jax += use_jax
        check_exact(step, sens, [physiological(step, m, rng)],
                    jax_mode="directions" if use_jax else None)
    with capsys.disabled():
        print(f"\nexact sensitivities: {dict(checked)} mechanisms ({len(done)} distinct "
              f"structures, {with_jax} also against jax) in {time.time() - t0:.1f} s; "
              f"refused: {refused}")
    assert checked["channel"] > 150 and checked["concentration"] > 20
    assert not refused


@pytest.mark.slow
@pytest.mark.corpus
def test_corpus_coverage(corpus, capsys):
    """How many corpus mechanisms get sensitivities, and why the others are refused: the
    files with channels and pools, and every example of the NeuroML2 spec (all core types:
    point cells, synapses, inputs)."""
    ok, reasons = Counter(), Counter()
    for m in corpus_mechanisms(spec_examples=True):
        try:
            sensitivities(discretize(m))
            ok[m.kind] += 1
        except UnsupportedError as exc:
            what = re.sub(r"\b(event \d+ \(when).*", r"\1 ...)", exc.what)
            reasons[(m.kind, m.component_type, what.split(":")[0])] += 1
    with capsys.disabled():
        print(f"\nsensitivities: {sum(ok.values())} mechanisms differentiated "
              f"{dict(ok)}; refused {sum(reasons.values())}:")
        for (kind, ctype, why), count in sorted(reasons.items()):
            print(f"  {count:3d} {kind} {ctype}: {why}")
    assert ok["channel"] > 150 and not any(k == "channel" for k, *_ in reasons)


def test_spiking_flag_of_a_point_cell_is_an_output_without_sensitivity():
    v = S("v")
    events = [Event(sympy.And(sympy.StrictLessThan(S("spiking"), 0.5),
                              sympy.StrictGreaterThan(v, S("th"))), {"spiking": sympy.S.One},
                    emits=True),
              Event(sympy.StrictLessThan(v, S("th")), {"spiking": sympy.S.Zero})]
    cell = mechanism(kind="cell", name="hhpoint", reads=("synapses_i",),
                     params={"th": 0.0, "el": -65.0, "tau": 10.0},
                     states={"v": ((S("el") - v) / S("tau") + S("synapses_i"), -65),
                             "spiking": (None, 0)},
                     events=events, exposures={"spiking": "spiking"})
    step = discretize(cell)
    assert [e.kind for e in step.events] == ["flag", "flag"]
    sens = sensitivities(step)
    assert "th" not in sens.params
    for ev in sens.events:
        assert list(ev.jump.x.row(1)) == [0, 0] and ev.jump.theta.row(1).is_zero_matrix
    with pytest.raises(UnsupportedError, match=r"\['th'\]"):
        sensitivities(step, ["th"])
