"""What every generated JAX module imports: safe functions and the tree (Hines) solver.

Kept small and free of model knowledge, so a generated module stays readable and this file
can be tested once.  Everything here is pure ``jax.numpy``/``lax``: it composes with ``jit``,
``vmap`` and ``grad``.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from ...ir.functions import _PRIME_ODD_COEFFS, _PRIME_SERIES_MAX  # noqa: E402

__all__ = ["exprelr", "exprelr_prime", "hines_factor", "hines_substitute", "hines_solve",
           "tree_matrix", "add_currents", "total_current", "neuron_didv", "broadcast",
           "nernst", "float64", "jvp_sum", "where_tangent", "broadcast_sens", "tree_rhs",
           "nernst_tangent", "tangent_at", "add_at", "add_current_tangents",
           "total_current_tangent"]

# |x| below which exprelr uses its Taylor series: the first omitted term x^6/30240 is below
# float64 epsilon there (the same threshold as nml_gradiff.ir.functions.exprelr_np).
_EXPRELR_SERIES_MAX = (2.220446049250313e-16 * 30240.0) ** (1.0 / 6.0)


def exprelr(x):
    """``x/(exp(x) - 1)``, 1 at 0; finite with finite gradients for every finite x.

    Double ``where``: each branch only ever sees arguments where it is finite, so neither the
    value nor the gradient of the unused branch can be inf/nan (``jnp.where`` alone would
    still propagate a nan gradient from the branch it discards).
    """
    x = jnp.asarray(x)
    small = jnp.abs(x) < _EXPRELR_SERIES_MAX
    safe = jnp.where(small, 1.0, x)
    pos = jnp.where(safe > 0, safe, 1.0)
    neg = jnp.where(safe > 0, -1.0, safe)
    # x > 0: x e^-x / (1 - e^-x) never overflows; x < 0: x / (e^x - 1) neither.
    closed = jnp.where(safe > 0, pos * jnp.exp(-pos) / -jnp.expm1(-pos), neg / jnp.expm1(neg))
    xs = jnp.where(small, x, 0.0)
    series = 1.0 + xs * (-0.5 + xs * (1.0 / 12.0 + xs * xs * (-1.0 / 720.0)))
    return jnp.where(small, series, closed)


def exprelr_prime(x):
    """``d/dx exprelr(x)``, -1/2 at 0 (see :func:`nml_gradiff.ir.functions.exprelr_prime_np`)."""
    x = jnp.asarray(x)
    small = jnp.abs(x) < _PRIME_SERIES_MAX
    a = jnp.where(small, 1.0, jnp.abs(x))
    t = -jnp.expm1(-a)
    p = jnp.exp(-a) * (t - a) / (t * t)
    closed = jnp.where(x > 0, p, -1.0 - p)
    xs = jnp.where(small, x, 0.0)
    x2 = xs * xs
    odd = jnp.zeros_like(xs)
    for c in reversed(_PRIME_ODD_COEFFS):
        odd = odd * x2 + c
    return jnp.where(small, -0.5 + xs * odd, closed)


# ----------------------------------------------------------------------------- mechanisms

def add_currents(i_m, g_m, nodes, currents):
    """Add a mechanism's ``{ion: (i, di/dv)}`` at ``nodes`` to the node totals."""
    for i, di in currents.values():
        i_m = i_m.at[nodes].add(i)
        g_m = g_m.at[nodes].add(di)
    return i_m, g_m


def total_current(currents):
    """The sum of a mechanism's currents over its ions."""
    return sum(i for i, _ in currents.values())


def neuron_didv(current, v):
    """NEURON's di/dv: ``(i(v + 0.001) - i(v))/0.001`` (nocmodl's nrn_cur), per ion."""
    at_v = current(v)
    up = current(v + 0.001)
    return {ion: (i, (up[ion][0] - i) / 0.001) for ion, (i, _) in at_v.items()}


