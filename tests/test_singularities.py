"""ExpRelr and friends (values, derivatives, numpy references) and remove_singularities."""

from __future__ import annotations

import random

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nml_gradiff.errors import UnsupportedError
from nml_gradiff.ingest.expr import parse_expression
from nml_gradiff.ir.functions import (ExpRelr, ExpRelrDerivative, ExpRelrPrime, Random,
                                      exprelr_np, exprelr_prime_np, heaviside)
from nml_gradiff.ir.mechanism import symbol
from nml_gradiff.ir.singularities import remove_singularities

x, v, rate, midpoint, scale = (symbol(n) for n in ["x", "v", "rate", "midpoint", "scale"])

POINTS = [0.0, 1e-10, -1e-10, 1e-5, -1e-5, 1.0, -1.0, 50.0, -50.0, 700.0, -700.0]


# ----------------------------------------------------------------------------- references


def ref(x_, n=0):
    """n-th derivative of x/(exp(x) - 1) in 60-digit arithmetic (Bernoulli numbers at 0)."""
    with mpmath.workdps(60):
        xm = mpmath.mpf(x_)
        if xm == 0:
            return mpmath.bernoulli(n) if n != 1 else mpmath.mpf(-0.5)
        if n == 0:
            return xm / mpmath.expm1(xm)
        with mpmath.workdps(60 + 2 * max(0, -int(mpmath.mag(xm)))):  # cancellation near 0
            if n == 1:
                e = mpmath.expm1(xm)
                return (e - xm * (e + 1)) / e ** 2
            return mpmath.diff(lambda t: t / mpmath.expm1(t), xm, n)


def rel_err(got, want):
    return abs(float(got) - float(want)) / abs(float(want))


# ----------------------------------------------------------------------------- numpy refs


@pytest.mark.parametrize("fn, n", [(exprelr_np, 0), (exprelr_prime_np, 1)])
@pytest.mark.parametrize("point", POINTS)
def test_numpy_reference_float64_accurate(fn, n, point):
    got = fn(np.float64(point))
    assert np.isfinite(got)
    assert rel_err(got, ref(point, n)) < 1e-12


@pytest.mark.parametrize("fn, n", [(exprelr_np, 0), (exprelr_prime_np, 1)])
@pytest.mark.parametrize("point", POINTS)
def test_numpy_reference_float32_finite_and_accurate(fn, n, point):
    got = fn(np.float32(point))
    assert got.dtype == np.float32 and np.isfinite(got)
    want = ref(float(np.float32(point)), n)
    if abs(want) < np.finfo(np.float32).tiny:  # e.g. 700*exp(-700): below float32's range
        assert abs(got) <= np.finfo(np.float32).tiny
    else:
        assert rel_err(got, want) < 8 * np.finfo(np.float32).eps


def test_numpy_reference_arrays_and_extremes():
    for fn in (exprelr_np, exprelr_prime_np):
        for dtype in (np.float64, np.float32):
            info = np.finfo(dtype)
            arr = np.array([-info.max, -800.0, -info.tiny, -info.smallest_subnormal, 0.0,
                            info.smallest_subnormal, info.tiny, 800.0, info.max], dtype=dtype)
            out = fn(arr)
            assert out.shape == arr.shape and out.dtype == dtype
            assert np.all(np.isfinite(out))
    assert exprelr_np(0.0) == 1.0 and exprelr_prime_np(0.0) == -0.5
    assert exprelr_np(-800.0) == 800.0 and exprelr_prime_np(-800.0) == -1.0


@settings(max_examples=200, deadline=None)
@given(st.floats(-745, 745, allow_nan=False))
def test_numpy_reference_everywhere(point):
    want, dwant = ref(point), ref(point, 1)
    assume(abs(want) > 1e-300 and abs(dwant) > 1e-300)
    assert rel_err(exprelr_np(point), want) < 1e-14
    assert rel_err(exprelr_prime_np(point), dwant) < 1e-14


# ----------------------------------------------------------------------------- sympy functions


