"""What every generated JAX module imports: safe functions and the tree (Hines) solver.

Kept small and free of model knowledge, so a generated module stays readable and this file
can be tested once.  Everything here is pure ``jax.numpy``/``lax``: it composes with ``jit``,
``vmap`` and ``grad``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from ...errors import UnsupportedError  # noqa: E402
from ...ir.functions import _PRIME_ODD_COEFFS, _PRIME_SERIES_MAX  # noqa: E402

__all__ = ["exprelr", "exprelr_prime", "add_rows", "count", "hines_factor",
           "hines_factor_solve", "hines_substitute", "hines_solve", "tree_matrix",
           "add_currents", "total_current", "neuron_didv", "broadcast",
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
    # x > 0: x e^-x / (1 - e^-x) never overflows; x < 0: x / (e^x - 1) neither.  Both
    # denominators are expm1(-|x|): one division by it (two transcendentals per call, not
    # three; used once, so XLA keeps it inside the caller's kernel).
    pos = jnp.where(safe > 0, safe, 1.0)
    closed = jnp.where(safe > 0, -pos * jnp.exp(-pos), safe) / jnp.expm1(-jnp.abs(safe))
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
    """Add a mechanism's ``{ion: (i, di/dv)}`` at ``nodes`` to the node totals: the sum over
    its ions first, then one add per node, as NEURON's nrn_cur does (``rhs -= _rhs``)."""
    if not currents:
        return i_m, g_m
    i = sum(i for i, _ in currents.values())
    di = sum(di for _, di in currents.values())
    return add_rows(i_m, nodes, i), add_rows(g_m, nodes, di)


def add_rows(acc, index, val, unique=False):
    """``acc[index] += val`` along the first axis; index: a slice (a contiguous run of rows:
    plain slicing, which XLA fuses, no scatter) or an int array (repeats add up; ``unique``:
    a constant numpy array without repeats, which XLA is told)."""
    return _update_rows(acc, index, val, "add", unique)


def _set_rows(x, idx, val):
    """``x[idx] = val`` for unique constant indices."""
    return _update_rows(x, idx, val, "set", True)


def _update_rows(x, index, val, how, unique):
    """``x[index] += val`` (``how`` "add") or ``= val`` ("set"): add_rows and _set_rows."""
    if isinstance(index, slice):
        lo, hi, _ = index.indices(x.shape[0])
        part = jnp.broadcast_to(val, (hi - lo,) + x.shape[1:])
        head = x[:lo]
        if how == "add":
            part = x[lo:hi] + part
        return jnp.concatenate([head, part, x[hi:]])
    rows = x.at[index]
    if not unique:
        return getattr(rows, how)(val)
    return getattr(rows, how)(val, indices_are_sorted=bool(np.all(np.diff(index) > 0)),
                              unique_indices=True)


def count(index) -> int:
    """The number of rows an index (slice or int array) selects."""
    if isinstance(index, slice):
        return len(range(index.start, index.stop))
    return len(index)


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
    d = jnp.broadcast_to(jnp.asarray(d), (count(index), n_params))
    return add_rows(acc, index, jnp.expand_dims(jnp.asarray(coef), -1) * d)


def add_current_tangents(di_m, dg_m, nodes, tangents, n_params):
    """Add a mechanism's ``{ion: (dI, dG)}`` tangents at ``nodes`` (see add_currents)."""
    di = _sum_tangents(di for di, _ in tangents.values())
    dg = _sum_tangents(dg for _, dg in tangents.values())
    return add_at(di_m, nodes, 1.0, di, n_params), add_at(dg_m, nodes, 1.0, dg, n_params)


def _sum_tangents(ds):
    parts = [d for d in ds if d is not None]
    return sum(parts[1:], parts[0]) if parts else None


def total_current_tangent(tangents):
    """The tangent of :func:`total_current`."""
    return _sum_tangents(di for di, _ in tangents.values())


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
    return d[index] if d.ndim == 2 else jnp.broadcast_to(d, (count(index), n_params))


def nernst_tangent(ci, co, dci, dco, z, celsius):
    """Tangent of :func:`nernst` along the concentrations' tangents (None: constant)."""
    ktf = 1000.0 * GAS_CONSTANT * (celsius + 273.15) / FARADAY
    return jvp_sum((-ktf / z / ci, dci), (ktf / z / co, dco))


# ----------------------------------------------------------------------------- tree solver
# ``parent`` is NEURON's node tree: node ``i >= n_roots`` hangs on ``parent[i] < i``.  The
# emitted modules pass it as a numpy array: the tree is then known when the step is traced,
# and every function below unrolls it with constant indices (the "static" path, see
# _TreePlan); a traced (jnp) parent takes a lax loop over single nodes.  Both do NEURON's
# arithmetic in NEURON's order, so they agree bit for bit.


