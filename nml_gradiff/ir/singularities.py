"""Rewrite removable singularities into :class:`~nml_gradiff.ir.functions.ExpRelr`.

HH rate functions (``rate*x/(1 - exp(-x))``), hand-written channels
(``0.1*(v+40)/(1 - exp(-(v+40)/10))``) and GHK currents (``v/(1 - exp(-v*z*F/(R*T)))``) are
``0/0`` at one voltage.  Models guard them with a ``Piecewise`` (``x .neq. 0`` / ``x .eq. 0``)
or not at all; either way the code is not differentiable there and float32 overflows nearby.
:func:`remove_singularities` finds every quotient ``N/(a*(exp(w) - 1))^k`` whose numerator has a
factor ``w^k*R`` with ``R`` finite where ``w = 0`` and writes it as ``R/a^k * ExpRelr(w)^k``,
then drops a ``Piecewise`` guard whose special value is just the limit of the rewritten
expression.  The result equals the input wherever the input is defined and is finite at the
formerly singular points.
"""

from __future__ import annotations

import random

import sympy
from sympy import S

from .functions import ExpRelr

__all__ = ["remove_singularities"]


def remove_singularities(expr):
    """``expr`` with removable ``0/0`` singularities rewritten into ExpRelr (any sympy Basic;
    anything else is returned unchanged)."""
    if not isinstance(expr, sympy.Basic):
        return expr
    return _rewrite(expr)


def _rewrite(e: sympy.Basic) -> sympy.Basic:
    if not e.args:
        return e
    args = tuple(_rewrite(a) for a in e.args)
    if args != e.args:
        e = e.func(*args)
    if isinstance(e, sympy.Mul):
        e = _rewrite_quotients(e)
    if isinstance(e, sympy.Piecewise):
        e = _collapse_guard(e)
    return e


# ----------------------------------------------------------------------------- quotients


def _rewrite_quotients(mul: sympy.Expr) -> sympy.Expr:
    factors = list(sympy.Mul.make_args(mul))
    for i, f in enumerate(factors):
        if not (f.is_Pow and f.exp.is_Integer and f.exp.is_negative):
            continue
        match = _match_expm1(f.base)
        if match is None:
            continue
        a, w = match
        k = -f.exp
        rest = factors[:i] + factors[i + 1:]
        hit = _split_numerator(rest, w, k)
        if hit is None:
            continue
        others, r = hit
        others, w = _absorb_exp(others, w, k)
        # Combine the numeric factors exactly, so 0.1*(v+40)/(1 - exp(-(v+40)/10)) gives
        # ExpRelr(...) rather than 1.0000000000000001*ExpRelr(...).
        nums = [g for g in others if g.is_Number]
        coeff = _refloat(_exact(sympy.Mul(*nums)) * r / a ** k, *nums)
        rest_factors = [g for g in others if not g.is_Number]
        result = _round_floats(sympy.Mul(*rest_factors) * coeff * ExpRelr(w) ** k)
        if not isinstance(result, sympy.Mul):
            return result
        return _rewrite_quotients(result)  # other denominators of the same product
    return mul


def _round_floats(e: sympy.Expr) -> sympy.Expr:
    """Floats back to exact float64 values (as the parser makes them): products like
    0.1*10 computed at 60 bits would otherwise print as 1.0000000000000001."""
    floats = e.atoms(sympy.Float)
    return e.xreplace({f: sympy.Float(float(f), 17) for f in floats}) if floats else e


def _absorb_exp(others: list, w: sympy.Expr, k: int):
    """``exp(w)*ExpRelr(w) == ExpRelr(-w)``: fold a factor ``exp(w)`` in, so that large ``w``
    does not compute ``inf*0``."""
    if k == 1:
        for j, g in enumerate(others):
            if isinstance(g, sympy.exp) and sympy.expand(g.args[0] - w) == 0:
                return others[:j] + others[j + 1:], -w
    return others, w


def _match_expm1(d: sympy.Expr):
    """``(a, w)`` with ``d == a*(exp(w) - 1)``, or None.

    ``d`` must be ``c0 + c1*exp(u)`` with ``c1/c0`` a negative constant ``-exp(b)``: then
    ``d = -c0*(exp(u + b) - 1)``.  ``b`` is 0 as written in models, but sympy splits
    ``exp(-0.1*v - 4.0)`` into ``0.0183*exp(-0.1*v)``, which ``b = log(0.0183)`` undoes.
    """
    if not isinstance(d, sympy.Add) or len(d.args) != 2:
        return None
    for exp_term, c0 in (d.args, d.args[::-1]):
        parts = sympy.Mul.make_args(exp_term)
        exps = [g for g in parts if isinstance(g, sympy.exp)]
        if len(exps) != 1 or c0.has(sympy.exp) or c0.is_zero:
            continue
        # (sympy does not cancel exp(-v/10 - 4)/exp(-v/10 - 4), so leave the exp out instead)
        c1 = sympy.Mul(*(g for g in parts if g is not exps[0]))
        ratio = sympy.cancel(c1 / c0)
        if ratio.is_number and ratio.is_extended_negative:
            shift = sympy.log(-ratio)
            return -c0, exps[0].args[0] + (0 if shift == 0 else shift)
    return None