def test_exprelr_special_values():
    assert ExpRelr(0) == 1 and ExpRelr(sympy.Float(0.0)) == 1
    assert ExpRelrPrime(0) == sympy.Rational(-1, 2)
    assert ExpRelrDerivative(2, 0) == sympy.Rational(1, 6)  # Bernoulli B2
    assert ExpRelrDerivative(3, 0) == 0
    assert ExpRelrDerivative(4, 0) == sympy.Rational(-1, 30)
    assert ExpRelr(sympy.oo) == 0 and ExpRelr(-sympy.oo) == sympy.oo
    assert ExpRelr(1) == 1 / (sympy.E - 1)  # exact arguments fold exactly
    assert ExpRelr(x).is_real and ExpRelr(x).is_positive


@pytest.mark.parametrize("point", POINTS)
def test_exprelr_evalf_and_float_folding(point):
    for fn, n in ((ExpRelr, 0), (ExpRelrPrime, 1)):
        folded = fn(sympy.Float(point))          # folds on construction
        assert folded.is_Number
        assert rel_err(folded, ref(point, n)) < 1e-14
        deferred = fn(x).subs(x, sympy.Rational(repr(point))).evalf(30)
        assert rel_err(deferred, ref(point, n)) < 1e-14


def test_derivatives_are_safe_functions_all_the_way_down():
    d1 = sympy.diff(ExpRelr(x), x)
    d2 = sympy.diff(ExpRelr(x), x, 2)
    d3 = sympy.diff(ExpRelr(x), x, 3)
    assert d1 == ExpRelrPrime(x)
    assert d2 == ExpRelrDerivative(2, x) and d3 == ExpRelrDerivative(3, x)
    for expr, n in ((d1, 1), (d2, 2), (d3, 3)):
        for point in (0.0, 1e-9, -1e-5, 0.7, -3.0, 20.0):
            val = expr.subs(x, sympy.Float(point))
            assert val.is_finite
            assert abs(float(val) - float(ref(point, n))) < 1e-12 * (1 + abs(float(ref(point, n))))


@pytest.mark.parametrize("point", [-30.0, -2.5, -1e-3, 0.0, 1e-3, 0.4, 3.0, 30.0])
def test_sympy_derivative_matches_numerical_derivative(point):
    g = 2 * x - 1  # chain rule too
    expr = rate * ExpRelr(g)
    deriv = sympy.diff(expr, x).subs({rate: 3}).subs(x, sympy.Float(point)).evalf(30)
    with mpmath.workdps(40):
        num = mpmath.diff(lambda t: 3 * ref(2 * t - 1), mpmath.mpf(point))
    assert abs(float(deriv) - float(num)) < 1e-10 * (1 + abs(float(num)))


def test_rewrite_and_series():
    assert ExpRelr(x).rewrite(sympy.exp) == x / (sympy.exp(x) - 1)
    assert sympy.simplify(ExpRelrPrime(x).rewrite(sympy.exp)
                          - sympy.diff(x / (sympy.exp(x) - 1), x)) == 0
    assert sympy.series(ExpRelr(x), x, 0, 3).removeO() == 1 - x / 2 + x ** 2 / 12
    assert sympy.limit(ExpRelr(x), x, 0) == 1


def test_lambdify_with_numpy_references():
    f = sympy.lambdify(x, ExpRelr(x) + ExpRelrPrime(x),
                       modules=[{"ExpRelr": exprelr_np, "ExpRelrPrime": exprelr_prime_np},
                                "numpy"])
    out = f(np.array([0.0, 1e-9, -700.0, 700.0]))
    assert np.all(np.isfinite(out)) and out[0] == 0.5


def test_random_is_not_differentiable():
    r = Random.draw(x)
    with pytest.raises(UnsupportedError, match="random"):
        sympy.diff(r, x)
    assert sympy.diff(Random.draw(3) * x, x) == Random(3, r.args[1] + 1)  # constant draw
    assert Random.draw(1) != Random.draw(1)
    assert Random(x).args == (x,)