def tree_matrix(parent, a, b, n_roots, v, d, rhs):
    """Add the axial terms to NEURON's node equations (treeset.cpp nrn_rhs and nrn_lhs).

    ``a[i]`` is node i's coefficient in its parent's row, ``b[i]`` the parent's in its row
    (both negative, per unit area of the row's node).
    ``rhs[i] -= b[i]*(v[p] - v[i])``, ``rhs[p] += a[i]*(v[p] - v[i])``, ``d[i] -= b[i]``,
    ``d[p] -= a[i]``.
    """
    if _unrolled(parent, n_roots):
        plan = _plan(parent, n_roots)
        dv = _rows(v, plan.parents) - v[n_roots:]
        rhs = plan.to_parents(add_rows(rhs, plan.children, -b[n_roots:] * dv, unique=True),
                              a[n_roots:] * dv)
        d = plan.to_parents(add_rows(d, plan.children, -b[n_roots:], unique=True),
                            -a[n_roots:])
        return d, rhs
    child = slice(n_roots, None)
    pa = parent[child]
    dv = v[pa] - v[child]
    rhs = rhs.at[child].add(-b[child] * dv).at[pa].add(a[child] * dv)
    d = d.at[child].add(-b[child]).at[pa].add(-a[child])
    return d, rhs


def tree_rhs(parent, a, b, n_roots, x):
    """The axial part of NEURON's right-hand side for node values ``x`` (``tree_matrix``'s
    rhs increment); ``x`` or ``a``/``b`` may carry a trailing parameter axis.  It equals
    ``-L(a, b) x`` for the axial operator L of the matrix, so the tangent of the voltage
    step reuses it for ``S_v`` (with a, b) and for the resistivity terms (with da, db)."""
    child = slice(n_roots, None)
    static = _unrolled(parent, n_roots)
    pa = _plan(parent, n_roots).parents if static else parent[child]
    dx = _rows(x, pa) - x[child]
    ac, bc = a[child], b[child]
    if dx.ndim < ac.ndim:
        dx = dx[..., None]
    elif ac.ndim < dx.ndim:
        ac, bc = ac[..., None], bc[..., None]
    shape = (x.shape[0],) + jnp.broadcast_shapes(dx.shape, ac.shape)[1:]
    if static:
        own = jnp.concatenate([jnp.zeros((n_roots,) + shape[1:]), -bc * dx])
        return _plan(parent, n_roots).to_parents(own, ac * dx)
    return jnp.zeros(shape).at[child].add(-bc * dx).at[pa].add(ac * dx)


def hines_factor(parent, a, b, d, n_roots):
    """NEURON's triang on the diagonal alone: eliminate every node into its parent, leaves
    first (nodes are numbered parents before children).  The result is reused for every
    right-hand side (the voltage's and, later, its sensitivities')."""
    return hines_factor_solve(parent, a, b, d, None, n_roots)[0]


def hines_factor_solve(parent, a, b, d, rhs, n_roots):
    """(factored diagonal, solution of ``M x = rhs``): triang on the diagonal and on rhs in
    one pass, then bksub (rhs None: the factored diagonal alone, x None)."""
    if _unrolled(parent, n_roots):
        levels = _plan(parent, n_roots).levels
        for c, p in levels:
            d = add_rows(d, p, -_rows(a, c) / _rows(d, c) * _rows(b, c), unique=True)
        return d, None if rhs is None else _static_substitute(levels, a, b, d, rhs, n_roots)
    parent, a, b, d = _arrays(parent, a, b, d)
    n = d.shape[0]
    if rhs is None:
        def factor(k, d):
            i = n - 1 - k
            return d.at[parent[i]].add(-a[i] / d[i] * b[i])
        return lax.fori_loop(0, n - n_roots, factor, d, unroll=_unroll(n)), None

    def both(k, dr):
        d, r = dr
        i = n - 1 - k
        q = -a[i] / d[i]   # the same rounding as triang's -a/d*b and -(a/d)*r
        return d.at[parent[i]].add(q * b[i]), r.at[parent[i]].add(q * r[i])

    d, r = lax.fori_loop(0, n - n_roots, both, (d, jnp.asarray(rhs)), unroll=_unroll(n))
    return d, _back_loop(parent, b, d, r, n_roots)


def hines_substitute(parent, a, b, dfac, rhs, n_roots):
    """Solve with a factored diagonal (triang on rhs, then NEURON's bksub).  ``rhs`` may
    carry trailing dimensions (several right-hand sides, e.g. sensitivities)."""
    if _unrolled(parent, n_roots):
        return _static_substitute(_plan(parent, n_roots).levels, a, b, dfac,
                                  jnp.asarray(rhs), n_roots)
    parent, a, b, dfac, rhs = _arrays(parent, a, b, dfac, rhs)
    n = dfac.shape[0]

    def elim(k, r):
        i = n - 1 - k
        return r.at[parent[i]].add(-(a[i] / dfac[i]) * r[i])

    r = lax.fori_loop(0, n - n_roots, elim, rhs, unroll=_unroll(n))
    return _back_loop(parent, b, dfac, r, n_roots)


