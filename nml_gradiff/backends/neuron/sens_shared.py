"""Shared Jacobians for the shadow cells: one mechanism per compartment carries all P.

Everything a channel companion of :mod:`.sens_emit` evaluates, except the final
multiply-adds, depends on the primal alone: ``G``, the current's Jacobians and the gate
update's Jacobians are the same on the P shadows of a compartment.  So for a channel that
neither reads a concentration nor exports its current to a pool, the work is split
(docs/neuron-gradients.md, "Shared Jacobians"):

* ``sensjac_<channel>``, on the **primal** compartment beside the channel, carries the gate
  sensitivities ``S<p>_<gate>`` of all P shadows.  It has a zero current, so that its
  BREAKPOINT runs in ``nrn_cur`` of primal step n, where nothing has advanced yet: there
  (once, on the first of NEURON's two calls, recognised by ``t``) it captures ``x[n]``
  (``v[n]`` it kept from its previous ``nrn_state``).  In ``nrn_state`` (``SOLVE``; ``v``
  is ``v[n+1]``, the gates may have moved: it uses its captured ``x[n]``) it evaluates
  once the Jacobians of the gate update at ``(x[n-1], v[n])`` (in step 0, of the initial
  values at ``v[0]``), reads each shadow's
  ``S_v[n]`` (POINTER ``sv<p>``), updates ``S<p>_x[n-1] -> S<p>_x[n]``, evaluates once
  ``G`` and the current's Jacobians at ``(v[n], x[n])`` with ``v[n+1] - v[n]``, and writes
  each shadow companion's ``G`` and ``J`` (POINTERs ``g<p>``, ``j<p>``).
* ``sens_<channel>`` on each shadow compartment is ``i = G (u - S_v[n-1]) + J`` with those
  values, read by NEURON's next ``nrn_cur`` (the shadow solve then gives ``S_v[n]``), and
  remembers ``S_v[n]`` in its own state update.

Every value is written in one phase and read in another (captures in ``nrn_cur``, read in
``nrn_state``; ``G``, ``J`` written in ``nrn_state``, read in the next ``nrn_cur``; the
shadow's v, fixed between solves), so nothing depends on the order in which NEURON calls
mechanisms.  The parameters the shadows differentiate are read from the channel itself
through POINTERs (``th_<name>``; the online learner changes them there, in BEFORE
BREAKPOINT) and copied for the next step's gate Jacobians (``thp_<name>``).

Why this shape: in NEURON 9 a POINTER read or write costs about as much as an exp (a
generic handle, checked at each access), and a BEFORE/AFTER block sets up the mechanism's
data for each instance.  So the mechanisms avoid BEFORE/AFTER blocks and use 3 POINTER
accesses per shadow and channel and step (the old companion: 2 to 6, plus the Jacobians).
The formulas are those of :mod:`.sens_emit`, regrouped by what they multiply.
"""

from __future__ import annotations

import sympy

from ... import __version__
from ...errors import UnsupportedError
from ...ir.mechanism import symbol
from .mod_lines import render_mod
from .emit import ModFile, Var, _wrapped
from .printer import FUNCTION_DEFINITIONS, Block
from .sens_emit import _H, Companion, _code, _CompanionEmitter, _subs

__all__ = ["jacobian_name", "shareable", "SharedEmitter"]


def jacobian_name(primal: str) -> str:
    return f"sensjac_{primal}"


def shareable(mech, binding, export: bool) -> bool:
    """Channels whose companion can take its Jacobians from a ``sensjac_`` mod: those that
    read no concentration (the pool's sensitivity enters their gate update per shadow)
    and export no current to a pool."""
    return (mech.kind == "channel" and not export
            and not any(r in binding.concentrations for r in mech.reads))