def test_heaviside_half_at_zero():
    assert heaviside(sympy.Integer(0)) == sympy.Rational(1, 2)
    assert heaviside(x).subs(x, 0) == sympy.Rational(1, 2)
    assert heaviside(sympy.Float(-1e-300)) == 0 and heaviside(sympy.Float(1e-300)) == 1


# ----------------------------------------------------------------------------- rewriting


def hh_piecewise(special_value):
    xx = (v - midpoint) / scale
    return sympy.Piecewise((rate * xx / (1 - sympy.exp(0 - xx)), sympy.Ne(xx, 0)),
                           (special_value, sympy.Eq(xx, 0)))


CASES = {
    "hh linear rate": (parse_expression("0.1*(v+40)/(1 - exp(-(v+40)/10))"), {v: -40}),
    "A*u/(1-exp(-u))": (parse_expression("rate*(v-midpoint)/scale/(1 - exp(-(v-midpoint)/scale))"),
                        {v: midpoint}),
    "A*u/(exp(u)-1)": (parse_expression("rate*(v-midpoint)/scale/(exp((v-midpoint)/scale) - 1)"),
                       {v: midpoint}),
    "u/(1-exp(u))": (parse_expression("(v+35)/10/(1 - exp((v+35)/10))"), {v: -35}),
    "u = -(v+35)/10": (parse_expression("(-(v+35)/10)/(1 - exp(-(v+35)/10))"), {v: -35}),
    "scaled denominator": (parse_expression(
        "2*(v-midpoint)/(scale - scale*exp(-(v-midpoint)/scale))"), {v: midpoint}),
    "float literals": (parse_expression("0.32*(v+54.0)/(1.0 - exp(-(v+54.0)/4.0))"),
                       {v: -54}),
    "x*exp(x)/(exp(x)-1)": (parse_expression("v*exp(v)/(exp(v) - 1)"), {v: 0}),
    "ghk": (parse_expression("v*(ci - co*exp(-v*z*F/(R*T)))/(1 - exp(-v*z*F/(R*T)))"),
            {v: 0}),
    "ghk plain": (parse_expression("v/(1 - exp(-v*z*F/(R*T)))"), {v: 0}),
    "squared": (parse_expression("(v+40)^2/(exp((v+40)/10) - 1)^2"), {v: -40}),
    "unit conversion": (parse_expression("rate*(v/1000 - midpoint)/scale"
                                         "/(1 - exp(-(v/1000 - midpoint)/scale))"),
                        {v: 1000 * midpoint}),
    "hh piecewise": (hh_piecewise(rate), {v: midpoint}),
    "hh piecewise otherwise": (sympy.Piecewise(
        (rate, sympy.Eq((v - midpoint) / scale, 0)),
        (rate * (v - midpoint) / scale / (1 - sympy.exp(-(v - midpoint) / scale)), True)),
        {v: midpoint}),
}
POSITIVE = {"scale", "F", "R", "T", "z", "ci", "co"}  # physical constants: keep them away from 0


def lam(expr):
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    fn = sympy.lambdify(syms, expr, modules=[{"ExpRelr": exprelr_np,
                                              "ExpRelrPrime": exprelr_prime_np}, "numpy"])
    return syms, fn