def _back_loop(parent, b, dfac, r, n_roots):
    """NEURON's bksub over single nodes, roots first."""
    n = dfac.shape[0]

    def back(i, x):
        return x.at[i].set((x[i] - b[i] * x[parent[i]]) / dfac[i])

    scale = dfac[:n_roots].reshape((n_roots,) + (1,) * (r.ndim - 1))
    x = r.at[:n_roots].set(r[:n_roots] / scale)
    return lax.fori_loop(n_roots, n, back, x, unroll=_unroll(n))


def hines_solve(parent, a, b, d, rhs, n_roots):
    """Solve the tree system ``M x = rhs`` (NEURON's nrn_solve: triang then bksub)."""
    return hines_factor_solve(parent, a, b, d, rhs, n_roots)[1]


def _static_substitute(levels, a, b, dfac, r, n_roots):
    for c, p in levels:   # triang on the right-hand side, deepest level first
        r = add_rows(r, p, -_trailing(_rows(a, c) / _rows(dfac, c), r) * _rows(r, c),
                     unique=True)
    x = _set_rows(r, slice(0, n_roots), r[:n_roots] / _trailing(dfac[:n_roots], r))
    for c, p in reversed(levels):   # bksub, roots first
        x = _set_rows(x, c, (_rows(x, c) - _trailing(_rows(b, c), x) * _rows(x, p))
                      / _trailing(_rows(dfac, c), x))
    return x


class _TreePlan:
    """The constant index sets of one static tree.

    ``levels``: (children, parents) per depth, deepest first, split by sibling rank so the
    parents of a group are unique; the children of one parent come in decreasing index, the
    order NEURON's triang adds them to their parent.  ``groups``: every child by sibling
    rank in increasing index, the order nrn_rhs/nrn_lhs add them.  An index set that is a
    contiguous run is a slice (plain slicing, no gather or scatter)."""

    def __init__(self, parent: np.ndarray, n_roots: int):
        n = parent.shape[0]
        depth = np.zeros(n, dtype=np.int64)
        for i in range(n_roots, n):
            if not 0 <= parent[i] < i:
                raise UnsupportedError(f"unsupported: tree node {i} has parent {parent[i]} "
                                       "(nodes must be numbered parents first)")
            depth[i] = depth[parent[i]] + 1
        self.children = slice(n_roots, n)
        self.parents = _index(parent[n_roots:])
        self.groups = [(_index(c - n_roots), _index(parent[c]))
                       for c in _by_rank(parent, range(n_roots, n))]
        self.levels = [(_index(c), _index(parent[c]))
                       for level in range(int(depth.max(initial=0)), 0, -1)
                       for c in _by_rank(parent, np.nonzero(depth == level)[0][::-1])]

    def to_parents(self, acc, per_child):
        """``acc[parent[i]] += per_child[i - n_roots]`` for every child i, NEURON's order."""
        for c, p in self.groups:
            acc = add_rows(acc, p, _rows(per_child, c), unique=True)
        return acc


def _by_rank(parent, order) -> list[np.ndarray]:
    """The nodes of ``order`` split into groups with unique parents: a node goes to the
    group after its previous sibling's (in ``order``); each group sorted."""
    rank, seen = {}, {}
    for i in order:
        r = seen.get(int(parent[i]), 0)
        seen[int(parent[i])] = r + 1
        rank.setdefault(r, []).append(int(i))
    return [np.array(sorted(rank[r]), dtype=np.int64) for r in sorted(rank)]


@functools.lru_cache(maxsize=64)
def _plan_of(parent_bytes: bytes, n_roots: int) -> _TreePlan:
    return _TreePlan(np.frombuffer(parent_bytes, dtype=np.int64), n_roots)


def _plan(parent, n_roots) -> _TreePlan:
    return _plan_of(np.ascontiguousarray(parent, dtype=np.int64).tobytes(), int(n_roots))


def _is_static(parent) -> bool:
    return isinstance(parent, np.ndarray)


#: Trees of at most this many depth levels (after splitting siblings) are solved unrolled;
#: deeper ones by the node loop.  Measured on the 2-core CPU (a scan of tree_matrix +
#: hines_solve, /tmp micro-benchmark, min of 5): the 3-node single compartment 0.30 us a step
#: unrolled vs 0.86 us looped; the 145-node, 48-level bench tree 24 us unrolled (a gather and
#: a scatter per level) vs 10 us looped.
_UNROLL_MAX_LEVELS = 8


def _unrolled(parent, n_roots) -> bool:
    return _is_static(parent) and len(_plan(parent, n_roots).levels) <= _UNROLL_MAX_LEVELS


def _index(idx: np.ndarray):
    """A constant index: a slice when it is a contiguous increasing run, else the array."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + idx.size)
    return idx


def _rows(x, idx):
    return x[idx]


def _trailing(x, like):
    """Per-node x with unit axes to broadcast against like's trailing (parameter) axes."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def _arrays(*xs):
    return tuple(jnp.asarray(x) for x in xs)


def _unroll(n: int) -> int:
    # Measured: unrolling (even 16 nodes) makes both XLA's compile and the run slower.
    return 1
