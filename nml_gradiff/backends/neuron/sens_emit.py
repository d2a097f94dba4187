"""Companion mechanisms for the NEURON shadow cells: the exact derivative of NEURON's step.

A shadow cell is a copy of a cell's sections (same geometry, nseg, cm, Ra) whose membrane
potential is ``S_v = dv/dtheta``.  On each shadow segment, one companion per primal channel
reads the primal segment's ``v`` and gate states through POINTERs and runs **one step
behind** the primal (docs/neuron-gradients.md):

* its current part (``nrn_cur``, before NEURON's solve in primal step k) sees the primal's
  ``v[k]`` and ``x[k]`` and its own stored ``v[k-1]``, ``x[k-1]``, ``S_x[k-1]``, ``S_v[k-1]``;
  it injects ``i(u) = G (u - S_v[k-1]) + J``, where ``G`` is the primal's conductance at
  step k-1 (NEURON's 0.001 mV difference quotient, recomputed) and ``J`` the derivative of
  NEURON's linearised current ``I + G (v[k] - v[k-1])``; NEURON's solve on the shadow then
  gives exactly ``S_v[k]``;
* its state part (``SOLVE advance``, after the solve) propagates the gates' sensitivities
  ``S_x[k] = dF/dx S_x[k-1] + dF/dv S_v[k] + dF/dtheta`` (F evaluated at ``x[k-1]``,
  ``v[k]``: the update NEURON performed), then remembers ``v[k]``, ``x[k]``, ``S_v[k]``.

A concentration pool's companion carries ``S_c``: it sums the exported current
sensitivities of the channels writing its ion and is read by the channels that read the
concentration (:class:`_PoolCompanion`, docs/neuron-gradients.md "Concentration pools").

The derivatives come from :mod:`nml_gradiff.passes.sensitivity`; this module only prints
them.  One companion serves every parameter: ``wrt_<p>`` (0 or 1, set per shadow and
segment by the loader) selects the parameter's column.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from ... import __version__
from ...errors import UnsupportedError
from ...ir.mechanism import Mechanism, symbol
from ...passes.discretize import _rebuild, dag_cse, dag_xreplace, discretize
from ...passes.sensitivity import SensitivityMap, sensitivities, solved_symbol
from .mod_lines import render_mod
from .emit import Binding, Code, ModFile, Var, _Channel, _Pool, _wrapped
from .printer import FUNCTION_DEFINITIONS, Block, NmodlPrinter, nmodl_number

__all__ = ["Companion", "emit_companion", "companion_name"]

#: Printed length above which a subexpression gets a line of its own (nocmodl's limit is
#: about 500 characters per line).
_LINE = 240

#: NEURON's step in its difference quotient ``G = (I(v + 0.001) - I(v))/0.001``.
_H = sympy.Rational(1, 1000)


@dataclass
class Companion:
    """A companion mod and what the loader needs to wire it.

    ``pointers``: POINTER name -> what it points to, one of ``["v"]`` (the primal
    compartment's v), ``["range", var]`` (``<var>_<primal>``), ``["ion", var]`` (the primal
    compartment's ``cai``, ``ica``, ...), ``["pool", ion, var]`` (``<var>`` of the companion
    of the pool of ``ion`` on the same shadow compartment), ``["current", ion, j]`` (``Sic``
    of the j-th companion exporting ``ion``'s current there, or 0)."""

    name: str                   # SUFFIX of the companion
    primal: str                 # SUFFIX of the primal mechanism it follows
    pointers: dict[str, list]
    wrt: dict[str, str]         # IR parameter symbol -> RANGE weight name
    text: str
    exports: str | None = None  # ion whose current sensitivity it exports as Sic
    pool: str | None = None     # ion whose concentration it carries (a pool companion)
    states: list[str] | None = None  # mod names of the states it carries S_<state> of
    #: the ``sensjac_`` mod on the primal compartment that carries the sensitivities of
    #: all shadows and writes this companion's G and J (sens_shared.py): name, text,
    #: pointers (as above, and ``["shadow", p, var]``: var of this companion, or v, on
    #: shadow p), range (the RANGE parameters the loader sets where the channel is
    #: placed), states (state -> its S on each shadow); None: a self-contained companion
    jacobian: dict | None = None


def companion_name(primal: str) -> str:
    return f"sens_{primal}"


def emit_companion(mech: Mechanism, binding: Binding, params: list[str],
                   command: str | None = None, *, pools: dict[str, int] | None = None,
                   export: bool = False, shadows: int = 1) -> Companion:
    """The companion of channel or pool ``mech`` placed with ``binding``, with columns for
    the IR parameter symbols ``params`` of this mechanism (possibly none: it then only
    carries sensitivities that reach it through v).

    ``pools``: ion -> number of channels writing its current on the cell, for the ions
    whose concentration a pool on the cell carries (a channel reading ``<ion>i`` takes its
    sensitivity from that pool's companion; a pool sums that many exported currents).
    ``export``: a channel whose ion a pool reads exports its current's sensitivity.
    ``shadows``: the number of shadow cells of each primal cell; a channel that neither
    reads a concentration nor exports its current gets a ``sensjac_`` mod that carries
    all of them (sens_shared.py), the others a companion on each shadow."""
    if mech.kind == "concentration":
        return _PoolCompanion(mech, binding, params, pools or {}).build(command)
    from .sens_shared import SharedEmitter, shareable   # it builds on this module
    if shareable(mech, binding, export):
        return SharedEmitter(mech, binding, params, pools or {}, export,
                             shadows).build(command)
    return _CompanionEmitter(mech, binding, params, pools or {}, export).build(command)


class _CompanionEmitter:
    kind = "channel"

    def __init__(self, mech: Mechanism, binding: Binding, params: list[str],
                 pools: dict[str, int], export: bool = False):
        if self.kind == "channel":
            _check(mech, binding, pools)
        self.mech, self.binding, self.pools = mech, binding, pools
        self.primal = self.primal_emitter(mech, binding)
        self.primal.bind()
        self.exports = self.primal.ion if export else None
        self.name = companion_name(self.primal.name)
        self.step = discretize(mech)
        if self.step.forward_euler:
            raise UnsupportedError(f"sensitivities of {mech.name} in NEURON: states "
                                   f"{self.step.forward_euler} are not integrated by cnexp "
                                   "or sparse, so the step map is not NEURON's")
        self.sens: SensitivityMap = sensitivities(self.step, list(params))
        self.printer = NmodlPrinter()
        self.taken: set[str] = set()
        self.ncse = 0
        self.concs = self.concentration_reads()
        for c in self.step.currents:
            if {x.name for x in c.expr.free_symbols} & set(self.concs):
                raise UnsupportedError(f"sensitivities of {mech.name} in the NEURON backend: "
                                       "its current reads a concentration")
        self._names()

    def primal_emitter(self, mech, binding):
        return _Channel(mech, binding)

    def concentration_reads(self) -> dict[str, str]:
        """LEMS requirement -> NEURON ion variable, for the concentrations read."""
        return {r: self.binding.concentrations[r] for r in self.step.reads
                if r in self.binding.concentrations}

    def conc_sens(self, read: str):
        """The sensitivity of a concentration read at step k: the pool companion's new S
        (``pS_<var>``) where a pool carries it, else 0 (nothing changes it)."""
        var = self.concs[read]
        return symbol(f"pS_{var}") if var[-1] == "i" and var[:-1] in self.pools else 0

    def extra_names(self) -> list[str]:
        names = []
        for var in self.concs.values():
            names += [f"pc_{var}", f"cc_{var}", f"pS_{var}"]
        return names + (["Sic"] if self.exports else [])

    # -------------------------------------------------------------- names
    def _names(self) -> None:
        pn = self.primal.names
        self.states = list(self.step.states)
        self.mod = {s: pn[s] for s in self.states}                 # primal mod names
        self.params = {p: pn[p] for p in self.step.parameters}
        self.wrt = {p: f"wrt_{self.params[p]}" for p in self.sens.params}
        own = ["pv", "vp", "vc", "Svp", "G", "J", "started", "i", "v", "dt", "celsius"]
        for s in self.states:
            m = self.mod[s]
            own += [f"px_{m}", f"xp_{m}", f"xc_{m}", f"S_{m}"]
        names = own + list(self.params.values()) + list(self.wrt.values()) + self.extra_names()
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise UnsupportedError(f"sensitivities of {self.mech.name} in NEURON: names "
                                   f"{dup} collide in the companion mechanism")
        self.taken = set(names) | set(FUNCTION_DEFINITIONS)

    def _base_subs(self) -> dict:
        subs = {symbol(p): symbol(n) for p, n in self.params.items()}
        subs[symbol("dt")] = symbol("dt")
        if "temperature" in self.step.reads:
            subs[symbol("temperature")] = symbol("celsius")
        # concentrations as the primal read them at step k (gates: n+1, captured in nrn_cur)
        subs.update({symbol(r): symbol(f"cc_{var}") for r, var in self.concs.items()})
        return subs

    def _reads_term(self, jac, row: int) -> sympy.Expr:
        return sympy.Add(*[jac.reads[row, j] * self.conc_sens(r)
                           for j, r in enumerate(self.sens.reads) if r in self.concs])

    def _at(self, v, states: str) -> dict:
        """Substitution: v -> ``v``, each state -> ``<states>_<name>`` (xp: x[k-1])."""
        subs = self._base_subs()
        subs[symbol("v")] = v
        subs.update({symbol(s): symbol(f"{states}_{self.mod[s]}") for s in self.states})
        for s in self.states:      # solved kinetic occupancies: the primal's own x[k]
            subs[solved_symbol(s, "next")] = symbol(f"xc_{self.mod[s]}")
            subs[solved_symbol(s, "init")] = symbol(f"xc_{self.mod[s]}")
        return subs

    # -------------------------------------------------------------- expressions
    def _weighted_theta(self, jac, row: int) -> sympy.Expr:
        return sympy.Add(*[symbol(self.wrt[p]) * jac.theta[row, j]
                           for j, p in enumerate(self.sens.params)])

    def _current_direction(self, jac) -> sympy.Expr:
        """``dI/dv S_v + dI/dx S_x + dI/dtheta`` (all currents; S_v[k-1] is ``Svp``)."""
        S = [symbol(f"S_{self.mod[s]}") for s in self.states]
        total = []
        for c in self.sens.currents:
            j = getattr(c, jac)
            total += [j.x[0, k] * S[k] for k in range(len(S))]
            total.append(j.v[0, 0] * symbol("Svp"))
            total.append(self._weighted_theta(j, 0))
        return sympy.Add(*total)

    def current_assignments(self) -> list[tuple[str, sympy.Expr]]:
        """G and J at (v[k-1], x[k-1]); NEURON's quotient and its exact derivative."""
        I = sympy.Add(*[c.expr for c in self.step.currents])
        A = self._current_direction("current")
        vp = symbol("vp")
        lo, hi = self._at(vp, "xp"), self._at(vp + _H, "xp")
        I0, I1 = _subs(I, lo), _subs(I, hi)
        A0, A1 = _subs(A, lo), _subs(A, hi)
        dv = symbol("vc") - vp
        return [("G", (I1 - I0) / _H), ("J", A0 + dv * (A1 - A0) / _H)]

    def next_assignments(self) -> list[tuple[str, sympy.Expr]]:
        """S_x[k] from S_x[k-1] and the shadow's v = S_v[k], through F(x[k-1], v[k])."""
        at = self._at(symbol("vc"), "xp")
        S = [symbol(f"S_{self.mod[s]}") for s in self.states]
        nxt = self.sens.next
        out = []
        for r, s in enumerate(self.states):
            # substitute first: the shadow's own v (S_v[k]) is not the primal's v
            e = _subs(sympy.Add(*[nxt.x[r, k] * S[k] for k in range(len(S))],
                                self._reads_term(nxt, r), self._weighted_theta(nxt, r)), at)
            out.append((f"new_{self.mod[s]}", e + _subs(nxt.v[r, 0], at) * symbol("v")))
        return out

    def init_assignments(self) -> list[tuple[str, sympy.Expr]]:
        """S_x[0] = dx0/dv S_v[0] + dx0/dtheta, at v[0] (``vc`` in the first step)."""
        at = self._at(symbol("vc"), "xc")
        ini = self.sens.init
        return [(f"S_{self.mod[s]}", _subs(ini.v[r, 0], at) * symbol("v")
                 + _subs(self._weighted_theta(ini, r), at))
                for r, s in enumerate(self.states)]

    # -------------------------------------------------------------- blocks
    def _assign(self, block: Block, assignments) -> None:
        """Assignments sharing subexpressions through LOCAL temporaries ``cse<k>_<i>``.
        dag_cse, not sympy.cse: it never re-evaluates (sympy's can fold a never-taken
        ``1/0`` branch of a NeuroML time course into an unprintable ``zoo``)."""
        self.ncse += 1
        prefix = f"cse{self.ncse}_"
        if any(n.startswith(prefix) for n in self.taken):
            raise UnsupportedError(f"sensitivities of {self.mech.name}: a quantity named "
                                   f"{prefix}... collides with the companion's temporaries")
        temps, reduced = dag_cse([e for _, e in assignments], prefix=prefix)
        self.nlong = 0
        for sym, expr in temps:
            block.locals.append(sym.name)
            self._assign_short(block, sym.name, expr, prefix)
        for (name, _), expr in zip(assignments, reduced):
            self._assign_short(block, name, expr, prefix)

    def _length(self, expr) -> int:
        """Printed length; 0 with a conditional inside (Block.assign lifts those into
        statements of their own)."""
        return 0 if expr.has(sympy.Piecewise) else len(self.printer.code(expr))

    def _assign_short(self, block: Block, name: str, expr, prefix: str) -> None:
        """``name = expr`` in lines nocmodl accepts (it limits a line's length): long
        subexpressions become LOCALs, long sums are accumulated a few terms at a time."""
        memo: dict = {}

        def short(e):
            if e.is_Atom or isinstance(e, (sympy.logic.boolalg.Boolean, sympy.Piecewise)):
                return e
            hit = memo.get(e)
            if hit is None:
                hit = _rebuild(e.func, [short(a) for a in e.args])
                if self._length(hit) > _LINE:
                    hit = lift(hit)
                memo[e] = hit
            return hit

        def lift(e):
            self.nlong += 1
            temp = f"{prefix}long{self.nlong}"
            block.locals.append(temp)
            sums(temp, e)
            return symbol(temp)

        def sums(target, e):
            if not isinstance(e, sympy.Add):
                block.assign(target, e)
                return
            chunk, first = [], True
            for term in e.args:
                chunk.append(term)
                if self._length(sympy.Add(*chunk, evaluate=False)) > _LINE // 2:
                    block.assign(target, sympy.Add(*([] if first else [symbol(target)]),
                                                   *chunk, evaluate=False))
                    chunk, first = [], False
            if chunk or first:
                block.assign(target, sympy.Add(*([] if first else [symbol(target)]), *chunk,
                                               evaluate=False))

        e = sympy.sympify(expr)
        if e.is_Atom or isinstance(e, sympy.Piecewise):
            block.assign(name, e)
        else:
            sums(name, _rebuild(e.func, [short(a) for a in e.args]))

    def capture(self, block: Block) -> None:
        """nrn_cur of primal step k: nothing has advanced yet in this phase, so the
        POINTERs give the primal's v[k], x[k] and concentrations whatever the order."""
        block.line("vc = pv")
        for s in self.states:
            block.line(f"xc_{self.mod[s]} = px_{self.mod[s]}")
        for var in self.concs.values():
            block.line(f"cc_{var} = pc_{var}")

    def breakpoint(self) -> Code:
        block = Block(self.printer, self.taken)
        block.line("SOLVE advance")
        block.comment("nrn_cur of primal step k: pv, px_* are the primal's v[k], x[k]")
        self.capture(block)
        block.line("if (started) {")
        block.level += 1
        block.comment("G: NEURON's di/dv of the primal at step k-1; J: the derivative of "
                      "I + G (v[k] - v[k-1])")
        self._assign(block, self.current_assignments())
        block.level -= 1
        block.line("} else {")
        block.line("    G = 0")
        block.line("    J = 0")
        block.line("}")
        block.comment("the shadow solve then gives S_v[k] (slope G, value J at u = S_v[k-1])")
        block.line("i = G*(v - Svp) + J")
        return _code("BREAKPOINT", "", block)

    def export_assignments(self) -> list[tuple[str, sympy.Expr]]:
        """``Sic``: the sensitivity of this channel's current at step k (v[k], x[k], S_v[k],
        S_x[k]), which the pool companion reads in the next step's nrn_cur."""
        at = self._at(symbol("vc"), "xc")
        # substitute first: the shadow's own v (S_v[k]) is not the primal's v
        A = _subs(self._current_direction("current"), at)
        return [("Sic", _subs(A, {symbol("Svp"): symbol("v")}))]

    def advance(self) -> Code:
        block = Block(self.printer, self.taken)
        block.comment("after the solve: v is the shadow's S_v[k]")
        block.line("if (started) {")
        block.level += 1
        nxt = self.next_assignments()
        for name, _ in nxt:
            block.locals.append(name)
        self._assign(block, nxt)
        for s in self.states:
            block.line(f"S_{self.mod[s]} = new_{self.mod[s]}")
        block.level -= 1
        block.line("} else {")
        block.level += 1
        block.comment("first step: S_v[0] and the initial sensitivities S_x[0]")
        self._assign(block, self.init_assignments())
        block.line("started = 1")
        block.level -= 1
        block.line("}")
        if self.exports:
            self._assign(block, self.export_assignments())
        self.remember(block)
        return _code("PROCEDURE", "advance()", block,
                       "state part of primal step k: S_x[k-1] -> S_x[k]; remember step k")

    def remember(self, block: Block) -> None:
        block.line("Svp = v")
        block.line("vp = vc")
        for s in self.states:
            block.line(f"xp_{self.mod[s]} = xc_{self.mod[s]}")

    def bookkeeping(self) -> list[Var]:
        """RANGE ASSIGNEDs besides the parameters (all zeroed in INITIAL)."""
        out = [Var("vp", "mV", "primal v[k-1]"), Var("vc", "mV", "primal v[k]"),
               Var("Svp", "", "S_v[k-1]"), Var("G", "S_per_cm2", "primal di/dv at step k-1"),
               Var("J", "", "derivative of the linearised current")]
        for s in self.states:
            mn = self.mod[s]
            out += [Var(f"S_{mn}", "", f"d{mn}/dtheta"), Var(f"xp_{mn}", "", f"{mn}[k-1]"),
                    Var(f"xc_{mn}", "", f"{mn}[k]")]
        out += [Var(f"cc_{var}", "mM", f"primal {var} at step k") for var in self.concs.values()]
        if self.exports:
            out.append(Var("Sic", "", f"d i{self.exports}/dtheta at step k-1, for the pool"))
        return out

    def pointers(self) -> dict[str, list]:
        out = {"pv": ["v"]}
        out.update({f"px_{self.mod[s]}": self.state_target(s) for s in self.states})
        for r, var in self.concs.items():
            out[f"pc_{var}"] = ["ion", var]
            if self.conc_sens(r) != 0:
                out[f"pS_{var}"] = ["pool", var[:-1], f"Snew_{var}"]
        return out

    def state_target(self, state: str) -> list:
        return ["range", self.mod[state]]

    def initial(self) -> Code:
        block = Block(self.printer, self.taken)
        block.line("started = 0")
        for v in self.bookkeeping():
            block.line(f"{v.name} = 0")
        return _code("INITIAL", "", block)

    def neuron_extra(self) -> list[str]:
        return ["NONSPECIFIC_CURRENT i"]

    def own_parameters(self) -> list[Var]:
        m = self.mech
        placed = {**m.parameters, **m.placement}
        return [Var(self.params[p], placed[p].unit, placed[p].path or "set where placed",
                    nmodl_number(placed[p].value)) for p in self.step.parameters]

    # -------------------------------------------------------------- the file
    def build(self, command: str | None) -> Companion:
        bp, adv, ini = self.breakpoint(), self.advance(), self.initial()
        pointers = self.pointers()
        book = self.bookkeeping()
        params = self.own_parameters()
        params += [Var(w, "", f"1 on a shadow of {p} where it applies", "0")
                   for p, w in self.wrt.items()]
        ranges = [v.name for v in params] + ["started"] + [v.name for v in book]
        neuron = [f"SUFFIX {self.name}", *self.neuron_extra()]
        neuron += _wrapped("RANGE", ranges) + _wrapped("POINTER", list(pointers))
        assigned = [Var("v", "mV", "the shadow's v: S_v"), Var("i", "mA_per_cm2", ""),
                    Var("dt", "ms", ""), Var("celsius", "degC", ""), Var("area", "um2", ""),
                    Var("started", "", "0 until the first step is done")]
        assigned += [Var(name, "", f"POINTER: {' '.join(map(str, target))}")
                     for name, target in pointers.items()]
        assigned += book
        mod = ModFile(name=self.name, title=f"{self.name}: sensitivity companion of "
                      f"{self.primal.name}", header=self._header(command), neuron=neuron,
                      parameters=params, assigned=assigned, states=[], initial=ini,
                      breakpoint=bp, blocks=[adv], net_receive=None,
                      functions=[FUNCTION_DEFINITIONS[f] for f in sorted(self.printer.used)],
                      template="companion.mod.j2")
        text = render_mod(mod.template, m=mod)
        return Companion(self.name, self.primal.name, pointers, dict(self.wrt), text,
                         exports=self.exports, pool=getattr(self, "pool_ion", None),
                         states=[self.mod[s] for s in self.states])

    def _header(self, command: str | None) -> list[str]:
        m = self.mech
        return [f"Forward-sensitivity companion of {self.primal.name} (channel {m.name}), "
                "for a shadow cell whose v is dv/dtheta;",
                "the exact derivative of NEURON's fixed step, one step behind the primal "
                "(docs/neuron-gradients.md).",
                f"source: {m.source or '(not from a file)'}",
                f"generated by nml-gradiff {__version__}",
                f"command: {command or 'nml_gradiff.backends.neuron.sens_emit'}",
                "Do not edit: regenerate it from the source model."]


class _PoolCompanion(_CompanionEmitter):
    """The companion of a concentration pool: no current of its own (a zero one, so that
    its BREAKPOINT runs in nrn_cur).  In nrn_cur of primal step k it computes the pool's
    new sensitivity ``Snew = S_c[k]`` from ``c[k-1]``, ``i<ion>[k-1]`` and the channel
    companions' ``Sic`` (their current's sensitivity at step k-1, exported in their previous
    state update): the channels that read the pool take it in their own state update of
    the same step, as the primal's gates see ``c[k]``."""

    kind = "concentration"

    def __init__(self, mech, binding, params, pools):
        self.pool_ion = binding.ion or mech.texts.get("ion") or mech.ion or "ca"
        self.n_currents = pools.get(self.pool_ion, 0)
        super().__init__(mech, binding, params, pools)
        for s_ in self.states:
            if self.mod[s_] == f"{self.pool_ion}o":
                raise UnsupportedError(f"sensitivities of {mech.name} in the NEURON backend: "
                                       "it changes the outside concentration")
        if mech.events and any(ev.kind != "continuous" for ev in self.step.events):
            raise UnsupportedError(f"sensitivities of {mech.name} (events) in the NEURON "
                                   "backend")

    def primal_emitter(self, mech, binding):
        return _Pool(mech, binding)

    def concentration_reads(self) -> dict[str, str]:
        return {}

    def extra_names(self) -> list[str]:
        names = ["pica", "icap", "area", "zero"] + [f"psic{j}" for j in range(self.n_currents)]
        names += [f"Snew_{self.mod[s]}" for s in self.states]
        return names + [n for n in ("initialConcentration", "initialExtConcentration")
                        if n in self.step.reads]

    def _base_subs(self) -> dict:
        subs = super()._base_subs()
        for r in self.step.reads:
            if r in ("iCa", "iCa2"):           # as the primal pool: nA into the cell
                subs[symbol(r)] = -symbol("icap") * symbol("area") / 100
            elif r == "surfaceArea":
                subs[symbol(r)] = symbol("area")
            elif r in ("initialConcentration", "initialExtConcentration"):
                subs[symbol(r)] = symbol(r)
            elif r not in ("temperature", "t"):
                raise UnsupportedError(f"sensitivities of {self.mech.name} in the NEURON "
                                       f"backend: it reads {r}")
        return subs

    def _reads_term(self, jac, row: int) -> sympy.Expr:
        S_ica = sympy.Add(*[symbol(f"psic{j}") for j in range(self.n_currents)])
        return sympy.Add(*[jac.reads[row, j] * (-S_ica * symbol("area") / 100)
                           for j, r in enumerate(self.sens.reads) if r in ("iCa", "iCa2")])

    def next_assignments(self) -> list[tuple[str, sympy.Expr]]:
        at = self._at(symbol("vc"), "xp")
        S = [symbol(f"S_{self.mod[s]}") for s in self.states]
        nxt = self.sens.next
        return [(f"Snew_{self.mod[s]}",
                 _subs(sympy.Add(*[nxt.x[r, k] * S[k] for k in range(len(S))],
                                 self._reads_term(nxt, r), self._weighted_theta(nxt, r)), at))
                for r, s in enumerate(self.states)]

    def init_assignments(self) -> list[tuple[str, sympy.Expr]]:
        at = self._at(symbol("vc"), "xc")
        return [(f"S_{self.mod[s]}", _subs(self._weighted_theta(self.sens.init, r), at))
                for r, s in enumerate(self.states)]

    def capture(self, block: Block) -> None:
        for s in self.states:
            block.line(f"xc_{self.mod[s]} = px_{self.mod[s]}")

    def breakpoint(self) -> Code:
        block = Block(self.printer, self.taken)
        block.line("SOLVE advance")
        block.comment("nrn_cur of primal step k: px_* are the primal's c[k]")
        self.capture(block)
        block.line("if (started) {")
        block.level += 1
        block.comment("S_c[k] from c[k-1], i[k-1] and the channels' Sic (step k-1)")
        self._assign(block, self.next_assignments())
        block.level -= 1
        block.line("}")
        block.line("i = 0")
        return _code("BREAKPOINT", "", block)

    def advance(self) -> Code:
        block = Block(self.printer, self.taken)
        block.line("if (started) {")
        for s in self.states:
            block.line(f"    S_{self.mod[s]} = Snew_{self.mod[s]}")
        block.line("} else {")
        block.level += 1
        block.comment("first step: the initial sensitivities")
        self._assign(block, self.init_assignments())
        block.line("started = 1")
        block.level -= 1
        block.line("}")
        block.line("icap = pica")
        for s in self.states:
            block.line(f"xp_{self.mod[s]} = xc_{self.mod[s]}")
        return _code("PROCEDURE", "advance()", block,
                       "state part of primal step k: commit S_c[k]; remember c[k], i[k]")

    def bookkeeping(self) -> list[Var]:
        out = [Var("icap", "mA_per_cm2", f"primal i{self.pool_ion}[k-1]"),
               Var("zero", "", "what unused psic POINTERs point to")]
        for s in self.states:
            mn = self.mod[s]
            out += [Var(f"S_{mn}", "", f"d{mn}/dtheta"), Var(f"Snew_{mn}", "", "S at step k"),
                    Var(f"xp_{mn}", "", f"{mn}[k-1]"), Var(f"xc_{mn}", "", f"{mn}[k]")]
        return out

    def state_target(self, state: str) -> list:
        name = self.mod[state]
        return ["ion", name] if name == f"{self.pool_ion}i" else ["range", name]

    def pointers(self) -> dict[str, list]:
        out = {f"px_{self.mod[s]}": self.state_target(s) for s in self.states}
        out["pica"] = ["ion", f"i{self.pool_ion}"]
        out.update({f"psic{j}": ["current", self.pool_ion, j] for j in range(self.n_currents)})
        return out

    def own_parameters(self) -> list[Var]:
        out = super().own_parameters()
        return out + [Var(n, "mM", "set where placed (species)", "0")
                      for n in ("initialConcentration", "initialExtConcentration")
                      if n in self.step.reads]

    def neuron_extra(self) -> list[str]:
        return ["NONSPECIFIC_CURRENT i"]


def _code(keyword: str, name: str, block: Block, comment: str = "") -> Code:
    """A block whose LOCALs are wrapped over several lines (nocmodl limits a line's
    length, and the derivatives need many temporaries)."""
    code = Code.of(keyword, name, block, comment)
    if code.locals:         # one LOCAL statement, continued over lines after commas
        lines = _wrapped("LOCAL", code.locals, width=80)
        lines = [line + "," for line in lines[:-1]] + lines[-1:]
        code.lines = ["    " + lines[0]] + ["         " + line.removeprefix("LOCAL ")
                                             for line in lines[1:]] + code.lines
        code.locals = []
    return code


def _subs(expr, mapping: dict):
    """Substitute without evaluating: xreplace would fold the never-taken ``1/0`` branch of
    a NeuroML time course (``Piecewise((0, Eq(alpha + beta, 0)), ...)``) into ``zoo``."""
    return dag_xreplace(sympy.sympify(expr), mapping)


def _check(mech: Mechanism, binding: Binding, pools: dict[str, int]) -> None:
    if mech.kind != "channel":
        raise UnsupportedError(f"sensitivities through the {mech.kind} {mech.name} in the "
                               "NEURON backend (companions exist for channels and pools)")
    if binding.erev != "fixed" or binding.vshift:
        raise UnsupportedError(f"sensitivities of {mech.name} placed with a "
                               f"{'vShift' if binding.vshift else binding.erev} binding in "
                               "the NEURON backend")
    reads = set(mech.reads) - {"v", "temperature"} - set(binding.concentrations)
    if reads:
        raise UnsupportedError(f"sensitivities of {mech.name} in the NEURON backend: it reads "
                               f"{sorted(reads)}")
    if mech.events:
        raise UnsupportedError(f"sensitivities of {mech.name} (events) in the NEURON backend")
    for c in mech.currents:
        used = {s.name for s in c.expr.free_symbols} & set(binding.concentrations)
        if used:
            raise UnsupportedError(f"sensitivities of {mech.name} in the NEURON backend: its "
                                   f"current reads {sorted(used)}")