def broadcast(states, n):
    """Every value of a state dict as an array of n (constants come out as scalars)."""
    return {k: jnp.broadcast_to(jnp.asarray(x, dtype=jnp.float64), (n,))
            for k, x in states.items()}


def float64(tree):
    """Every leaf as a (strongly typed) float64 array: a state built from Python numbers
    is weakly typed, and jit would compile step() again for the typed state it returns."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.float64), tree)


#: NEURON's constants (CODATA 2018, nrnunits.lib) for Nernst potentials.
FARADAY = 96485.33212331001
GAS_CONSTANT = 8.3144626181532395


def nernst(ci, co, z, celsius):
    """NEURON's nrn_nernst (mV): ``1000 R (celsius + 273.15)/F / z * log(co/ci)``."""
    ktf = 1000.0 * GAS_CONSTANT * (celsius + 273.15) / FARADAY
    return ktf / z * jnp.log(co / ci)


# ----------------------------------------------------------------------------- tangents
# A tangent (forward sensitivity) is None (structurally zero: skipped at trace time) or an
# array whose last axis runs over the selected parameters (docs/jax.md, "Sensitivities").

def jvp_sum(*pairs):
    """``sum c[..., None] * d`` over the pairs whose tangent d is not None (None if none)."""
    out = None
    for c, d in pairs:
        if d is None:
            continue
        term = jnp.expand_dims(jnp.asarray(c, dtype=jnp.float64), -1) * d
        out = term if out is None else out + term
    return out


def add_at(acc, index, coef, d, n_params):
    """``acc[index] += coef[:, None] * d`` for a tangent d (None: acc unchanged)."""
    if d is None:
        return acc
    d = jnp.broadcast_to(jnp.asarray(d), (index.shape[0], n_params))
    return acc.at[index].add(jnp.expand_dims(jnp.asarray(coef), -1) * d)


def add_current_tangents(di_m, dg_m, nodes, tangents, n_params):
    """Add a mechanism's ``{ion: (dI, dG)}`` tangents at ``nodes`` (see add_currents)."""
    for di, dg in tangents.values():
        di_m = add_at(di_m, nodes, 1.0, di, n_params)
        dg_m = add_at(dg_m, nodes, 1.0, dg, n_params)
    return di_m, dg_m


def total_current_tangent(tangents):
    """The tangent of :func:`total_current`."""
    parts = [di for di, _ in tangents.values() if di is not None]
    return sum(parts[1:], parts[0]) if parts else None


def where_tangent(cond, a, b):
    """The tangent of ``where(cond, A, B)``: that of the branch taken (a clamp)."""
    if a is None and b is None:
        return None
    cond = jnp.expand_dims(jnp.asarray(cond), -1)
    return jnp.where(cond, 0.0 if a is None else a, 0.0 if b is None else b)


def broadcast_sens(tangents, n, n_params):
    """Every tangent of a dict as an [n, P] array (None: zeros)."""
    return {k: jnp.zeros((n, n_params)) if d is None
            else jnp.broadcast_to(jnp.asarray(d, dtype=jnp.float64), (n, n_params))
            for k, d in tangents.items()}


def tangent_at(d, index, n_params):
    """Rows ``index`` of a tangent that may be None or a per-parameter row [P]."""
    if d is None:
        return None
    d = jnp.asarray(d)
    return d[index] if d.ndim == 2 else jnp.broadcast_to(d, (len(index), n_params))


def nernst_tangent(ci, co, dci, dco, z, celsius):
    """Tangent of :func:`nernst` along the concentrations' tangents (None: constant)."""
    ktf = 1000.0 * GAS_CONSTANT * (celsius + 273.15) / FARADAY
    return jvp_sum((-ktf / z / ci, dci), (ktf / z / co, dco))


