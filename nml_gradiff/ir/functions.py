"""Functions with special meaning that backends print specially.

* :class:`ExpRelr` -- ``x/(exp(x) - 1)``, equal to 1 at ``x = 0``.  The removable singularity of
  HH rate functions (``x/(1 - exp(-x))`` is ``ExpRelr(-x)``) and of GHK currents, written as one
  function so that every backend evaluates it finitely at 0 (NEURON has the same function built
  in as ``exprelr``).  :class:`ExpRelrPrime` is its derivative, again finite at 0, and
  :class:`ExpRelrDerivative` the higher derivatives, so that differentiating any number of times
  never brings a ``0/0`` back.
* :class:`Random` -- LEMS ``random(x)``: uniform in ``[0, x)``, a fresh draw at every evaluation.
* :func:`heaviside` -- LEMS ``H(x)``, with ``H(0) = 1/2`` as jLEMS evaluates it.

:func:`exprelr_np` and :func:`exprelr_prime_np` are numpy reference implementations, finite and
accurate in float64 and float32 for every finite argument; backends and tests compare to them.
"""

from __future__ import annotations

import itertools

import mpmath
import numpy as np
import sympy
from sympy import S
from sympy.core.function import ArgumentIndexError

from ..errors import UnsupportedError

__all__ = ["ExpRelr", "ExpRelrPrime", "ExpRelrDerivative", "Random", "heaviside",
           "exprelr_np", "exprelr_prime_np", "SPECIAL_FUNCTIONS"]


# ----------------------------------------------------------------------------- mpmath kernels
# Extra working bits: the closed forms cancel catastrophically near 0 (the numerator of the
# derivative is O(x^2)), so evaluate them with about twice as many bits as |x| is small.

def _extra_bits(x) -> int:
    return 20 + max(0, -2 * int(mpmath.mag(x))) if x else 20


def _mp_exprelr(x):
    if not x:
        return mpmath.mpf(1)
    with mpmath.extraprec(_extra_bits(x)):
        return x / mpmath.expm1(x)


def _mp_exprelr_prime(x):
    if not x:
        return mpmath.mpf(-0.5)
    with mpmath.extraprec(_extra_bits(x)):
        e = mpmath.expm1(x)
        return (e - x * (e + 1)) / (e * e)


def _mp_exprelr_derivative(n: int, x):
    # The Taylor coefficients of x/(exp(x)-1) are the Bernoulli numbers (B1 = -1/2), so the
    # n-th derivative at 0 is B_n; elsewhere differentiate numerically with ample precision.
    if not x:
        return mpmath.bernoulli(n)
    with mpmath.extraprec(_extra_bits(x) + 20 * n):
        return mpmath.diff(_mp_exprelr, x, n)


def _to_sympy(value, prec: int) -> sympy.Float:
    return sympy.Float._new(mpmath.mpf(value)._mpf_, prec)


def _numeric_arg(arg, prec: int):
    """The argument as an mpmath number at ``prec`` bits, or None if it is not a real number."""
    val = arg._eval_evalf(prec) if not arg.is_Number else arg
    if val is None or not val.is_Number or not val.is_extended_real:
        return None
    return mpmath.mpf(val._to_mpmath(prec))


class _SafeFunction(sympy.Function):
    """Common behaviour: real for real arguments, numeric evaluation through mpmath."""

    _kernel = None  # staticmethod(mp_value) in subclasses

    def _eval_is_extended_real(self):
        return self.args[-1].is_extended_real

    def _eval_is_finite(self):
        arg = self.args[-1]
        return True if arg.is_extended_real and arg.is_finite else None

    def _eval_evalf(self, prec):
        x = _numeric_arg(self.args[-1], prec)
        if x is None:
            return None
        with mpmath.workprec(prec):
            return _to_sympy(self._mp_value(x), prec)

    def _mp_value(self, x):
        return type(self)._kernel(x)


# ----------------------------------------------------------------------------- ExpRelr


