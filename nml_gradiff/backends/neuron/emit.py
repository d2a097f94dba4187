"""IR Mechanism -> NMODL text (one .mod file per mechanism).

:func:`emit` is the entry point; :class:`Binding` says how a mechanism's LEMS requirements meet
NEURON where it is placed; :func:`neuron_name` turns a mechanism name into a NEURON name.
``docs/neuron.md`` describes the output; in short:

* **channel**: a density mechanism (``SUFFIX``) writing ``i<ion>`` (``USEION``) or a
  ``NONSPECIFIC_CURRENT``, with RANGE PARAMETERs ``gmax`` (S/cm2) and ``erev`` (mV) of its own,
  so two channels of one ion with different reversal potentials never share NEURON's ``e<ion>``.
  Gate ODEs stay in closed form ``q' = (inf - q)/tau`` so ``METHOD cnexp`` integrates them
  exactly for a step with frozen v; kinetic schemes become a KINETIC block (``sparse``).
* **concentration**: a density mechanism that reads ``i<ion>`` and the segment ``area`` and
  whose concentration state *is* NEURON's ``<ion>i``.
* **cell** (point cells), **input**, **synapse**: POINT_PROCESSes.  A point cell's membrane
  potential is the ``v`` of the (dummy) section it sits on: the mechanism injects
  ``i = -Csec*dv/dt`` (nA) and the section's capacitance ``cm*area`` must equal ``Csec`` (nF,
  by default the cell's capacitance), so NEURON integrates v like any other membrane and
  synapses on the section see and drive the same v.  LEMS OnConditions are checked once per
  time step, after the state update, by a self-event every ``dt`` (``net_send(dt, 1)``), because
  only NET_RECEIVE may assign v or emit spikes (``net_event``).  Exception: an input whose
  conditions depend on the time alone (pulse, sine, ramp generators, voltage clamps:
  :func:`midstep_input`) tests them in BREAKPOINT, at NEURON's mid-step t, as IClamp does.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import re
from dataclasses import dataclass, field
from typing import Mapping

import sympy

from ... import __version__
from ...errors import UnsupportedError
from ...ir.functions import ExpRelr
from ...ir.cell import EREV_MODES
from ...ir.mechanism import Event, Mechanism, symbol
from ...passes.discretize import discretize, increment, partial
from ...passes.jlems_order import jlems_order
from .mod_lines import render_mod
from .printer import (FUNCTION_DEFINITIONS, Block, NmodlPrinter, cse_assignments, nmodl_number,
                      tidy)

__all__ = ["Binding", "emit", "neuron_name", "DEFAULT_CONCENTRATIONS", "INTEGRATIONS",
           "NEURON_BUILTINS", "RESERVED", "CONDUCTANCE", "ohmic_conductance"]

#: How channel gates and concentration pools are integrated (``emit(..., integration=)``):
#: ``exact``: closed form ``q' = (inf - q)/tau`` with cnexp (exact for a step with frozen v);
#: a mechanism with a right-hand side not linear in its state: the StepMap's update
#: written out (``_Emitter.explicit_step``);
#: ``jnml_neuron``: what the mods of jNeuroML's NEURON export do, to reproduce reference data
#: made with them (docs/neuron.md, "Integration"): forward Euler (``METHOD euler``; their
#: ``q' = rate_q`` with the rate computed in a PROCEDURE makes cnexp a forward-Euler step),
#: and a channel's state-dependent quantities (fopen, g) computed with the gates *before*
#: the update, so the current of a step uses the gates of the step before.
INTEGRATIONS = ("exact", "jnml_neuron")

#: LEMS concentration requirements -> the NEURON ion variable they read, by default.
DEFAULT_CONCENTRATIONS = {"caConc": "cai", "caConcExt": "cao"}


@dataclass(frozen=True)
class Binding:
    """How a mechanism's requirements meet NEURON where it is placed.

    ``ion``: the NEURON ion a channel's current or a pool's concentration belongs to (None: the
    mechanism's own species; ``"ca2"`` for the second pool of a cell2CaPools cell).
    ``concentrations``: LEMS requirement -> NEURON ion concentration (``caConc`` -> ``ca2i`` for a
    channel that reads the second pool).  ``erev``: ``fixed`` (the channel's own RANGE erev),
    ``nernst``, ``ghk`` or ``ghk2`` (computed from the concentrations, as NeuroML's
    channelDensityNernst/GHK/GHK2 do).  ``vshift``: the placement gives a ``vShift``
    (channelDensityVShift); without it a channel's vShift requirement is 0.
    """

    ion: str | None = None
    concentrations: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_CONCENTRATIONS))
    erev: str = "fixed"
    vshift: bool = False

    def __post_init__(self):
        if self.erev not in EREV_MODES:
            raise ValueError(f"erev mode {self.erev!r} is not one of {EREV_MODES}")
        for req, var in self.concentrations.items():
            if not _IDENTIFIER.fullmatch(var) or var[-1] not in "io" or len(var) < 2:
                raise ValueError(f"{req} -> {var!r}: not a NEURON ion concentration "
                                 "(<ion>i or <ion>o)")


# ----------------------------------------------------------------------------- naming

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Mechanism names NEURON (or hoc) already defines: built-in mechanisms and point processes,
#: hoc classes, keywords and functions.  A mechanism of that name is renamed (see
#: :func:`neuron_name`).
NEURON_BUILTINS = frozenset("""
    pas hh fastpas extracellular capacitance morphology na_ion k_ion ca_ion
    IClamp SEClamp VClamp OClamp AlphaSynapse ExpSyn Exp2Syn NetStim IntFire1 IntFire2 IntFire4
    APCount PatternStim PointProcessMark HalfGap nrnunit
    Vector List Graph Section SectionList SectionRef NetCon Random File Matrix CVode Shape
    PlotShape Impedance LinearMechanism Deck Timer StringFunctions Pointer PythonObject
    RangeVarPlot SymChooser ParallelContext ParallelNetManager Glyph ValueFieldEditor
    KSChan KSGate KSState KSTrans MechanismStandard MechanismType SaveState BBSaveState
    if else while for break continue return stop proc func obfunc iterator iterator_statement
    double strdef objref objectvar create access insert uninsert connect setpointer forall forsec
    ifsec print read help local localobj public external new begintemplate endtemplate
    exp log log10 sqrt sin cos tan atan atan2 abs fabs int floor ceil erf erfc exprelr
    t dt celsius secondorder tstop steps_per_ms v_init realtime stoprun finitialize fadvance
    fcurrent fstim fclamp psection topology define_shape pt3dadd xopen load_file
    advance continuerun init run runbutton setdt stdinit step steprun stoppedrun
    tstop_changed set_v_init set_ra lambda_f cvode_active cvode_local screen_update
    """.split())

#: Names a variable inside a mod file must not have: NMODL keywords and NEURON variables,
#: C/C++ keywords and libm names (nocmodl writes C++), and the blocks and functions this
#: emitter writes.  An IR symbol with such a name is renamed ``<name>_lems``.
RESERVED = frozenset("""
    NEURON SUFFIX POINT_PROCESS ARTIFICIAL_CELL USEION READ WRITE VALENCE NONSPECIFIC_CURRENT
    ELECTRODE_CURRENT RANGE GLOBAL POINTER BBCOREPOINTER EXTERNAL THREADSAFE REPRESENTS
    UNITS PARAMETER ASSIGNED STATE INITIAL BREAKPOINT DERIVATIVE KINETIC PROCEDURE FUNCTION
    FUNCTION_TABLE NET_RECEIVE SOLVE METHOD STEADYSTATE CONSERVE COMPARTMENT LONGITUDINAL_DIFFUSION
    LOCAL TABLE DEPEND FROM TO WITH WATCH FOR_NETCONS INDEPENDENT CONSTANT LINEAR NONLINEAR
    SOLVEFOR VERBATIM ENDVERBATIM COMMENT ENDCOMMENT TITLE UNITSON UNITSOFF PROTECT MUTEXLOCK
    MUTEXUNLOCK BEFORE AFTER STEP PLOT VS LAG RESET MATCH SENS PARTIAL DISCRETE PARTIAL
    v t dt celsius area diam i secondorder flag PI FARADAY R DEG e0 net_send net_event net_move
    at_time nrn_pointing state_discontinuity error
    auto break case char const continue default do double else enum extern float for goto if
    int long register return short signed sizeof static struct switch typedef union unsigned
    void volatile while and or not xor bool class new delete this template typename namespace
    try catch throw public private protected virtual friend operator true false nullptr inline
    explicit mutable using export asm std NULL
    exp exp2 expm1 log log10 log1p log2 sqrt cbrt pow fabs abs sin cos tan asin acos atan atan2
    sinh cosh tanh asinh acosh atanh erf erfc gamma lgamma tgamma floor ceil fmod round trunc
    hypot j0 j1 jn y0 y1 yn nan isnan isinf fmin fmax
    rates states states_implicit kin nc_weight exprelr exprelr_prime heaviside power
    """.split())


def neuron_name(name: str) -> str:
    """The NEURON name (SUFFIX or POINT_PROCESS) of mechanism ``name``.

    Characters outside ``[A-Za-z0-9_]`` become ``_``; the result gets the prefix ``nml_`` when
    it starts with a digit or an underscore, collides with a NEURON builtin
    (:data:`NEURON_BUILTINS`: ``hh`` -> ``nml_hh``), ends in ``_ion`` (NEURON's ion
    mechanisms) or is reserved inside a mod file.
    """
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name) or "mechanism"
    if (clean[0].isdigit() or clean[0] == "_" or clean in NEURON_BUILTINS
            or clean in RESERVED or clean.endswith("_ion")):
        clean = "nml_" + clean
    return clean


def _rename(name: str, taken: set[str]) -> str:
    if name not in taken and name not in RESERVED and not name.startswith("_"):
        return name
    base = f"lems{name}" if name.startswith("_") else f"{name}_lems"
    candidates = itertools.chain([base], (f"{base}{k}" for k in itertools.count(2)))
    return next(c for c in candidates if c not in taken and c not in RESERVED)


# ----------------------------------------------------------------------------- units

#: Internal unit symbols (nml_gradiff.ir.units) -> NMODL unit text.
_UNITS = {
    "mV": "mV", "ms": "ms", "per_ms": "/ms", "per_mV": "/mV", "S_per_cm2": "S/cm2",
    "mA_per_cm2": "mA/cm2", "uS": "uS", "nA": "nA", "nF": "nF", "uF_per_cm2": "uF/cm2",
    "um": "um", "um2": "um2", "um3": "um3", "mM": "mM", "degC": "degC", "Mohm": "Mohm",
    "ohm_cm": "ohm cm", "cm_per_s": "cm/s", "uS_per_mV": "uS/mV", "C": "coulomb",
    "C_per_mol": "coulomb/mole", "J_per_K_per_mol": "joule/kelvin/mole", "mol": "mole",
    "mol_per_m_per_A_per_s": "mole/m/ampere/s", "": "1",
}
_SI_TOKENS = {"kg": "kg", "m": "m", "s": "s", "A": "ampere", "K": "kelvin", "mol": "mole",
              "cd": "candela"}


def nmodl_unit(unit: str) -> str | None:
    """NMODL text for an internal unit symbol, or None when NEURON would not know it."""
    if unit in _UNITS:
        return _UNITS[unit]
    num, *dens = unit.split("_per_")  # SI symbols built from exponents: kg_m2_per_s3_per_A
    try:
        parts = [" ".join(_si_token(t) for t in num.split("_"))]
        parts += ["/" + " ".join(_si_token(t) for t in d.split("_")) for d in dens]
    except KeyError:
        return None
    return "".join(parts)


def _si_token(token: str) -> str:
    m = re.fullmatch(r"([A-Za-z]+)(\d*)", token)
    if m is None:
        raise KeyError(token)
    return _SI_TOKENS[m.group(1)] + m.group(2)


# ----------------------------------------------------------------------------- the mod file


@dataclass
class Var:
    """One declaration line of PARAMETER / ASSIGNED / STATE."""

    name: str
    unit: str = ""
    comment: str = ""
    value: str | None = None   # PARAMETERs only

    @property
    def decl(self) -> str:
        text = self.name if self.value is None else f"{self.name} = {self.value}"
        unit = nmodl_unit(self.unit)
        comment = self.comment
        if unit not in (None, "1"):
            text += f" ({unit})"
        elif unit is None:
            comment = f"[{self.unit}] {comment}".strip()
        return f"{text:<40} : {comment}" if comment else text


@dataclass
class Code:
    """A block of statements: ``KEYWORD name { LOCAL ...; lines }``."""

    keyword: str
    name: str = ""
    comment: str = ""
    locals: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, keyword: str, name: str, block: Block, comment: str = "") -> "Code":
        return cls(keyword, name, comment, list(block.locals), list(block.lines))


@dataclass
class ModFile:
    """Everything the templates lay out."""

    name: str
    title: str
    header: list[str]
    neuron: list[str]
    parameters: list[Var]
    assigned: list[Var]
    states: list[Var]
    initial: Code
    breakpoint: Code
    blocks: list[Code]
    net_receive: Code | None
    functions: list[str]
    template: str


# ----------------------------------------------------------------------------- emit


def emit(mech: Mechanism, *, binding: Binding | None = None,
         command: str | None = None, integration: str = "exact") -> tuple[str, str]:
    """``(neuron_name, mod_text)`` for ``mech``.  Same input, same bytes.

    ``integration`` is one of :data:`INTEGRATIONS` (it changes channels, concentration
    pools and point cells without a section v only; see ``forward_euler``).

    Raises :class:`~nml_gradiff.errors.UnsupportedError` for a construct the NEURON backend
    cannot express yet (the message names it).
    """
    kinds = {"channel": _Channel, "concentration": _Pool, "cell": _PointCell,
             "input": _Input, "synapse": _Synapse}
    if mech.kind not in kinds:
        raise UnsupportedError(f"{mech.kind} mechanism {mech.name} ({mech.component_type}) "
                               "in the NEURON backend")
    if integration not in INTEGRATIONS:
        raise ValueError(f"integration {integration!r} is not one of {INTEGRATIONS}")
    emitter = kinds[mech.kind](mech, binding or Binding())
    emitter.integration = integration
    mod = emitter.build(command)
    return mod.name, _render(mod)


def _render(mod: ModFile) -> str:
    return render_mod(mod.template, m=mod)


class _Emitter:
    """Mechanism -> ModFile.  Subclasses per kind override the hooks at the top."""

    template = "density.mod.j2"
    keyword = "SUFFIX"

    def __init__(self, mech: Mechanism, binding: Binding):
        self.mech = dataclasses.replace(mech, derived=_canonical_order(mech.derived))
        self.binding = binding
        self.name = neuron_name(mech.name) + self.binding_suffix()
        self.printer = NmodlPrinter()
        self.neuron_vars: dict[str, Var] = {}      # NEURON quantities this mod uses
        self.ions: dict[str, dict[str, set]] = {}  # ion -> {"read": {...}, "write": {...}}
        self.extra_params: list[Var] = []          # PARAMETERs that are not IR parameters
        self.bridges: list[tuple[str, sympy.Expr, str, str]] = []  # (name, expr, unit, comment)
        self.bound: dict[str, str] = {}            # IR state -> the NEURON variable it is
        self.subs: dict[sympy.Symbol, sympy.Expr] = {}
        self.names: dict[str, str] = {}            # IR name -> mod name
        self.taken: set[str] = set()
        self.method = "cnexp"                      # of the DERIVATIVE block, if any
        self.integration = "exact"                 # see INTEGRATIONS; set by emit()

    # -------------------------------------------------------------- hooks per kind
    def read(self, name: str) -> sympy.Expr:
        """The NMODL expression that a LEMS requirement ``name`` reads."""
        if name == "v":
            return self.neuron("v", "mV", "membrane potential")
        if name == "t":
            return symbol("t")
        if name == "temperature":
            return self.neuron("celsius", "degC", "LEMS temperature")
        raise UnsupportedError(f"the requirement {name} of {self.mech.kind} {self.mech.name} "
                               "in the NEURON backend")

    def bind_states(self) -> None:
        """Fill :attr:`bound` for states that are NEURON variables."""

    def neuron_block(self) -> list[str]:
        """Extra NEURON block lines (current declarations)."""
        return []

    def extra_assigned(self) -> list[Var]:
        return []

    def events(self, block: Block) -> None:
        """LEMS OnConditions in BREAKPOINT; only mechanisms without a current may have them
        (see :class:`_Pool`)."""
        if self.condition_events():
            raise UnsupportedError(f"events (OnCondition) in {self.mech.kind} "
                                   f"{self.mech.name} in the NEURON backend")

    def current(self, block: Block) -> None:
        """The end of BREAKPOINT: derived quantities that depend on states, currents."""
        if not self.lagged():
            # rates() first: a state-dependent quantity may use one that changes with v
            # (a point cell's leak current); computed after, it would be a call stale, and
            # NEURON's di/dv (BREAKPOINT at v + 0.001, then at v) would be garbage.
            self.call_rates(block, [self.mech.derived[n].expr for n in self.state_dep])
            self.state_dependent(block, whole_powers=True)

    def initial_extra(self, block: Block) -> None:
        pass

    def net_receive(self) -> Code | None:
        if self.port_events():
            raise UnsupportedError(f"event ports in the density mechanism {self.mech.name}")
        return None

    def binding_suffix(self) -> str:
        """Name suffix for a non-default binding, so one channel placed two ways in a model
        gives two mechanisms: ``_<ion>`` (another ion), ``_<ion variable>`` (a concentration
        read from elsewhere), ``_vshift``, ``_nernst``/``_ghk``/``_ghk2``."""
        b, m = self.binding, self.mech
        parts = []
        own_ion = m.ion or m.texts.get("ion") or "non_specific"
        if b.ion not in (None, own_ion):
            parts.append(b.ion)
        parts += sorted(var for req, var in b.concentrations.items()
                        if req in m.reads and DEFAULT_CONCENTRATIONS.get(req) != var)
        if b.vshift and "vShift" in m.reads:
            parts.append("vshift")
        if b.erev != "fixed":
            parts.append(b.erev)
        return "".join("_" + p for p in parts)

    # -------------------------------------------------------------- helpers
    def neuron(self, name: str, unit: str, comment: str) -> sympy.Symbol:
        self.neuron_vars.setdefault(name, Var(name, unit, comment))
        return symbol(name)

    def ion_variable(self, ion: str, kind: str, mode: str, comment: str) -> sympy.Symbol:
        """NEURON's ``<ion>i``, ``<ion>o`` (kind "i"/"o") or ``i<ion>`` (kind "current")."""
        var = f"i{ion}" if kind == "current" else f"{ion}{kind}"
        self.ions.setdefault(ion, {"read": set(), "write": set()})[mode].add(var)
        return self.neuron(var, "mA_per_cm2" if kind == "current" else "mM", comment)

    def concentration(self, requirement: str, default: str) -> sympy.Symbol:
        var = self.binding.concentrations.get(requirement, default)
        return self.ion_variable(var[:-1], var[-1], "read", f"LEMS {requirement}")

    def condition_events(self) -> list[Event]:
        return [e for e in self.mech.events if e.condition is not None]

    def port_events(self) -> list[Event]:
        return [e for e in self.mech.events if e.condition is None and (e.assign or e.emits)]

    def kinetic_states(self) -> set[str]:
        return {s for ks in self.mech.kinetic for s in ks.states}

    def ode_states(self) -> list[str]:
        """States integrated as ODEs by this mechanism (not the section's v)."""
        return [n for n, s in self.mech.states.items() if s.rhs is not None
                and n not in self.kinetic_states() and self.bound.get(n) != "v"]

    def integrated(self) -> set[str]:
        return set(self.ode_states()) | self.kinetic_states()

    def tr(self, expr) -> sympy.Expr:
        """An IR expression in mod-file names, tidied."""
        return tidy(_integral_floats(sympy.sympify(expr).xreplace(self.subs)))

    def inline(self, expr) -> sympy.Expr:
        """``expr`` with state-dependent derived quantities replaced by their definitions, so
        nocmodl sees how a right-hand side depends on the states (cnexp needs that)."""
        expr = sympy.sympify(expr)
        subs = {symbol(n): self.mech.derived[n].expr for n in self.state_dep}
        for _ in range(len(subs) + 1):
            if not expr.free_symbols & set(subs):
                break
            expr = expr.xreplace(subs)
        return expr

    def needs_rates(self, exprs) -> bool:
        """Whether ``exprs`` (IR) use a ``rates()`` quantity that changes during a run."""
        return any(self.inline(e).free_symbols & self.volatile for e in exprs)

    def new_block(self) -> Block:
        return Block(self.printer, self.taken)

    def assign_all(self, block: Block, assignments) -> None:
        if self.integration == "jnml_neuron":
            # reproduce jNeuroML's arithmetic, not only its integrator: each quantity as the
            # model writes it.  Shared subexpressions change the rounding (alpha*(1/(alpha +
            # beta)) is 1 ulp below 1.0 where alpha/(alpha + beta) is 1.0), and a forward-Euler
            # gate past its stability limit (dt*(alpha + beta) > 2) grows that ulp into a
            # spike (Pospischil's Na test `three`, docs/omv-neuron.md)
            for name, expr in assignments:
                block.assign(name, expr)
            return
        for name, expr, temporary in cse_assignments(assignments, self.taken, self.printer):
            if temporary:
                block.locals.append(name)
            block.assign(name, expr)

    def state_dependent(self, block: Block, only: set[str] | None = None,
                        whole_powers: bool = False) -> None:
        """Assign the derived quantities that depend on states (those in ``only``);
        ``whole_powers``: with :meth:`whole_powers` (BREAKPOINT)."""
        names = [n for n in self.mech.derived if n in self.state_dep
                 and (only is None or n in only)]
        exprs = [self.mech.derived[n].expr for n in names]
        if whole_powers:
            exprs = [self.whole_powers(e) for e in exprs]
        self.assign_all(block, [(self.names[n], self.tr(e)) for n, e in zip(names, exprs)])

    def whole_powers(self, expr) -> sympy.Expr:
        """``q^n``, with ``n`` a parameter whose model value ``k`` is 1 to 4 (a gate's
        ``instances``), as ``if (n == k) {q*...*q} else {q^n}``: the same value, without a
        ``pow`` call for the model as written.  BREAKPOINT runs twice per time step (NEURON's
        di/dv), so a gate power there is two ``pow`` calls per gate and compartment."""
        params = self.mech.parameters

        def whole(e):
            return isinstance(e, sympy.Pow) and e.exp.is_Symbol and e.exp.name in params \
                and float(params[e.exp.name].value) in (1.0, 2.0, 3.0, 4.0)

        def specialise(e):
            k = int(float(params[e.exp.name].value))
            return sympy.Piecewise((e.base ** k, sympy.Eq(e.exp, k)), (e, True))
        return sympy.sympify(expr).replace(whole, specialise)

    def call_rates(self, block: Block, exprs) -> None:
        """``rates()`` in ``block`` if ``exprs`` need it and it was not called yet there."""
        call = "    " * block.level + "rates()"
        if self.needs_rates(exprs) and call not in block.lines:
            block.line("rates()")

    # -------------------------------------------------------------- names and analysis
    def bind(self) -> None:
        for r in sorted(self.mech.reads):
            self.subs[symbol(r)] = self.read(r)
        self.bind_states()
        extra = {p.name for p in self.extra_params} | {b[0] for b in self.bridges}
        extra |= {v.name for v in self.extra_assigned()}
        self.taken = set(RESERVED) | set(self.neuron_vars) | extra | set(FUNCTION_DEFINITIONS)
        m = self.mech
        for n in [*m.parameters, *m.placement, *m.states, *m.derived]:
            new = self.bound.get(n) or _rename(n, self.taken)
            self.names[n] = new
            self.taken.add(new)
            self.subs.setdefault(symbol(n), symbol(new))

    def analyse(self) -> None:
        """Split the derived quantities: those that depend (transitively) on a state of this
        mechanism are computed after the states change, the others in ``rates()``; of these,
        the *volatile* ones change during a run (they read v, t, a concentration, ...)."""
        owned = {n for n in self.mech.states if self.bound.get(n) != "v"}
        # celsius is constant during a run (NEURON's convention): INITIAL's rates() has it.
        reads = (set(self.mech.reads) - {"temperature"}) | {b[0] for b in self.bridges}
        self.state_dep: set[str] = set()
        volatile: set[str] = set(reads)
        for n, d in self.mech.derived.items():
            used = {s.name for s in d.expr.free_symbols}
            if used & (owned | self.state_dep):
                self.state_dep.add(n)
            elif used & volatile:
                volatile.add(n)
        self.rates = [n for n in self.mech.derived if n not in self.state_dep]
        self.volatile = {symbol(n) for n in volatile if n in self.mech.derived
                         or n in {b[0] for b in self.bridges}}

    # -------------------------------------------------------------- the file
    def build(self, command: str | None) -> ModFile:
        self.bind()
        self.analyse()
        derivatives = self.derivatives()
        blocks = [b for b in [*derivatives, self.kinetic(), self.rates_procedure()] if b]
        initial = self.initial()
        breakpoint = self.breakpoint([b.name for b in derivatives])
        net_receive = self.net_receive()
        return ModFile(
            name=self.name, title=self.title(), header=self.header(command),
            neuron=self.neuron_lines(), parameters=self.parameters(), assigned=self.assigned(),
            states=self.state_vars(), initial=initial, breakpoint=breakpoint, blocks=blocks,
            net_receive=net_receive,
            functions=[FUNCTION_DEFINITIONS[f] for f in sorted(self.printer.used)],
            template=self.template)

    def title(self) -> str:
        m = self.mech
        return f"{self.name}: {m.kind} {m.name} ({m.component_type}), from NeuroML/LEMS"

    def header(self, command: str | None) -> list[str]:
        m = self.mech
        return [f"NEURON mechanism {self.name} for the {m.kind} {m.name} "
                f"(LEMS ComponentType {m.component_type})",
                f"source: {m.source or '(not from a file)'}",
                f"generated by nml-gradiff {__version__}",
                f"command: {command or 'nml_gradiff.backends.neuron.emit.emit()'}",
                "Do not edit: regenerate it from the source model (docs/neuron.md)."]

    def neuron_lines(self) -> list[str]:
        lines = [f"{self.keyword} {self.name}"]
        for ion, rw in sorted(self.ions.items()):
            text = f"USEION {ion}"
            if rw["read"]:
                text += " READ " + ", ".join(sorted(rw["read"]))
            if rw["write"]:
                text += " WRITE " + ", ".join(sorted(rw["write"]))
            if ion not in ("ca", "na", "k"):
                text += f" VALENCE {_valence(ion)}"
            lines.append(text)
        lines += self.neuron_block()
        return lines + _wrapped("RANGE", self.range_names())

    def range_names(self) -> list[str]:
        m = self.mech
        names = [self.names[n] for n in [*m.parameters, *m.placement, *m.derived]]
        names += [p.name for p in self.extra_params] + [b[0] for b in self.bridges]
        names += [self.names[n] for n in m.states if n not in self.bound
                  and n not in self.integrated()]
        names += [v.name for v in self.extra_assigned()]
        return list(dict.fromkeys(names))

    def parameters(self) -> list[Var]:
        m = self.mech
        params = [*m.parameters.items(), *m.placement.items()]
        return [Var(self.names[n], p.unit, p.path or "set where it is placed",
                    nmodl_number(p.value)) for n, p in params] + self.extra_params

    def assigned(self) -> list[Var]:
        m = self.mech
        states = {self.names[n] for n in self.integrated()}
        out = [self.neuron_vars[n] for n in sorted(self.neuron_vars) if n not in states]
        out += [Var(name, unit, comment) for name, _, unit, comment in self.bridges]
        out += [Var(self.names[n], d.unit, "derived") for n, d in m.derived.items()]
        out += [Var(self.names[n], s.unit, "changes at events only")
                for n, s in m.states.items() if n not in self.integrated() and n not in self.bound]
        return out + self.extra_assigned()

    def state_vars(self) -> list[Var]:
        return [Var(self.names[n], s.unit, "") for n, s in self.mech.states.items()
                if n in self.integrated()]

    # -------------------------------------------------------------- blocks
    def rates_procedure(self) -> Code | None:
        if not self.rates and not self.bridges:
            return None
        block = self.new_block()
        assignments = [(name, self.tr(expr)) for name, expr, _, _ in self.bridges]
        assignments += [(self.names[n], self.tr(self.mech.derived[n].expr)) for n in self.rates]
        self.assign_all(block, assignments)
        return Code.of("PROCEDURE", "rates()", block,
                       "derived quantities that do not depend on this mechanism's states")

    def derivatives(self) -> list[Code]:
        """One block for the ODE states: DERIVATIVE with cnexp when every right-hand side is
        linear in its state, else the StepMap's step written out (:meth:`explicit_step`)."""
        states = self.ode_states()
        if not states:
            return []
        if self.forward_euler():
            return [self.derivative("states", "euler", states,
                                    "euler: forward Euler, as jNeuroML's NEURON export "
                                    "(integration jnml_neuron, not exact)")]
        nonlinear = [n for n in states if not self.is_linear(n)]
        if not nonlinear:
            return [self.derivative("states", "cnexp", states,
                                    "cnexp: right-hand sides linear in their states, so a step "
                                    "with v frozen is exact")]
        if self.integration == "exact":
            return [self.explicit_step("states", states)]
        return [self.derivative("states", "derivimplicit", states,  # jnml_neuron, as before
                                "derivimplicit, not cnexp: the right-hand side of "
                                + ", ".join(self.names[n] for n in nonlinear)
                                + " is not linear in its state")]

    def explicit_step(self, name: str, states: list[str]) -> Code:
        """A PROCEDURE (``SOLVE states`` without METHOD: called once per fixed step, in
        nrn_state) doing passes/discretize.py's simultaneous update: exponential Euler for a
        right-hand side linear in its state, forward Euler for the others, all from the
        values before the step.  Not derivimplicit, which iterates backward Euler and is not
        the map the JAX backend steps and the sensitivities differentiate; not cnexp, which
        nocmodl turns into derivimplicit for the whole block (docs/neuron.md)."""
        schemes = discretize(self.mech).schemes
        block = self.new_block()
        self.method = None
        rhs = {n: self.inline(self.mech.states[n].rhs) for n in states}
        self.call_rates(block, list(rhs.values()))
        updates = []
        for n in states:
            f = rhs[n]
            b = -partial(f, symbol(n)) if schemes[n] == "exponential_euler" else None
            updates.append((block.local("d" + self.names[n]), self.tr(increment(f, b))))
        self.assign_all(block, updates)
        for n, (tmp, _) in zip(states, updates):
            block.assign(self.names[n], symbol(self.names[n]) + symbol(tmp))
        euler = [self.names[n] for n in states if schemes[n] != "exponential_euler"]
        which = (f"x += dt*f (forward Euler) for {', '.join(euler)}, not linear in their "
                 "states" if euler else "no forward-Euler state")
        return Code.of("PROCEDURE", f"{name}()", block,
                       "one fixed step of passes/discretize.py's StepMap, simultaneous (not "
                       "derivimplicit): x += dt*f/exprelr(-b*dt) for f = a - b*x (exponential "
                       f"Euler, as cnexp); {which}")

    def forward_euler(self) -> bool:
        """Integration ``jnml_neuron`` on a channel or pool (jNeuroML's ``q' = rate_q``)."""
        return self.integration == "jnml_neuron" and self.mech.kind in ("channel",
                                                                        "concentration")

    def lagged(self) -> bool:
        """Integration ``jnml_neuron`` on a gated channel: jNeuroML's mods compute a gate's
        ``fcond = q^n`` in the rates PROCEDURE, which runs before the update in the
        DERIVATIVE block and not in BREAKPOINT, so the current uses the gates of the step
        before (and, at the first step, the states before INITIAL set them: 0)."""
        return (self.forward_euler() and self.mech.kind == "channel"
                and not self.mech.kinetic and bool(self.ode_states()))

    def is_linear(self, name: str) -> bool:
        rhs, q = self.inline(self.mech.states[name].rhs), symbol(name)
        if any(q in pw.free_symbols for pw in rhs.atoms(sympy.Piecewise)):
            return False  # lifted into a temporary, the dependence is hidden from nocmodl
        slope = sympy.diff(rhs, q)
        return q not in slope.free_symbols

    def derivative(self, name: str, method: str, states: list[str], comment: str) -> Code:
        block = Block(self.printer, self.taken, caret=False)
        self.method = method
        rhs = {n: self.inline(self.mech.states[n].rhs) for n in states}
        lagged = [self.mech.derived[n].expr for n in self.state_dep] if self.lagged() else []
        self.call_rates(block, [*rhs.values(), *lagged, *self.registers().values()])
        if lagged:
            block.comment("state-dependent quantities from the gates before the update "
                          "(jNeuroML's one-step lag)")
            self.state_dependent(block)
        for n in states:
            block.assign(f"{self.names[n]}'", self.tr(rhs[n]))
        self.shift_registers(block)
        return Code.of("DERIVATIVE", name, block, comment)

    def registers(self) -> dict[str, sympy.Expr]:
        """States kept for jLEMS's update order (State.each_step), in IR names."""
        return {n: s.each_step for n, s in self.mech.states.items() if s.each_step is not None}

    def shift_registers(self, block: Block) -> None:
        """The registers take this step's values (computed before the update, all from the
        old registers), for the next step to read (passes/jlems_order.py)."""
        if not self.registers():
            return
        block.comment("jLEMS's update order: this step's values, for the next step")
        staged = []
        for n, e in self.registers().items():
            tmp = block.temp("held")
            block.assign(tmp, self.tr(self.inline(e)))
            staged.append((self.names[n], tmp))
        for name, tmp in staged:
            block.assign(name, symbol(tmp))

    def kinetic(self) -> Code | None:
        if not self.mech.kinetic:
            return None
        block = self.new_block()
        edges = [e for ks in self.mech.kinetic for t in ks.transitions
                 for e in (t.forward, t.reverse)]
        self.call_rates(block, edges)
        for ks in self.mech.kinetic:
            for t in ks.transitions:
                f = block.expr(self.tr(self.inline(t.forward)))
                r = block.expr(self.tr(self.inline(t.reverse)))
                block.line(f"~ {self.names[t.source]} <-> {self.names[t.target]} ({f}, {r})")
            block.line("CONSERVE " + " + ".join(self.names[s] for s in ks.states) + " = 1")
        return Code.of("KINETIC", "kin", block, "kinetic schemes (occupancies sum to one)")

    def initial(self) -> Code:
        block = self.new_block()
        m = self.mech
        self.initial_extra(block)
        if self.rates or self.bridges:
            block.line("rates()")
        if self.lagged():
            block.comment("as jNeuroML: state-dependent quantities before the states are set "
                          "(NEURON's states are 0 here)")
            self.state_dependent(block)
        inits = {n: self.inline(self.init_expr(s.init)) for n, s in m.states.items()
                 if s.init is not None and self.bound.get(n) != "v"}
        for n in _init_order(inits):
            block.assign(self.names[n], self.tr(inits[n]))
        if any(m.states[s].init is None for s in self.kinetic_states()):
            block.comment("kinetic scheme occupancies start in their steady state")
            block.line("SOLVE kin STEADYSTATE sparse")
        missing = [n for n, s in m.states.items() if s.init is None
                   and n not in self.kinetic_states()]
        if missing:
            raise UnsupportedError("states without an initial value outside a kinetic scheme "
                                   f"({', '.join(missing)}) in the NEURON backend")
        self.start_events(block)
        return Code.of("INITIAL", "", block)

    def init_expr(self, expr):
        return expr

    def start_events(self, block: Block) -> None:
        pass

    def breakpoint(self, derivatives: list[str]) -> Code:
        block = self.new_block()
        if self.mech.kinetic:
            block.line("SOLVE kin METHOD sparse")
        for name in derivatives:
            method = f" METHOD {self.method}" if self.method else ""  # None: a PROCEDURE
            block.line(f"SOLVE {name.removesuffix('()')}{method}")
        self.events(block)
        self.current(block)
        return Code.of("BREAKPOINT", "", block)

    def event_statements(self, block: Block, events: list[Event], subs=None) -> None:
        """LEMS event handlers in order; each one's assignments are simultaneous."""
        for ev in events:
            if ev.condition is None:
                self.event_body(block, ev, subs or {})
            else:
                with block.if_(self.tr(ev.condition)):
                    self.event_body(block, ev, subs or {})

    def event_body(self, block: Block, ev: Event, subs) -> None:
        targets = [(self.target(n), self.tr(sympy.sympify(e).xreplace(subs)))
                   for n, e in ev.assign.items()]
        assigned = {symbol(t) for t, _ in targets}
        if len(targets) > 1 and any(e.free_symbols & assigned for _, e in targets):
            staged = []
            for t, e in targets:  # every right-hand side sees the values before the event
                tmp = block.temp("new")
                block.assign(tmp, e)
                staged.append((t, symbol(tmp)))
            targets = staged
        for t, e in targets:
            block.assign(t, e)
        if ev.emits:
            block.line("net_event(t)")

    def target(self, name: str) -> str:
        if name not in self.mech.states:
            raise UnsupportedError(f"an event assigns {name}, which is not a state variable")
        return self.names[name]


def _valence(ion: str) -> int:
    """The VALENCE of an ion NEURON does not define (only na, k and ca are built in).
    NEURON refuses a library that uses an ion without a charge when it loads it at start-up
    (``./x86_64`` in the working directory).  NeuroML gives none: our channels have their own
    erev and never read NEURON's e<ion>, so the charge matters only to NEURON's bookkeeping;
    NeuroML's second calcium pools (ca2) carry calcium, chloride is -1, others 1 (as
    jNeuroML's export assumes)."""
    if ion.startswith("ca"):
        return 2
    return -1 if ion == "cl" else 1


def _canonical_order(derived: dict) -> dict:
    """Derived quantities in an evaluation order that depends on their definitions only:
    each after those it uses, ties by name.  (The IR's order is an evaluation order too, but
    ingest builds it from sets, so it changes with Python's hash seed: same input, other
    bytes, and a build cache that never hits.)"""
    deps = {n: {s.name for s in d.expr.free_symbols if s.name in derived and s.name != n}
            for n, d in derived.items()}
    users: dict[str, list[str]] = {n: [] for n in derived}
    for n, used in deps.items():
        for u in used:
            users[u].append(n)
    ready = [n for n, used in deps.items() if not used]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for user in users[n]:
            deps[user].discard(n)
            if not deps[user]:
                heapq.heappush(ready, user)
    if len(order) != len(derived):   # a cycle: ingest refuses those, keep its order
        return dict(derived)
    return {n: derived[n] for n in order}


def _wrapped(keyword: str, names: list[str], width: int = 88) -> list[str]:
    lines: list[str] = []
    for name in names:
        if lines and len(lines[-1]) + len(name) + 2 <= width:
            lines[-1] += ", " + name
        else:
            lines.append(f"{keyword} {name}")
    return lines


def _init_order(inits: dict[str, sympy.Expr]) -> list[str]:
    """Initial values in an order where each comes after the states it uses."""
    done: list[str] = []
    pending = dict(inits)
    while pending:
        ready = [n for n, e in pending.items()
                 if not {s.name for s in e.free_symbols} & (set(pending) - {n})]
        if not ready:
            raise UnsupportedError("initial values that depend on each other in a cycle: "
                                   + ", ".join(pending))
        for n in ready:
            done.append(n)
            del pending[n]
    return done


def _integral_floats(expr):
    """Floats with an integral value as Integers: ``1.0*v`` -> ``v`` (the same double)."""
    floats = {f: sympy.Integer(int(float(f))) for f in expr.atoms(sympy.Float)
              if float(f).is_integer() and abs(float(f)) < 2 ** 53}
    return expr.xreplace(floats) if floats else expr


# ----------------------------------------------------------------------------- channels

#: NeuroML's constants in channelDensityNernst/GHK (Cells.xml), "hard coded for Ca only".
_R, _F, _Z = sympy.Float("8.3144621"), sympy.Float("96485.3"), sympy.Integer(2)


class _Channel(_Emitter):
    """A channel: a density mechanism writing ``i<ion>`` or a NONSPECIFIC_CURRENT ``i``."""

    def __init__(self, mech, binding):
        ion = binding.ion or mech.ion or "non_specific"
        self.ion = None if ion == "non_specific" else ion
        if len(mech.currents) != 1:
            raise UnsupportedError(f"channel {mech.name} with {len(mech.currents)} currents")
        if binding.erev != "fixed":
            if self.ion is None:
                raise UnsupportedError(f"a {binding.erev} reversal potential for the "
                                       f"non-specific channel {mech.name}")
            mech = _placement_for(mech, binding.erev)
        super().__init__(mech, binding)

    def read(self, name):
        if name in self.binding.concentrations:
            return self.concentration(name, "")
        if name == "vShift":
            if not self.binding.vshift:
                return sympy.Integer(0)  # placed without a vShift: no shift
            self.extra_params.append(Var("vShift", "mV", "set where it is placed", "0"))
            return symbol("vShift")
        return super().read(name)

    def bind(self):
        if self.ion:
            self.out = self.ion_variable(self.ion, "current", "write", "outward current density")
        else:
            self.out = self.neuron("i", "mA_per_cm2", "outward current density")
        if self.binding.erev != "fixed":
            self.ci = self.concentration("caConc", f"{self.ion}i")
            self.co = self.concentration("caConcExt", f"{self.ion}o")
            self.kelvin = self.read("temperature") + sympy.Rational("273.15")
        if self.binding.erev == "ghk":
            self.extra_params.append(Var("permeability", "cm_per_s", "set where it is placed",
                                         "0"))
        super().bind()

    def neuron_block(self):
        return [] if self.ion else ["NONSPECIFIC_CURRENT i"]

    def extra_assigned(self):
        own = [Var("ichan", "mA_per_cm2", "this channel's outward current density (NEURON's "
                   "i<ion> sums every channel of the ion): recorded as LEMS iDensity")]
        hint = [Var(CONDUCTANCE, "S_per_cm2", "di/dv of the current (NEURON's CONDUCTANCE "
                    "hint)")] if self.ohmic() else []
        if self.binding.erev == "nernst":
            return [Var("erev", "mV", "Nernst potential (channelDensityNernst)"), *own, *hint]
        return (own if self.binding.erev != "fixed" else []) + hint

    def ohmic(self) -> bool:
        """Whether BREAKPOINT gives NEURON the conductance (:func:`ohmic_conductance`).  Not
        under ``jnml_neuron``: that integration reproduces jNeuroML's mods, whose di/dv is
        NEURON's difference quotient."""
        return (self.integration == "exact"
                and ohmic_conductance(self.mech, self.binding.erev) is not None)

    def current(self, block):
        super().current(block)
        expr = self.mech.currents[0].expr
        self.call_rates(block, [expr])
        current = self.tr(self.current_expr(block, expr))
        if self.ohmic():
            block.comment(f"ohmic: di/dv is {CONDUCTANCE} (no second BREAKPOINT at v + 0.001 mV)")
            block.line(f"CONDUCTANCE {CONDUCTANCE}"
                       + (f" USEION {self.ion}" if self.ion else ""))
            block.assign(CONDUCTANCE, sympy.diff(current, symbol("v")))
        if self.binding.erev == "fixed":
            block.assign(self.out.name, current)
        else:  # no fixed erev to compute it from (gmax*fopen*(v - erev)) where it is recorded
            block.assign("ichan", current)
            block.assign(self.out.name, symbol("ichan"))

    def current_expr(self, block: Block, expr):
        """The current, for each way of getting the reversal potential (NeuroML's
        channelDensity, ...Nernst, ...GHK, ...GHK2); zero where those give zero."""
        mode = self.binding.erev
        if mode == "fixed":
            return expr
        fopen, ci, co = symbol(self.mech.exposures["fopen"]), self.ci, self.co
        kelvin = symbol(block.local("kelvin"))
        block.assign(kelvin.name, self.kelvin)
        if mode == "nernst":
            block.comment("channelDensityNernst: erev = R T/(zCa F) log(caConcExt/caConc)")
            block.assign("erev", sympy.Piecewise((_nernst(ci, co, kelvin), co > 0), (0, True)))
        elif mode == "ghk":
            kv = symbol(block.local("zFv_RT"))
            block.comment("channelDensityGHK: zCa F v/(R T), dimensionless")
            block.assign(kv.name, _Z * _F * symbol("v") / (1000 * _R * kelvin))
            expr = _ghk(fopen, ci, co, kv)
        else:
            scale = symbol(block.local("ghk2_scale"))
            block.comment("channelDensityGHK2: 25 T/(2*293.15), in mV")
            block.assign(scale.name, 25 * kelvin / (2 * sympy.Rational("293.15")))
            expr = _ghk2(fopen, ci, co, scale)
        return sympy.Piecewise((expr, co > 0), (0, True))


#: The ASSIGNED that carries an ohmic channel's di/dv (S/cm2) for NEURON's CONDUCTANCE hint.
CONDUCTANCE = "gchan"


def ohmic_conductance(mech: Mechanism, erev: str = "fixed") -> sympy.Expr | None:
    """di/dv of channel ``mech``'s current (IR names) when NEURON may take it as the
    current's conductance, else None (docs/neuron.md, "Conductance hint").

    nocmodl evaluates BREAKPOINT twice per step, at v + 0.001 mV and at v, for the
    difference quotient di/dv, unless BREAKPOINT names the conductance (``CONDUCTANCE g``):
    then once, with ``g`` as di/dv.  That is the same di/dv only for a current linear in v
    whose slope does not change with v during the step: the current must read v only
    directly (no derived quantity on its way reads v, as an instantaneous gate's would),
    be linear in it, and its reversal potential must not depend on v (a fixed erev or
    Nernst's; not GHK or GHK2, whose currents are nonlinear in v)."""
    if erev not in ("fixed", "nernst") or len(mech.currents) != 1:
        return None
    v, expr = symbol("v"), mech.currents[0].expr
    used = derived_closure(mech, {s.name for s in expr.free_symbols})
    if v not in expr.free_symbols or any(v in mech.derived[n].expr.free_symbols
                                         for n in used):
        return None
    slope = sympy.diff(expr, v)
    return None if v in slope.free_symbols else slope


def _placement_for(mech: Mechanism, mode: str) -> Mechanism:
    """The channel with the placement parameters of ``mode``: Nernst computes erev (an
    ASSIGNED), GHK uses a permeability instead of gmax."""
    placement = {n: p for n, p in mech.placement.items()
                 if n != "erev" and not (mode == "ghk" and n == "gmax")}
    return dataclasses.replace(mech, placement=placement)


def _nernst(ci, co, kelvin):
    """channelDensityNernst's erev in mV: (R T/(zCa F)) log(co/ci) with zCa = 2."""
    return 1000 * _R / (_Z * _F) * kelvin * sympy.log(co / ci)


def _ghk(fopen, ci, co, kv):
    """channelDensityGHK's current as NEURON's outward density (mA/cm2), ``kv`` = z F v/(R T).

    NeuroML: iDensity = -fopen P z F K v (ci - co e^(-K v))/(1 - e^(-K v)) (A/m2, inward, SI)
    with K = z F/(R T), and K v/(1 - e^(-K v)) = exprelr(-K v).  P is in cm/s (/100 -> m/s);
    A/m2 is 0.1 mA/cm2; outward is minus inward: i = fopen P z F (...) exprelr(-kv)/1000.
    """
    return fopen * symbol("permeability") * _Z * _F * (ci - co * sympy.exp(-kv)) \
        * ExpRelr(-kv) / 1000


def _ghk2(fopen, ci, co, scale):
    """channelDensityGHK2's current as NEURON's outward density (mA/cm2).

    NeuroML: iDensity = gmax fopen pOpen, pOpen = tmp (1 - (ci/co) e^(V/tmp)) exprelr(V/tmp)
    in mV (V = v/mV, tmp = 25 T/(293.15*2) = ``scale``); S/cm2 x mV = mA/cm2, inward.
    """
    x = symbol("v") / scale
    return -symbol("gmax") * fopen * scale * (1 - ci / co * sympy.exp(x)) * ExpRelr(x)


# ----------------------------------------------------------------------------- pools


class _Pool(_Emitter):
    """A concentration model: its concentration state *is* NEURON's ``<ion>i``."""

    def __init__(self, mech, binding):
        super().__init__(mech, binding)
        self.ion = binding.ion or mech.texts.get("ion") or mech.ion or "ca"

    def read(self, name):
        if name == "surfaceArea":
            return self.neuron("area", "um2", "segment area (LEMS surfaceArea)")
        if name in ("iCa", "iCa2"):
            # LEMS: nA into the cell.  NEURON: i<ion> in mA/cm2, outward; mA/cm2 * um2 =
            # 1e-3 A * 1e-8 = 1e-11 A = 1e-2 nA.
            ica = self.ion_variable(self.ion, "current", "read", f"{self.ion} current, outward")
            area = self.read("surfaceArea")
            self.bridges.append((name, -ica * area / 100, "nA",
                                 f"LEMS {name}: {self.ion} current into the segment"))
            return symbol(name)
        if name in ("initialConcentration", "initialExtConcentration"):
            default = "5e-05" if name == "initialConcentration" else "2.0"  # NEURON's ca
            self.extra_params.append(Var(name, "mM", "set where it is placed (species)",
                                         default))
            return symbol(name)
        return super().read(name)

    def bind_states(self):
        exposed = self.mech.exposures
        inside, outside = exposed.get("concentration"), exposed.get("extConcentration")
        if inside is None:
            raise UnsupportedError(f"a concentration model that exposes no concentration "
                                   f"({self.mech.name})")
        self.bound[inside] = self.ion_variable(self.ion, "i", "write",
                                               "concentration inside").name
        if outside is not None and self.changes(outside):
            self.bound[outside] = self.ion_variable(self.ion, "o", "write",
                                                    "concentration outside").name

    def changes(self, state: str) -> bool:
        return (self.mech.states[state].rhs is not None
                or any(state in e.assign for e in self.mech.events))

    def events(self, block):
        # With no current, NEURON runs all of BREAKPOINT in its state update, after SOLVE:
        # so LEMS OnConditions are checked once per step, after the states change.
        events = self.condition_events()
        if not events:
            return
        block.comment("LEMS OnConditions: once per step, after the state update")
        self.call_rates(block, [e.condition for e in events]
                        + [v for e in events for v in e.assign.values()])
        self.state_dependent(block)
        self.event_statements(block, events)


# ----------------------------------------------------------------------------- point processes


class _PointProcess(_Emitter):
    """A POINT_PROCESS.  LEMS OnConditions run in NET_RECEIVE on a clock: a self-event with
    flag 1 every dt (flag 2 at t = 0), delivered at the start of each step, i.e. after the
    previous step's state update; NetCon events (LEMS event ports) arrive with flag 0.
    (:class:`_Input` moves the conditions of a :func:`midstep_input` to BREAKPOINT.)"""

    template = "point_process.mod.j2"
    keyword = "POINT_PROCESS"

    def events(self, block):
        pass  # in NET_RECEIVE

    def bind(self):
        if self.clock():
            self.neuron("dt", "ms", "time step (the clock's period)")
        super().bind()

    def clock(self) -> bool:
        return bool(self.condition_events())

    def v_init(self):
        return None

    def start_events(self, block):
        if self.clock() or self.v_init() is not None:
            block.comment("NET_RECEIVE with flag 2 at t = 0 (then flag 1 every dt)")
            block.line("net_send(0, 2)")

    def net_receive(self):
        port = self.port_events()
        if not (self.clock() or port or self.v_init() is not None):
            return None
        block = self.new_block()
        flag = symbol("flag")
        if self.v_init() is not None:
            with block.if_(sympy.Eq(flag, 2)):
                block.comment("t = 0: the membrane potential starts at its LEMS initial value")
                block.assign("v", self.tr(self.v_init()))
        if self.clock():
            with block.if_(sympy.Or(sympy.Eq(flag, 1), sympy.Eq(flag, 2))):
                block.comment("once per step, after the state update: LEMS OnConditions")
                self.clock_body(block)
                block.line("net_send(dt, 1)")
        if port:
            with block.if_(sympy.Eq(flag, 0)):
                block.comment("a spike on the LEMS event port; weight: the NetCon's weight")
                self.event_statements(block, port, {symbol("weight"): symbol("nc_weight")})
        return Code.of("NET_RECEIVE", "(nc_weight)", block)

    def clock_body(self, block: Block) -> None:
        events = self.condition_events()
        exprs = [e.condition for e in events] + [v for e in events for v in e.assign.values()]
        self.call_rates(block, exprs)
        used = {s.name for e in exprs for s in sympy.sympify(e).free_symbols}
        self.state_dependent(block, only=self.closure(used))
        self.event_statements(block, events)

    def closure(self, names: set[str]) -> set[str]:
        return derived_closure(self.mech, names)

    def exposed_current(self):
        name = self.mech.exposures.get("i")
        return None if name is None else symbol(name)

    def current_statement(self, block: Block, expr, sign: int) -> None:
        self.call_rates(block, [expr])
        block.assign("i", sign * self.tr(expr))


def derived_closure(mech: Mechanism, names) -> set[str]:
    """The derived quantities of ``mech`` that ``names`` use, directly or not."""
    out, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n in mech.derived and n not in out:
            out.add(n)
            todo += [s.name for s in mech.derived[n].expr.free_symbols]
    return out


def midstep_input(mech: Mechanism) -> bool:
    """Whether the input ``mech`` has its LEMS OnConditions tested in BREAKPOINT, at NEURON's
    mid-step time, instead of in NET_RECEIVE on a self-event every dt (docs/neuron.md, "LEMS
    OnConditions of inputs").  It must be an input (kind "input") whose

    * events are all OnConditions that emit no spike (NET_RECEIVE alone may ``net_event``),
      or event-port handlers that do nothing (the ``in`` port of basePointCurrent),
    * states are all set by events only (no ODE or kinetic scheme: nothing that NEURON's
      state update would have to see after the events),
    * conditions read only ``t`` and parameters (so their truth is a function of the time),
    * assigned values read no state (only ``t``, ``v``, parameters): BREAKPOINT runs twice per
      step (at v + 0.001 and at v, for di/dv), so its events must give the same result each
      time, and a value that read an event-set state (``x = x + 1``) would not.

    Derived quantities count as what they read.  pulseGenerator, sineGenerator,
    rampGenerator, their DL variants, voltageClamp and voltageClampTriple qualify; spike
    generators (ODE clocks, spikes) do not."""
    events = [e for e in mech.events if e.assign or e.emits]   # not the no-op OnEvents
    if mech.kind != "input" or not events or mech.kinetic:
        return False
    if any(e.condition is None or e.emits for e in events):
        return False
    if any(s.rhs is not None for s in mech.states.values()):
        return False

    def reads(expr) -> set[str]:
        direct = {s.name for s in sympy.sympify(expr).free_symbols}
        used = direct | {s.name for n in derived_closure(mech, direct)
                         for s in mech.derived[n].expr.free_symbols}
        return used - set(mech.derived)

    params = set(mech.parameters)
    return all(reads(e.condition) <= params | {"t"}
               and all(reads(v) <= params | {"t", "v"} and n in mech.states
                       for n, v in e.assign.items())
               for e in events)


def dimensionless_input(mech: Mechanism) -> bool:
    """A dimensionless input (pulseGeneratorDL, ...: basePointCurrentDL) exposes ``I``,
    which its target cell adds to dv/dt in mV/ms (izhikevichCell: ``ISyn * MVOLT/MSEC``): as
    an electrode current that is ``I * Cdl`` nA, ``Cdl`` (nF, a RANGE PARAMETER) being the
    capacitance of the target's section (the planner sets it)."""
    name = mech.exposures.get("I")
    return (mech.kind == "input" and "i" not in mech.exposures and name in mech.states
            and mech.states[name].unit in ("", None))


class _Input(_PointProcess):
    """An input: LEMS ``i`` (nA, positive into the cell) is NEURON's ELECTRODE_CURRENT, which
    is positive when depolarizing (as IClamp's ``i``)."""

    current_decl, sign = "ELECTRODE_CURRENT i", 1
    comment = "electrode current (nA): LEMS i, positive into the cell"

    def midstep(self) -> bool:
        return midstep_input(self.mech)

    def clock(self) -> bool:
        return super().clock() and not self.midstep()

    def events(self, block):
        """The OnConditions of a :func:`midstep_input`, in BREAKPOINT: NEURON's fixed step
        evaluates it at mid-step, t + dt/2, as jNeuroML's input mods and IClamp do."""
        if not self.midstep():
            return
        events = self.condition_events()
        block.comment("LEMS OnConditions, in file order, at NEURON's mid-step t (t + dt/2)")
        self.call_rates(block, [e.condition for e in events]
                        + [v for e in events for v in e.assign.values()])
        self.event_statements(block, events)

    def dimensionless(self) -> bool:
        return dimensionless_input(self.mech)

    def bind_states(self):
        if self.dimensionless():
            self.extra_params.append(Var("Cdl", "nF", "capacitance of the target section "
                                         "(dimensionless input)", "1"))

    def exposed_current(self):
        if self.dimensionless():
            return symbol(self.mech.exposures["I"]) * symbol("Cdl")
        return super().exposed_current()

    def neuron_block(self):
        return [self.current_decl] if self.exposed_current() is not None else []

    def extra_assigned(self):
        return [Var("i", "nA", self.comment)] if self.exposed_current() is not None else []

    def current(self, block):
        super().current(block)
        if self.exposed_current() is not None:
            self.current_statement(block, self.exposed_current(), self.sign)


class _Synapse(_Input):
    """A synapse: LEMS ``i`` (nA, into the cell) is the outward NONSPECIFIC_CURRENT ``-i``."""

    current_decl, sign = "NONSPECIFIC_CURRENT i", -1
    comment = "outward current (nA): minus LEMS i"


class _PointCell(_PointProcess):
    """A point cell whose ``v`` is the section's v (see the module docstring)."""

    def has_v(self) -> bool:
        s = self.mech.states.get("v")
        return s is not None and s.unit == "mV"

    def integrates_v(self) -> bool:
        return self.has_v() and self.mech.states["v"].rhs is not None

    def forward_euler(self) -> bool:
        """jnml_neuron: forward Euler for a cell whose states are all this mechanism's (the
        dimensionless fitzHughNagumoCell), as jNeuroML's mods and jLEMS do.  A cell whose v
        is the section's keeps NEURON's implicit v, and so exact gates."""
        return self.integration == "jnml_neuron" and not self.integrates_v()

    def build(self, command):
        self.check_inputs()
        if self.forward_euler():
            # the data jnml_neuron reproduces for such a cell are jLEMS's: its update order
            # too (passes/jlems_order.py; registers shifted in the DERIVATIVE block)
            self.mech = jlems_order(self.mech)
        return super().build(command)

    def read(self, name):
        if name.startswith("synapses_"):
            return sympy.Integer(0)  # synapses are point processes of their own on the section
        return super().read(name)

    def check_inputs(self) -> None:
        """Inputs and synapses reach a point cell through its section's v: refuse a cell
        whose dynamics read them without a v of the section (they would be lost)."""
        if self.integrates_v():
            return
        m = self.mech
        exprs = [s.rhs for s in m.states.values() if s.rhs is not None]
        exprs += [x for e in m.events for x in [e.condition, *e.assign.values()]
                  if x is not None]
        names = {s.name for e in exprs for s in sympy.sympify(e).free_symbols}
        for n in derived_closure(m, names):
            names |= {s.name for s in m.derived[n].expr.free_symbols}
        used = sorted(n for n in names if n.startswith("synapses_"))
        if used:
            raise UnsupportedError(f"inputs into the point cell {m.name}, whose dynamics read "
                                   f"{used[0]} but whose v is not the section's, in the "
                                   "NEURON backend")

    def bind_states(self):
        if self.has_v():
            self.bound["v"] = self.neuron("v", "mV", "membrane potential: the section's").name
        if self.integrates_v():
            self.extra_params.append(Var("Csec", "nF", "must equal the section's cm*area",
                                         nmodl_number(self.capacitance())))

    def capacitance(self) -> float:
        caps = [p.value for p in self.mech.parameters.values() if p.dimension == "capacitance"]
        return caps[0] if len(caps) == 1 else 1.0

    def v_init(self):
        return self.mech.states["v"].init if self.has_v() else None

    def init_expr(self, expr):
        v = self.v_init()
        return expr if v is None else sympy.sympify(expr).xreplace({symbol("v"): v})

    def initial_extra(self, block):
        if self.v_init() is not None:
            block.comment("this mechanism's copy of v at its LEMS initial value (the section's "
                          "v follows at the flag 2 event)")
            block.assign("v", self.tr(self.v_init()))

    def neuron_block(self):
        return ["NONSPECIFIC_CURRENT i"] if self.integrates_v() else []

    def extra_assigned(self):
        if self.integrates_v():
            return [Var("i", "nA", "-Csec*dv/dt: the cell's own membrane current, outward")]
        return []

    def current(self, block):
        super().current(block)
        if self.integrates_v():
            self.current_statement(block, symbol("Csec") * self.mech.states["v"].rhs, -1)