def tree_rhs(parent, a, b, n_roots, x):
    """The axial part of NEURON's right-hand side for node values ``x`` (``tree_matrix``'s
    rhs increment); ``x`` or ``a``/``b`` may carry a trailing parameter axis.  It equals
    ``-L(a, b) x`` for the axial operator L of the matrix, so the tangent of the voltage
    step reuses it for ``S_v`` (with a, b) and for the resistivity terms (with da, db)."""
    child = slice(n_roots, None)
    pa = parent[child]
    dx = x[pa] - x[child]
    ac, bc = a[child], b[child]
    if dx.ndim < ac.ndim:
        dx = dx[..., None]
    elif ac.ndim < dx.ndim:
        ac, bc = ac[..., None], bc[..., None]
    shape = (x.shape[0],) + jnp.broadcast_shapes(dx.shape, ac.shape)[1:]
    return jnp.zeros(shape).at[child].add(-bc * dx).at[pa].add(ac * dx)


# ----------------------------------------------------------------------------- tree solver


def tree_matrix(parent, a, b, n_roots, v, d, rhs):
    """Add the axial terms to NEURON's node equations (treeset.cpp nrn_rhs and nrn_lhs).

    Node ``i >= n_roots`` hangs on ``parent[i]``; ``a[i]`` is its coefficient in the parent's
    row, ``b[i]`` the parent's in its row (both negative, per unit area of the row's node).
    ``rhs[i] -= b[i]*(v[p] - v[i])``, ``rhs[p] += a[i]*(v[p] - v[i])``, ``d[i] -= b[i]``,
    ``d[p] -= a[i]``.
    """
    child = slice(n_roots, None)
    pa = parent[child]
    dv = v[pa] - v[child]
    rhs = rhs.at[child].add(-b[child] * dv).at[pa].add(a[child] * dv)
    d = d.at[child].add(-b[child]).at[pa].add(-a[child])
    return d, rhs


def hines_factor(parent, a, b, d, n_roots):
    """NEURON's triang on the diagonal alone: eliminate every node into its parent, leaves
    first (nodes are numbered parents before children).  The result is reused for every
    right-hand side (the voltage's and, later, its sensitivities')."""
    parent, a, b, d = _arrays(parent, a, b, d)
    n = d.shape[0]

    def body(k, d):
        i = n - 1 - k
        return d.at[parent[i]].add(-a[i] / d[i] * b[i])

    return lax.fori_loop(0, n - n_roots, body, d, unroll=_unroll(n))


def hines_substitute(parent, a, b, dfac, rhs, n_roots):
    """Solve with a factored diagonal (triang on rhs, then NEURON's bksub).  ``rhs`` may
    carry trailing dimensions (several right-hand sides, e.g. sensitivities)."""
    parent, a, b, dfac, rhs = _arrays(parent, a, b, dfac, rhs)
    n = dfac.shape[0]

    def elim(k, r):
        i = n - 1 - k
        return r.at[parent[i]].add(-(a[i] / dfac[i]) * r[i])

    def back(i, x):
        return x.at[i].set((x[i] - b[i] * x[parent[i]]) / dfac[i])

    r = lax.fori_loop(0, n - n_roots, elim, rhs, unroll=_unroll(n))
    scale = dfac[:n_roots].reshape((n_roots,) + (1,) * (rhs.ndim - 1))
    x = r.at[:n_roots].set(r[:n_roots] / scale)
    return lax.fori_loop(n_roots, n, back, x, unroll=_unroll(n))


def hines_solve(parent, a, b, d, rhs, n_roots):
    """Solve the tree system ``M x = rhs`` (NEURON's nrn_solve: triang then bksub)."""
    return hines_substitute(parent, a, b, hines_factor(parent, a, b, d, n_roots), rhs, n_roots)


def _arrays(*xs):
    return tuple(jnp.asarray(x) for x in xs)


def _unroll(n: int) -> int:
    # Measured: unrolling (even 16 nodes) makes both XLA's compile and the run slower.
    return 1