class ExpRelr(_SafeFunction):
    """``ExpRelr(x) = x/(exp(x) - 1)``, with its limit 1 at ``x = 0`` (NEURON: ``exprelr``)."""

    nargs = 1
    _kernel = staticmethod(_mp_exprelr)

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return S.One
        if x is S.Infinity:
            return S.Zero
        if x is S.NegativeInfinity:
            return S.Infinity
        if x.is_Float:
            # Fold floats numerically (never through the 0/0-prone closed form).
            return _to_sympy(_mp_exprelr(mpmath.mpf(x._to_mpmath(x._prec))), x._prec)
        if x.is_Rational:  # exact, nonzero: the closed form is exact and harmless
            return x / (sympy.exp(x) - 1)
        return None

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return ExpRelrPrime(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return x / (sympy.exp(x) - 1)

    def _eval_is_positive(self):
        return True if self.args[0].is_extended_real else None

    def _eval_nseries(self, x, n, logx, cdir=0):
        # Series through the closed form: sympy handles the removable singularity itself.
        return self.rewrite(sympy.exp)._eval_nseries(x, n, logx, cdir)

    def _eval_as_leading_term(self, x, logx=None, cdir=0):
        return self.rewrite(sympy.exp).as_leading_term(x, logx=logx, cdir=cdir)


class ExpRelrPrime(_SafeFunction):
    """``d/dx ExpRelr(x) = (exp(x) - 1 - x*exp(x))/(exp(x) - 1)^2``, equal to -1/2 at 0."""

    nargs = 1
    _kernel = staticmethod(_mp_exprelr_prime)

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return -S.Half
        if x is S.Infinity:
            return S.Zero
        if x is S.NegativeInfinity:
            return S.NegativeOne
        if x.is_Float:
            return _to_sympy(_mp_exprelr_prime(mpmath.mpf(x._to_mpmath(x._prec))), x._prec)
        if x.is_Rational:
            return cls._closed_form(x)
        return None

    @staticmethod
    def _closed_form(x):
        e = sympy.exp(x)
        return (e - 1 - x * e) / (e - 1) ** 2

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return ExpRelrDerivative(2, self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return self._closed_form(x)

    def _eval_nseries(self, x, n, logx, cdir=0):
        return self.rewrite(sympy.exp)._eval_nseries(x, n, logx, cdir)


class ExpRelrDerivative(_SafeFunction):
    """``ExpRelrDerivative(n, x)``: the n-th derivative of ExpRelr (n >= 2), ``B_n`` at 0.

    Only second and higher derivatives end up here (sensitivities of sensitivities); backends
    that never differentiate twice never see it.
    """

    nargs = 2

    @classmethod
    def eval(cls, n, x):
        if not (n.is_Integer and n >= 2):
            raise ValueError(f"ExpRelrDerivative order must be an integer >= 2, got {n}")
        if x.is_zero:
            return sympy.bernoulli(n)  # n >= 2: no B1 sign convention involved
        if x.is_Float:
            value = _mp_exprelr_derivative(int(n), mpmath.mpf(x._to_mpmath(x._prec)))
            return _to_sympy(value, x._prec)
        return None

    def _mp_value(self, x):
        return _mp_exprelr_derivative(int(self.args[0]), x)

    def fdiff(self, argindex=2):
        if argindex != 2:
            raise ArgumentIndexError(self, argindex)
        n, x = self.args
        return ExpRelrDerivative(n + 1, x)

    def _eval_rewrite_as_exp(self, n, x, **kwargs):
        t = sympy.Dummy("t", real=True)
        return sympy.diff(t / (sympy.exp(t) - 1), t, int(n)).subs(t, x)


# ----------------------------------------------------------------------------- Random

# Every random(...) written in a model is an independent draw.  A hidden draw number keeps sympy
# from treating two draws as the same value (random(1) - random(1) is not 0) or sharing them in
# cse.  Printers print only the first argument.
_draws = itertools.count()


class Random(sympy.Function):
    """LEMS ``random(x)``: uniform in ``[0, x)``, a new draw at each evaluation.

    ``Random(x, k)``: ``k`` is a draw number that only keeps distinct draws distinct; use
    :meth:`draw` to make one.  Not differentiable: a gradient through a random draw is not
    defined, so :meth:`fdiff` raises :class:`~nml_gradiff.errors.UnsupportedError`.
    """

    nargs = (1, 2)

    @classmethod
    def draw(cls, x) -> "Random":
        return cls(x, sympy.Integer(next(_draws)))

    def fdiff(self, argindex=1):
        raise UnsupportedError(f"derivative of random({self.args[0]}): a random draw has no "
                               "derivative with respect to a parameter")

    def _eval_is_extended_real(self):
        return self.args[0].is_extended_real

    def _eval_is_nonnegative(self):
        return True if self.args[0].is_extended_nonnegative else None

    def _eval_evalf(self, prec):
        return None  # never fold a draw into a number

    def _sympystr(self, printer):
        return f"random({printer._print(self.args[0])})"


# ----------------------------------------------------------------------------- Heaviside

def heaviside(x) -> sympy.Expr:
    """LEMS ``H(x)``: 0 for x < 0, 1 for x > 0 and 1/2 at 0.

    jLEMS evaluates ``H(x)`` as ``0.5*(signum(x) + 1)`` (FunctionNode.java), and jNeuroML's
    NEURON export defines ``H`` with ``H = 0.5`` at 0; sympy's ``Heaviside(x, 1/2)`` is the same.
    """
    return sympy.Heaviside(x, S.Half)


#: Name -> class of the functions defined here, for printers and lambdify namespaces.
SPECIAL_FUNCTIONS = {"ExpRelr": ExpRelr, "ExpRelrPrime": ExpRelrPrime,
                     "ExpRelrDerivative": ExpRelrDerivative, "Random": Random}


# ----------------------------------------------------------------------------- numpy references

# Below these |x| the Taylor series is used.  exprelr: the closed form is accurate down to tiny
# |x| (no cancellation in x*exp(-x)/(-expm1(-x))), so the series only replaces 0/0 and must be
# accurate to one ulp where it is used: the first omitted term x^6/30240 < eps gives the
# threshold (eps*30240)^(1/6), ~0.014 in float64 and ~0.39 in float32.  exprelr_prime: the closed
# form loses ~2*eps/|x| relative accuracy to cancellation, so the series (to x^19, error
# < 1e-22 at 0.5) covers |x| < 0.5 in every dtype.
_PRIME_SERIES_MAX = 0.5

# Taylor coefficients of exprelr'(x) = sum_{k>=1} B_k x^(k-1)/(k-1)!: the constant -1/2, then
# odd powers x^(2j-1) with B_{2j}/(2j-1)!.
_PRIME_ODD_COEFFS = [float(sympy.bernoulli(2 * j) / sympy.factorial(2 * j - 1))
                     for j in range(1, 11)]


def _float_array(x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x


def _series_threshold(dtype) -> float:
    return float((np.finfo(dtype).eps * 30240.0) ** (1.0 / 6.0))


def exprelr_np(x):
    """``x/(exp(x) - 1)`` with 1 at 0, elementwise, finite for every finite ``x``.

    Relative error ~ a few ulp in float64 and float32.  Large positive ``x`` uses
    ``x*exp(-x)/(1 - exp(-x))`` so nothing overflows; large negative ``x`` tends to ``-x``.
    """
    x = _float_array(x)
    dtype = x.dtype.type
    one = dtype(1)
    ax = np.abs(x)
    small = ax < _series_threshold(x.dtype)
    safe = np.where(small, one, x)  # keep 0/0 out of the unused branch
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        pos = safe * np.exp(-safe) / -np.expm1(-safe)
        neg = safe / np.expm1(safe)
        closed = np.where(safe > 0, pos, neg)
    xs = np.where(small, x, dtype(0))
    series = one + xs * (dtype(-0.5) + xs * (dtype(1 / 12) + xs * xs * dtype(-1 / 720)))
    return np.where(small, series, closed).astype(x.dtype)[()]


def exprelr_prime_np(x):
    """``d/dx exprelr(x)`` with -1/2 at 0, elementwise, finite for every finite ``x``.

    For |x| >= 0.5: ``p(a) = exp(-a)*(t - a)/t^2`` with ``a = |x|``, ``t = 1 - exp(-a)`` (no
    overflow, little cancellation), and ``exprelr'(x) = -1 - exprelr'(-x)`` for negative ``x``
    (from ``exprelr(-x) = exprelr(x) + x``).
    """
    x = _float_array(x)
    dtype = x.dtype.type
    ax = np.abs(x)
    small = ax < _PRIME_SERIES_MAX
    a = np.where(small, dtype(1), ax)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        t = -np.expm1(-a)
        p = np.exp(-a) * (t - a) / (t * t)
        closed = np.where(x > 0, p, dtype(-1) - p)
    xs = np.where(small, x, dtype(0))
    x2 = xs * xs
    odd = np.zeros_like(xs)
    for c in reversed(_PRIME_ODD_COEFFS):
        odd = odd * x2 + dtype(c)
    series = dtype(-0.5) + xs * odd
    return np.where(small, series, closed).astype(x.dtype)[()]