def _split_numerator(rest: list, w: sympy.Expr, k: int):
    """``(others, R)`` such that ``Mul(*rest) == Mul(*others) * w**k * R`` and ``R`` stays
    finite where ``w = 0``; one factor of ``rest`` is tried at a time (so the rest of the
    product is left as written), then the whole product."""
    w_exact = _exact(w)
    w_top = sympy.fraction(sympy.together(w_exact))[0]
    candidates = [(j,) for j in range(len(rest))]
    if len(rest) > 1:
        candidates.append(tuple(range(len(rest))))
    for picked in candidates:
        part = sympy.Mul(*(rest[j] for j in picked))
        if not part.free_symbols & w.free_symbols:
            continue
        r = _regular_quotient(part, w_exact, w_top, k)
        if r is not None:
            others = [g for j, g in enumerate(rest) if j not in picked]
            return others, _refloat(r, part, w)
    return None


def _regular_quotient(part, w_exact, w_top, k):
    """``cancel(part/w^k)`` if its denominator is coprime to some factor of the numerator of
    ``w``, so that it stays finite where that factor vanishes, else None.

    (For GHK, ``w = -z*F*v/(R*T)`` and the quotient is ``-R*T/(z*F)``: singular where ``z`` or
    ``F`` vanish, like the original everywhere on those sets, but regular at ``v = 0``.)"""
    try:
        q = sympy.cancel(_exact(part) / w_exact ** k)
        den = sympy.fraction(q)[1]
        zeros = [p for p, _ in sympy.factor_list(w_top)[1] if p.free_symbols]
        regular = any(sympy.gcd(den, p).is_number for p in zeros)
    except (sympy.PolynomialError, sympy.CoercionFailed, NotImplementedError):
        return None
    return q if regular else None


def _exact(e: sympy.Expr) -> sympy.Expr:
    """Floats -> the shortest decimal that rounds to the same float64, as a Rational, so that
    cancel() sees 0.1*v + 4.0000000000000002 as (v + 40)/10 (float dust from parsing 0.1)."""
    floats = e.atoms(sympy.Float)
    if not floats:
        return e
    return e.xreplace({f: sympy.Rational(repr(float(f))) for f in floats})


def _refloat(r: sympy.Expr, *sources: sympy.Expr) -> sympy.Expr:
    """Turn the non-integer rationals that _exact() made back into Floats, when the inputs had
    floats (keep the literal kind the model author used; exact rationals of the input stay)."""
    if not any(s.has(sympy.Float) for s in sources):
        return r
    keep = set().union(*(s.atoms(sympy.Rational) for s in sources))
    new = {q: sympy.Float(float(q), 17) for q in r.atoms(sympy.Rational)
           if not q.is_Integer and q not in keep}
    return r.xreplace(new) if new else r


# ----------------------------------------------------------------------------- Piecewise guards


def _collapse_guard(pw: sympy.Piecewise) -> sympy.Expr:
    """``Piecewise((f, Ne(x, 0)), (c, Eq(x, 0) | True))`` (either order) -> ``f`` when ``f``
    is finite where ``x = 0`` and equals ``c`` there."""
    if len(pw.args) != 2:
        return pw
    (e1, c1), (e2, c2) = pw.args
    if isinstance(c1, sympy.Ne) and (c2 is S.true or isinstance(c2, sympy.Eq)):
        f, c, zero, other = e1, e2, c1, c2
    elif isinstance(c1, sympy.Eq) and (c2 is S.true or isinstance(c2, sympy.Ne)):
        f, c, zero, other = e2, e1, c1, c2
    else:
        return pw
    x = zero.lhs - zero.rhs
    if other is not S.true and not _same_zeros(x, other.lhs - other.rhs):
        return pw
    return f if _extends_continuously(f, c, x) else pw


def _same_zeros(x: sympy.Expr, y: sympy.Expr) -> bool:
    if sympy.expand(x - y) == 0 or sympy.expand(x + y) == 0:
        return True
    ratio = sympy.cancel(_exact(x) / _exact(y))
    return ratio.is_number and ratio != 0


def _extends_continuously(f, c, x, samples: int = 4) -> bool:
    """True if ``f`` is finite and equal to ``c`` at points where ``x = 0``: solve ``x = 0``
    for one symbol, then compare at random values of the others (exactly first, if possible)."""
    solved = _solve_zero(x)
    if solved is None:
        return False
    s, roots = solved
    rng = random.Random(0)  # deterministic: same model, same output
    for root in roots:
        fs, cs = f.subs(s, root), c.subs(s, root)
        if fs.has(S.NaN, S.ComplexInfinity, S.Infinity, S.NegativeInfinity):
            return False
        if sympy.expand(fs - cs) == 0:
            continue
        free = sorted((fs - cs).free_symbols, key=lambda z: z.name)
        for _ in range(samples):
            point = {z: sympy.Float(rng.uniform(0.5, 2.0)) for z in free}
            a, b = fs.xreplace(point).evalf(30), cs.xreplace(point).evalf(30)
            if not (a.is_number and b.is_number and a.is_finite and b.is_finite):
                return False
            if abs(complex(a) - complex(b)) > 1e-12 * max(1.0, abs(complex(b))):
                return False
    return True


def _solve_zero(x: sympy.Expr):
    """``(symbol, roots)`` solving ``x = 0`` for one of its symbols (``v`` first), or None."""
    syms = sorted(x.free_symbols, key=lambda z: (z.name != "v", z.name))
    for s in syms:
        try:
            roots = sympy.solve(x, s)
        except (NotImplementedError, ValueError, TypeError):
            continue
        if roots and all(not r.has(s) for r in roots):
            return s, roots
    return None