class SharedEmitter(_CompanionEmitter):
    """The ``sensjac_`` mod for ``shadows`` shadows and the lean companion of one channel
    (module docstring)."""

    def __init__(self, mech, binding, params, pools, export, shadows: int):
        self.P = shadows
        super().__init__(mech, binding, params, pools, export)

    def _names(self) -> None:
        pn = self.primal.names
        self.states = list(self.step.states)
        self.mod = {s: pn[s] for s in self.states}
        self.params = {p: pn[p] for p in self.step.parameters}
        self.wrt = {p: f"wrt_{self.params[p]}" for p in self.sens.params}
        self.theta = {p: f"th_{self.params[p]}" for p in self.sens.params}
        self.theta_now = {p: f"thc_{self.params[p]}" for p in self.sens.params}
        self.theta_before = {p: f"thp_{self.params[p]}" for p in self.sens.params}
        self.jname = jacobian_name(self.primal.name)
        self.coefficients = self._coefficients()
        self.subs_theta = self.theta_now
        own = ["vc", "vn", "started", "tdone", "v", "i", "dt", "celsius"]
        for s in self.states:
            own += [f"px_{self.mod[s]}", f"xp_{self.mod[s]}", f"xc_{self.mod[s]}"]
        for p in range(self.P):
            own += [f"sv{p}", f"g{p}", f"j{p}", f"u{p}"]
            own += [self.weight(p, w) for w in self.wrt.values()]
            own += [self.S(p, s) for s in self.states]
        own += [f"new_{self.mod[s]}" for s in self.states]
        self.ranged = [n for p, n in self.params.items() if p not in self.theta]
        names = own + self.ranged + [*self.theta.values(), *self.theta_now.values(),
                                     *self.theta_before.values()]
        names += [c for part in self.coefficients.values() for c, _, _ in part]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise UnsupportedError(f"sensitivities of {self.mech.name} in NEURON: names "
                                   f"{dup} collide in its shared-Jacobian mechanism")
        self.taken = set(names) | {"G", "J", "Svp"} | set(FUNCTION_DEFINITIONS)

    def S(self, p: int, state: str) -> str:
        return f"S{p}_{self.mod[state]}"

    @staticmethod
    def weight(p: int, wrt: str) -> str:
        """``wrt_<param>`` of shadow p (shadow_builder.py makes the same name)."""
        return f"wrt{p}_{wrt.removeprefix('wrt_')}"

    def _base_subs(self) -> dict:
        """As the companion's, with the differentiated parameters as the channel has them
        in this step (``thc_``, read once through ``th_``) or in the previous one
        (``thp_``)."""
        subs = super()._base_subs()
        subs.update({symbol(p): symbol(n) for p, n in self.subs_theta.items()})
        return subs

    # ------------------------------------------------------------ the coefficients
    def _coefficients(self) -> dict[str, list[tuple[str, sympy.Expr, list]]]:
        """Part -> [(LOCAL name, unsubstituted expression, factor)], where factor is what
        it multiplies: ``["S", state]``, ``["v"]`` (the shadow's S_v), ``["wrt", param]``,
        after ``["row", state]`` for the row of the gate update it belongs to.
        Structural zeros are left out."""
        sens, mod = self.sens, self.mod
        cur, nxt, ini = [], [], []

        def total(kind, k):
            return sympy.Add(*[getattr(c.current, kind)[0, k] for c in sens.currents])

        if sens.currents and sens.currents[0].current.v.shape[1]:
            cur.append(("jv", total("v", 0), ["v"]))
        cur += [(f"jx_{mod[s]}", total("x", k), ["S", s]) for k, s in enumerate(self.states)]
        cur += [(f"jt_{self.params[p]}", total("theta", j), ["wrt", p])
                for j, p in enumerate(sens.params)]
        for r, s in enumerate(self.states):
            row = ["row", s]
            nxt += [(f"fx_{mod[s]}_{mod[t]}", sens.next.x[r, k], row + ["S", t])
                    for k, t in enumerate(self.states)]
            if sens.next.v.shape[1]:
                nxt.append((f"fv_{mod[s]}", sens.next.v[r, 0], row + ["v"]))
                ini.append((f"iv_{mod[s]}", sens.init.v[r, 0], row + ["v"]))
            nxt += [(f"ft_{mod[s]}_{self.params[p]}", sens.next.theta[r, j], row + ["wrt", p])
                    for j, p in enumerate(sens.params)]
            ini += [(f"it_{mod[s]}_{self.params[p]}", sens.init.theta[r, j],
                     row + ["wrt", p]) for j, p in enumerate(sens.params)]
        keep = {"current": cur, "next": nxt, "init": ini}
        return {k: [c for c in v if sympy.sympify(c[1]) != 0] for k, v in keep.items()}

    def current_assignments(self) -> list[tuple[str, sympy.Expr]]:
        """G at (v[n], x[n]) and the coefficients of J, the derivative of NEURON's
        linearised current ``A(v[n]) + (v[n+1] - v[n]) (A(v[n] + 0.001) - A(v[n]))/0.001``;
        ``v`` is v[n+1]."""
        self.subs_theta = self.theta_now
        vc = symbol("vc")
        lo, hi = self._at(vc, "xc"), self._at(vc + _H, "xc")
        I = sympy.Add(*[c.expr for c in self.step.currents])
        dv = symbol("v") - vc
        out = [("G", (_subs(I, hi) - _subs(I, lo)) / _H)]
        for name, a, _ in self.coefficients["current"]:
            a0, a1 = _subs(a, lo), _subs(a, hi)
            out.append((name, a0 + dv * (a1 - a0) / _H))
        return out

    def next_assignments(self) -> list[tuple[str, sympy.Expr]]:
        """The gate update's Jacobians at (x[n-1], v[n]) with the parameters of step
        n-1; kinetic schemes' solved occupancies are x[n]."""
        self.subs_theta = self.theta_before
        at = self._at(symbol("vc"), "xp")
        out = [(name, _subs(e, at)) for name, e, _ in self.coefficients["next"]]
        self.subs_theta = self.theta_now
        return out

    def init_assignments(self) -> list[tuple[str, sympy.Expr]]:
        """The initial values' Jacobians at v[0] (step 0's ``vc``)."""
        self.subs_theta = self.theta_now
        at = self._at(symbol("vc"), "xc")
        return [(name, _subs(e, at)) for name, e, _ in self.coefficients["init"]]

    # ------------------------------------------------------------ per shadow
    def _factor(self, p: int, f: list) -> sympy.Symbol:
        if f[0] == "S":
            return symbol(self.S(p, f[1]))
        if f[0] == "wrt":
            return symbol(self.weight(p, self.wrt[f[1]]))
        return symbol(f"u{p}")

    def _row(self, part: str, p: int, state: str) -> sympy.Expr:
        return sympy.Add(*[symbol(c) * self._factor(p, f[2:])
                           for c, _, f in self.coefficients[part] if f[:2] == ["row", state]])

    def _branch(self, block: Block, comment: str, assignments, part: str,
                after: list[str] = ()) -> None:
        """One branch of advance(): the gate sensitivities' ``part`` ("next" or "init")."""
        block.level += 1
        block.comment(comment)
        block.locals += [n for n, _ in assignments]
        self._assign(block, assignments)
        self._updates(block, part)
        for line in after:
            block.line(line)
        block.level -= 1

    def _updates(self, block: Block, part: str) -> None:
        """S<p>_x = (the rows of ``part``) for every shadow p."""
        for p in range(self.P):
            rows = [(s, self._row(part, p, s)) for s in self.states]
            if part == "next" and len(self.states) > 1:     # rows read the old values
                for s, e in rows:
                    block.assign(f"new_{self.mod[s]}", e)
                for s, _ in rows:
                    block.line(f"{self.S(p, s)} = new_{self.mod[s]}")
            else:
                for s, e in rows:
                    block.assign(self.S(p, s), e)

    def _writes(self, block: Block) -> None:
        """Each shadow companion's G and J (3 POINTER accesses per shadow in all)."""
        for p in range(self.P):
            J = sympy.Add(*[symbol(c) * self._factor(p, f)
                            for c, _, f in self.coefficients["current"]])
            block.line(f"g{p} = G")
            block.assign(f"j{p}", J)

    # ------------------------------------------------------------ the Jacobian mod
    def _breakpoint(self) -> Block:
        block = Block(self.printer, self.taken)
        block.line("SOLVE advance")
        block.line("if (t != tdone) {")
        block.level += 1
        block.comment("nrn_cur of primal step n, first call: nothing has advanced yet")
        block.line("tdone = t")
        for s in self.states:
            block.line(f"xc_{self.mod[s]} = px_{self.mod[s]}")
        block.level -= 1
        block.line("}")
        block.line("i = 0")
        return block

    def _advance(self) -> Block:
        block = Block(self.printer, self.taken)
        block.comment("v is v[n+1]; the gates may have moved already: x[n] is xc")
        block.line("vc = vn")
        block.locals += [f"u{p}" for p in range(self.P)] + list(self.theta_now.values())
        block.locals += ["G"] + [c for c, _, _ in self.coefficients["current"]]
        for p in range(self.P):
            block.line(f"u{p} = sv{p}")
        for p, n in self.theta.items():
            block.line(f"{self.theta_now[p]} = {n}")
        block.line("if (started) {")
        self._branch(block, "S_x[n-1] -> S_x[n], through the update at (x[n-1], v[n])",
                     self.next_assignments(), "next")
        block.line("} else {")
        self._branch(block, "step 0: S_x[0] = dx0/dv S_v[0] + dx0/dtheta at v[0]",
                     self.init_assignments(), "init", ["started = 1"])
        block.line("}")
        block.comment("the shadows' next step: G and J at (v[n], x[n]), v[n+1] - v[n]")
        self._assign(block, self.current_assignments())
        self._writes(block)
        for p, n in self.theta_before.items():
            block.line(f"{n} = {self.theta_now[p]}")
        for s in self.states:
            block.line(f"xp_{self.mod[s]} = xc_{self.mod[s]}")
        block.line("vn = v")
        if len(self.states) > 1:
            block.locals += [f"new_{self.mod[s]}" for s in self.states]
        return block

    def jacobian_mod(self, command: str | None) -> tuple[str, dict[str, list]]:
        bp, adv = self._breakpoint(), self._advance()
        pointers = {f"px_{self.mod[s]}": ["range", self.mod[s]] for s in self.states}
        pointers.update({n: ["range", self.params[p]] for p, n in self.theta.items()})
        for p in range(self.P):
            pointers.update({f"sv{p}": ["shadow", p, "v"], f"g{p}": ["shadow", p, "G"],
                             f"j{p}": ["shadow", p, "J"]})
        book = [Var("tdone", "ms", "t of the last nrn_cur that captured"),
                Var("vc", "mV", "primal v[n]"), Var("vn", "mV", "primal v[n+1], for the "
                                                     "next step")]
        for s in self.states:
            m = self.mod[s]
            book += [Var(f"xp_{m}", "", f"{m}[n-1]"), Var(f"xc_{m}", "", f"{m}[n]")]
        book += [Var(n, "", f"{self.params[p]} in step n-1")
                 for p, n in self.theta_before.items()]
        for p in range(self.P):
            book += [Var(self.S(p, s), "", f"d{self.mod[s]}/dtheta on shadow {p}")
                     for s in self.states]
        weights = [Var(self.weight(p, w), "", f"1 on the shadow {p} of {q} where it applies",
                       "0") for p in range(self.P) for q, w in self.wrt.items()]
        params = [v for v in self.own_parameters() if v.name in self.ranged] + weights
        ranges = [v.name for v in params] + ["started"] + [v.name for v in book]
        init = Block(self.printer, self.taken)
        init.line("tdone = -1")
        for v in [Var("started"), *book[1:]]:
            init.line(f"{v.name} = 0")
        init.line("vn = v")
        init.comment("v[0]: NEURON sets v before the INITIAL blocks")
        assigned = [Var("v", "mV", "the primal's v"), Var("i", "mA_per_cm2", "zero"),
                    Var("dt", "ms", ""), Var("celsius", "degC", ""),
                    Var("started", "", "0 until the first nrn_state")]
        assigned += [Var(n, "", f"POINTER: {' '.join(map(str, t))}")
                     for n, t in pointers.items()]
        assigned += book
        mod = ModFile(
            name=self.jname, title=f"{self.jname}: the sensitivities of {self.primal.name} "
            f"on {self.P} shadow cells", header=self._header(command),
            neuron=[f"SUFFIX {self.jname}", "NONSPECIFIC_CURRENT i",
                    *_wrapped("RANGE", ranges), *_wrapped("POINTER", list(pointers))],
            parameters=params, assigned=assigned, states=[],
            initial=_code("INITIAL", "", init), breakpoint=_code("BREAKPOINT", "", bp),
            blocks=[_code("PROCEDURE", "advance()", adv, "state part of primal step n: the "
                          "gate sensitivities of step n, the shadows' G and J for step n+1")],
            net_receive=None,
            functions=[FUNCTION_DEFINITIONS[f] for f in sorted(self.printer.used)],
            template="companion.mod.j2")
        return render_mod(mod.template, m=mod), pointers

    # ------------------------------------------------------------ the companion
    def companion_mod(self) -> str:
        bp = Block(self.printer, self.taken)
        bp.line("SOLVE advance")
        bp.comment("the shadow solve gives S_v[n] (slope G, value J at u = S_v[n-1])")
        bp.line("i = G*(v - Svp) + J")
        adv = Block(self.printer, self.taken)
        adv.line("Svp = v")
        book = [Var("Svp", "", "S_v[n-1]"),
                Var("G", "S_per_cm2", f"primal di/dv at step n-1, from {self.jname}"),
                Var("J", "", f"derivative of the linearised current, from {self.jname}")]
        init = Block(self.printer, self.taken)
        for v in book:
            init.line(f"{v.name} = 0")
        mod = ModFile(
            name=self.name, title=f"{self.name}: the current of {self.primal.name} on a "
            "shadow cell", header=self._header(None, companion=True),
            neuron=[f"SUFFIX {self.name}", "NONSPECIFIC_CURRENT i",
                    *_wrapped("RANGE", [v.name for v in book])],
            parameters=[], assigned=[Var("v", "mV", "the shadow's v: S_v"),
                                     Var("i", "mA_per_cm2", ""), *book],
            states=[], initial=_code("INITIAL", "", init),
            breakpoint=_code("BREAKPOINT", "", bp),
            blocks=[_code("PROCEDURE", "advance()", adv, "after the solve: S_v[n]")],
            net_receive=None, functions=[], template="companion.mod.j2")
        return render_mod(mod.template, m=mod)

    # ------------------------------------------------------------ both
    def build(self, command: str | None) -> Companion:
        jtext, jpointers = self.jacobian_mod(command)
        jacobian = {"name": self.jname, "text": jtext, "pointers": jpointers,
                    "range": list(self.ranged),
                    "states": {self.mod[s]: [self.S(p, s) for p in range(self.P)]
                               for s in self.states}}
        return Companion(self.name, self.primal.name, {}, dict(self.wrt),
                         self.companion_mod(), states=[self.mod[s] for s in self.states],
                         jacobian=jacobian)

    def _header(self, command: str | None, companion: bool = False) -> list[str]:
        m = self.mech
        lead = (f"The current of {self.primal.name} (channel {m.name}) on a shadow cell, "
                f"whose v is dv/dtheta: G and J come from {self.jname} on the primal;"
                if companion else
                f"Forward sensitivities of {self.primal.name} (channel {m.name}) for "
                f"{self.P} shadow cells, Jacobians evaluated once per compartment and step;")
        return [lead, "the exact derivative of NEURON's fixed step, one step behind the "
                "primal (docs/neuron-gradients.md, \"Shared Jacobians\").",
                f"source: {m.source or '(not from a file)'}",
                f"generated by nml-gradiff {__version__}",
                f"command: {command or 'nml_gradiff.backends.neuron.sens_shared'}",
                "Do not edit: regenerate it from the source model."]