def random_env(syms, rng):
    return {s: (rng.uniform(0.5, 3.0) if s.name in POSITIVE else rng.uniform(-60, 60))
            for s in syms}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rewrite_removes_singularity_and_preserves_value(name):
    expr, at = CASES[name]
    new = remove_singularities(expr)
    assert new.has(ExpRelr), new
    assert not new.has(sympy.Piecewise), new
    # same value everywhere the original is defined
    rng = random.Random(1)
    syms_old, f_old = lam(expr)
    syms_new, f_new = lam(new)
    assert set(syms_new) <= set(syms_old)
    for _ in range(200):
        env = random_env(syms_old, rng)
        old = f_old(*(env[s] for s in syms_old))
        got = f_new(*(env[s] for s in syms_new))
        assert np.isclose(got, old, rtol=1e-9, atol=1e-12), (env, got, old)
    # finite at the formerly singular point, and equal to the limit there
    env = random_env(syms_old, rng)
    point = {s: sympy.Float(val) for s, val in env.items()}
    at_sing = {s: sympy.sympify(val).xreplace(point) for s, val in at.items()}
    env.update({s: float(val) for s, val in at_sing.items()})
    value = f_new(*(env[s] for s in syms_new))
    assert np.isfinite(value)
    old_near = [f_old(*(env[s] + (h if s in at else 0) for s in syms_old)) for h in (1e-6, -1e-6)]
    assert np.isclose(value, np.mean(old_near), rtol=1e-5, atol=1e-9)


def test_hh_exp_linear_rate_becomes_rate_times_exprelr():
    xx = (v - midpoint) / scale
    assert remove_singularities(hh_piecewise(rate)) == rate * ExpRelr(-xx)
    # and with the jLEMS-style "otherwise" last case
    pw = sympy.Piecewise((rate * xx / (1 - sympy.exp(0 - xx)), sympy.Ne(xx, 0)), (rate, True))
    assert remove_singularities(pw) == rate * ExpRelr(-xx)


def test_numeric_hh_rate_gets_clean_coefficient():
    new = remove_singularities(parse_expression("0.1*(v+40)/(1 - exp(-(v+40)/10))"))
    assert new == ExpRelr(-v / 10 - 4)  # 0.1*(v+40)/(1 - exp(-u)) with u = (v+40)/10


def test_genuine_discontinuity_is_kept():
    new = remove_singularities(hh_piecewise(2 * rate))
    assert isinstance(new, sympy.Piecewise)
    xx = (v - midpoint) / scale
    assert new.args[0].expr == rate * ExpRelr(-xx)  # the inside is still made safe
    assert new.args[1].expr == 2 * rate


def test_piecewise_without_singularity_is_kept():
    pw = sympy.Piecewise((sympy.sin(x) / x, sympy.Ne(x, 0)), (1, True))
    assert remove_singularities(pw) == pw


@pytest.mark.parametrize("text", [
    "1/(1 - exp(-v))",                     # a pole, not 0/0
    "(v+40)/(1 - exp(-(v+45)/10))",        # zeros in different places
    "(v+40)/(1 - 2*exp(-(v+40)/10))",      # denominator zero elsewhere
    "v/(1 - cai/cao*exp(-v))",             # GHK denominator that is not exp(w) - 1
    "v/(exp(v) + 1)",                      # no singularity at all
    "exp(v) - 1",
])
def test_non_removable_left_alone(text):
    expr = parse_expression(text)
    assert remove_singularities(expr) == expr


def test_rewrites_everywhere_in_a_larger_expression():
    text = ("g*m^3*h*(v - e) + 0.01*(v+55)/(1 - exp(-(v+55)/10))"
            " * exp(-(v+65)/80) / (0.1*(v+40)/(1 - exp(-(v+40)/10)) + 4*exp(-(v+65)/18))")
    expr = parse_expression(text)
    new = remove_singularities(expr)
    assert len(new.atoms(ExpRelr)) == 2
    rng = random.Random(3)
    syms, f_old = lam(expr)
    syms_new, f_new = lam(new)
    for _ in range(100):
        env = {s: rng.uniform(-100, 60) for s in syms}
        assert np.isclose(f_new(*(env[s] for s in syms_new)), f_old(*(env[s] for s in syms)),
                          rtol=1e-9)
    env = {s: 0.5 for s in syms}
    for sing in (-55.0, -40.0):
        env[v] = sing
        assert np.isfinite(f_new(*(env[s] for s in syms_new)))


def test_non_expressions_pass_through():
    assert remove_singularities(None) is None
    assert remove_singularities(3.5) == 3.5
    cond = sympy.Gt(v, 0)
    assert remove_singularities(cond) == cond
