"""Tangent (forward-sensitivity) functions of the generated JAX module's mechanism code.

Every mechanism function the module calls (a channel's currents, its state update, its
initial states; a pool's; an electrode input's value) gets a companion ``NAME_sens`` that
returns the derivative of each output along given tangents of its arguments plus the
parameters' own columns, with a trailing axis over the P selected parameters.  The
coefficients are the exact Jacobians of ``passes/sensitivity.py`` (the derivative of the
discrete map the primal performs), printed with :func:`~nml_gradiff.passes.discretize.dag_cse`.

Conventions of the generated code (docs/jax.md, "Sensitivities"):

* a tangent is ``None`` (structurally zero: skipped when the module is traced, so a model
  pays only for the derivatives it has) or an array whose last axis is the P parameters;
* ``SENS_BASIS[path]`` is the unit row of parameter ``path`` (absent: not selected);
* ``rt.jvp_sum((c1, d1), (c2, d2), ...)`` is ``sum c_k[..., None] * d_k`` over non-None d_k.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from ...errors import ModelError, UnsupportedError
from ...ir.mechanism import symbol
from ...passes.discretize import almost_everywhere, dag_cse, partial
from ...passes.sensitivity import SensitivityMap, sensitivities
from .printer import JaxPrinter, py_name

__all__ = ["TangentFunction", "mechanism_sensitivity", "check_selected", "advance_tangent",
           "current_tangent", "init_tangent", "expression_tangent"]


@dataclass
class TangentFunction:
    """``def name(p, <args>, d_<arg>=None..., new=None)``: tangents of ``rows``.

    ``rows``: (key, [(coefficient, ref)]) with ref ``("arg", name)`` (times the argument's
    tangent ``d_<name>``) or ``("theta", path)`` (times ``SENS_BASIS.get(path)``).
    ``solved``: local name -> state whose primal new value (``new[state]``) it stands for
    (the solved kinetic occupancies of :attr:`SensitivityMap.solved`).  ``returns``:
    ``"dict"`` or ``"ions"`` (``{ion: (dI, dG)}`` from rows in (I, G) pairs)."""

    name: str
    doc: str
    args: list[str]
    binds: dict[str, str]
    rows: list[tuple[str, list]]
    solved: dict[str, str] = field(default_factory=dict)
    returns: str = "dict"
    ions: list[str] = field(default_factory=list)
    #: per row key: (condition, value-rows) of clamps applied after the update (the tangent
    #: of the active branch, docs/sensitivity.md "continuous" events)
    clamps: dict[str, list] = field(default_factory=dict)

    @property
    def tangent_args(self) -> list[str]:
        refs = [r for _, terms in self.rows for _, r in terms]
        refs += [r for cl in self.clamps.values() for _, terms in cl for _, r in terms]
        return list(dict.fromkeys(n for kind, n in refs if kind == "arg"))

    def _ordered(self) -> list:
        """Every expression in the order :meth:`render` consumes them."""
        out = [c for _, terms in self.rows for c, _ in terms]
        for clamps in self.clamps.values():
            for cond, terms in clamps:
                out += [c for c, _ in terms] + [cond]
        return [sympy.sympify(e) for e in out]

    def render(self) -> str:
        exprs = self._ordered()
        used = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
        names = {py_name(s.name) for s in used}
        known = set(self.args) | set(self.binds) | set(self.solved)
        unknown = sorted(n for n in names if n not in known)
        if unknown:
            raise ModelError(f"{self.name}: derivatives use unresolved symbols {unknown}")
        targs = self.tangent_args
        clash = [f"d_{a}" for a in targs if f"d_{a}" in known] + (["new"] if "new" in known
                                                                   else [])
        if clash:
            raise ModelError(f"{self.name}: model names {clash} clash with tangent names")
        sig = ["p"] + self.args + [f"d_{a}=None" for a in targs] + ["new=None"]
        lines = [f"def {self.name}({', '.join(sig)}):", f'    """{self.doc}"""']
        lines += [f'    {n} = p["{path}"]' for n, path in self.binds.items() if n in names]
        lines += [f'    {n} = new["{state}"]' for n, state in self.solved.items() if n in names]
        printer = JaxPrinter()
        temps, reduced = dag_cse(exprs, prefix="_s")
        printer.names.update({s.name: s.name for s, _ in temps})
        lines += [f"    {s.name} = {printer.doprint(e)}" for s, e in temps]
        it = iter(reduced)
        values = {}
        for k, (key, terms) in enumerate(self.rows):
            lines.append(f"    _d{k} = {self._sum(printer, terms, it)}")
            values[key] = f"_d{k}"
        for k, (key, clamps) in enumerate(self.clamps.items()):
            for j, (_, terms) in enumerate(clamps):
                jump = self._sum(printer, terms, it)
                cond = printer.doprint(next(it))
                lines.append(f"    _c{k}_{j} = rt.where_tangent({cond}, {jump}, {values[key]})"
                             "  # a clamp: the tangent of the active branch")
                values[key] = f"_c{k}_{j}"
        lines.append(f"    return {self._return(values)}")
        return "\n".join(lines)

    def _sum(self, printer, terms, it) -> str:
        pairs = []
        for _, (kind, name) in terms:
            c = printer.doprint(next(it))
            d = f"d_{name}" if kind == "arg" else f'SENS_BASIS.get("{name}")'
            pairs.append(f"({c}, {d})")
        return f"rt.jvp_sum({', '.join(pairs)})"

    def _return(self, values: dict[str, str]) -> str:
        keys = [k for k, _ in self.rows]
        if self.returns == "ions":
            return "{" + ", ".join(f'"{ion}": ({values[keys[2 * k]]}, {values[keys[2 * k + 1]]})'
                                   for k, ion in enumerate(self.ions)) + "}"
        return "{" + ", ".join(f'"{k}": {values[k]}' for k in keys) + "}"


# ----------------------------------------------------------------------------- mechanisms

def mechanism_sensitivity(sm) -> SensitivityMap:
    """The SensitivityMap of a StepMap for all its differentiable parameters (cached by
    structure in the pass)."""
    return sensitivities(sm)


def check_selected(sm, binds: dict[str, str], selected: set[str]) -> None:
    """Refuse a selected parameter the sensitivity pass cannot differentiate (the pass
    raises its own UnsupportedError, e.g. for a pulse's delay or a threshold reset)."""
    names = [n for n in sm.parameters if py_name(n) in binds and binds[py_name(n)] in selected]
    if names:
        sensitivities(sm, names)


def _columns(sens: SensitivityMap, binds: dict[str, str]) -> list[tuple]:
    """The tangent ref of every Jacobian column, in the Jacobians' order."""
    cols = [[("arg", py_name(s)) for s in sens.states],
            [("arg", "v")] if sens.has_v else [],
            [("arg", py_name(r)) for r in sens.reads]]
    theta = []
    for n in sens.params:
        theta.append(("theta", binds[py_name(n)]) if py_name(n) in binds else ("arg", py_name(n)))
    return cols + [theta]


def _row_terms(jac, i: int, cols, selected: set[str]) -> list:
    terms = []
    for mat, group in zip((jac.x, jac.v, jac.reads, jac.theta), cols):
        for j, ref in enumerate(group):
            c = mat[i, j]
            if c == 0 or (ref[0] == "theta" and ref[1] not in selected):
                continue
            terms.append((c, ref))
    return terms


def _solved_names(code, when: str) -> dict[str, str]:
    """Local name of each state's primal value ``<state>__<when>`` -> the state."""
    return {py_name(f"{s}__{when}"): s for s in code.sm.states}


def advance_tangent(code, primal, selected: set[str], exclude=frozenset()) -> TangentFunction:
    """Tangents of ``code.advance()`` (the discretize map, then the mechanism's clamps)."""
    sens = mechanism_sensitivity(code.sm)
    cols = _columns(sens, code.binds)
    rows, clamps = [], {}
    index = {s: i for i, s in enumerate(sens.states)}
    for key, _ in primal.outputs:
        if key in exclude:
            continue
        rows.append((key, _row_terms(sens.next, index[key], cols, selected)))
    for ev in code.sm.events:
        if ev.condition is None or code.mech.kind == "cell" or not ev.assign:
            continue
        if ev.kind != "continuous":   # the primal applies a pool's (emit._events_after)
            raise UnsupportedError(f"sensitivities of {code.mech.name}: its OnCondition "
                                   f"({ev.kind}) has no tangent here")
        kin = {s for ks in code.sm.kinetic for s in ks.states}
        new = {symbol(s): symbol(f"{s}__next") for s in code.sm.states}
        for target, value in ev.assign.items():
            if target in kin or any(value.has(symbol(s)) for s in
                                    [*code.sm.states, *code.sm.reads]):
                raise UnsupportedError(f"sensitivities of {code.mech.name}: a clamp whose "
                                       "value depends on the state")
            terms = [(partial(value, symbol(n)), ("theta", code.binds[py_name(n)]))
                     for n in code.sm.parameters if py_name(n) in code.binds
                     and code.binds[py_name(n)] in selected]
            terms = [(c, r) for c, r in terms if c != 0]
            clamps.setdefault(target, []).append((ev.condition.xreplace(new), terms))
    solved = _solved_names(code, "next")
    return TangentFunction(f"{primal.name}_sens", f"{code.mech.name}: tangents of the state "
                           "update (exact derivative of the discrete map).", primal.args,
                           code.binds, rows, solved, "dict", clamps=clamps)


def current_tangent(code, primal, selected: set[str]) -> TangentFunction:
    """Tangents of ``code.current()``: of each ion's current and of its dI/dv."""
    sens = mechanism_sensitivity(code.sm)
    cols = _columns(sens, code.binds)
    rows = []
    for c, cs in zip(code.sm.currents, sens.currents):
        rows.append((f"i_{c.ion}", _row_terms(cs.current, 0, cols, selected)))
        rows.append((f"g_{c.ion}", _row_terms(cs.conductance, 0, cols, selected)))
    return TangentFunction(f"{primal.name}_sens", f"{code.mech.name}: tangents of the "
                           "currents and their derivatives in v.", primal.args, code.binds,
                           rows, {}, "ions", [c.ion for c in code.sm.currents])


def init_tangent(code, primal, selected: set[str]) -> TangentFunction:
    """Tangents of ``code.init()`` (steady-state gates move with v0, reads and parameters)."""
    sens = mechanism_sensitivity(code.sm)
    cols = _columns(sens, code.binds)
    rows = [(s, _row_terms(sens.init, i, cols, selected))
            for i, s in enumerate(sens.states)]
    solved = _solved_names(code, "init")
    return TangentFunction(f"{primal.name}_sens", f"{code.mech.name}: tangents of the "
                           "initial states.", primal.args, code.binds, rows, solved, "dict")


def expression_tangent(primal, selected: set[str], returns="dict") -> TangentFunction:
    """Tangents of a small generated function (an input's value, an inhomogeneous density)
    by differentiating its printed expressions directly (derivative almost everywhere)."""
    rows = []
    for key, expr in primal.outputs:
        expr = sympy.sympify(expr)
        terms = []
        by_name = {py_name(s.name): s for s in expr.free_symbols}
        for a in primal.args:
            if a in by_name:
                c = almost_everywhere(partial(expr, by_name[a]))
                if c != 0:
                    terms.append((c, ("arg", a)))
        for n, path in primal.binds.items():
            if n in by_name and path in selected:
                c = almost_everywhere(partial(expr, by_name[n]))
                if c != 0:
                    terms.append((c, ("theta", path)))
        rows.append((key, terms))
    return TangentFunction(f"{primal.name}_sens", f"tangents of {primal.name}.", primal.args,
                           primal.binds, rows, {}, returns)
