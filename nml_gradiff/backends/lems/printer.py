"""sympy expressions -> LEMS expression text, and the variables a LEMS Dynamics needs.

LEMS expressions (jLEMS's parser, and jNeuroML's exports that re-parse them) know ``+ - * /``,
``^`` for powers, the functions ``exp log ln sqrt sin cos tan sinh cosh tanh abs ceil floor
H random`` (``abs`` is avoided in what we generate: the NEURON export copies it into NMODL,
which only has ``fabs``) and, in conditions only, ``.gt. .geq. .lt. .leq. .eq. .neq. .and. .or.``.  There is
no ``not`` and no conditional expression: a ``Piecewise`` becomes a
``ConditionalDerivedVariable`` whose ``Case`` conditions are made mutually exclusive
(sympy's Piecewise picks the first true branch, LEMS leaves overlapping cases unspecified)
and free of ``.or.`` (the NEURON export copies it into NMODL, which has only ``||``).

The IR's safe functions (:mod:`nml_gradiff.ir.functions`) have no LEMS counterpart, and
``x/(exp(x) - 1)`` printed as such is ``0/0`` at ``x = 0`` in jLEMS (NaN, which then spreads
through every state).  So each ``ExpRelr(x)`` and ``ExpRelrPrime(x)`` becomes a conditional
variable with a Taylor branch near 0 and an overflow-free closed form elsewhere, the same
split as the numpy references ``exprelr_np`` and ``exprelr_prime_np`` (float64 thresholds).

:func:`lems_variables` turns named expressions into that list of variables, sharing
subexpressions (:func:`~nml_gradiff.passes.discretize.dag_cse`) so that the sensitivity right-hand sides reuse the primal's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from ...errors import UnsupportedError
from ...ir.functions import ExpRelr, ExpRelrPrime, Random, _PRIME_ODD_COEFFS
from ...passes.discretize import dag_cse

__all__ = ["LemsPrinter", "Variable", "lems_variables", "check_name", "print_condition"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Names LEMS gives a meaning of its own inside Dynamics.
RESERVED = frozenset({"t", "exp", "log", "ln", "sqrt", "sin", "cos", "tan", "sinh", "cosh",
                      "tanh", "abs", "ceil", "floor", "H", "random", "pi", "e"})

#: |x| below which ExpRelr uses its Taylor series (float64; see ir/functions.py).
EXPRELR_SERIES = 0.014
#: |x| below which ExpRelrPrime uses its Taylor series, and the number of odd terms.  The
#: closed form loses ~2 eps/|x| to cancellation (4e-15 relative at 0.1, far below the 7
#: digits jLEMS writes); the first omitted term, B_12/11! x^11, is < 1e-19 there.  Fewer
#: terms than ir/functions.py's 0.5 threshold needs keep the line short enough for nocmodl
#: after jNeuroML's NEURON export ("Line too long").
EXPRELR_PRIME_SERIES = 0.1
EXPRELR_PRIME_TERMS = 5


def check_name(name: str) -> str:
    """A model-derived identifier, checked before it is pasted into generated XML."""
    if not _NAME.match(name) or name in RESERVED:
        raise UnsupportedError(f"the name '{name}' cannot be used as a LEMS identifier")
    return name


def _num(x) -> str:
    # repr of a float is the shortest text that reads back to the same double; LEMS
    # (Java's Double.parseDouble) reads 'e' exponents.
    return repr(float(x))


class LemsPrinter(StrPrinter):
    """One LEMS arithmetic expression; ``names`` maps sympy symbol names to LEMS text."""

    def __init__(self, names: dict[str, str] | None = None):
        super().__init__()
        self.names = names or {}

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    def _print_Float(self, expr):
        return _num(expr)

    def _print_Rational(self, expr):
        return _num(expr) if expr.q != 1 else str(expr.p)

    def _print_Integer(self, expr):
        return str(expr.p)

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp == sympy.S.Half:
            return f"sqrt({self._print(base)})"
        if exp == -1:
            return f"1 / {self.parenthesize(base, PRECEDENCE['Mul'] + 1)}"
        b = self.parenthesize(base, PRECEDENCE["Pow"] + 1)
        e = self.parenthesize(exp, PRECEDENCE["Pow"] + 1)
        return f"{b} ^ {e}"

    def _print_exp(self, expr):
        return f"exp({self._print(expr.args[0])})"

    def _print_log(self, expr):
        return f"log({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        # jLEMS: H(x) = 0.5*(signum(x) + 1), i.e. H(0) = 1/2, as the IR's heaviside.
        return f"H({self._print(expr.args[0])})"

    def _print_Infinity(self, expr):
        # Java doubles: 1/0 is +Infinity.  Only reached in guard branches such as
        # 1/tau where tau = 0 (rates that are 0 when both are), never on a normal path.
        return "(1 / 0)"

    def _print_NegativeInfinity(self, expr):
        return "(-1 / 0)"

    _print_ComplexInfinity = _print_Infinity

    def _print_Exp1(self, expr):
        return _num(sympy.E)

    def _print_Pi(self, expr):
        return _num(sympy.pi)

    def _print_Random(self, expr):
        raise UnsupportedError("random(...) in a sensitivity-augmented LEMS model: a random "
                               "draw has no derivative")

    def emptyPrinter(self, expr):
        raise UnsupportedError(f"no LEMS text for {type(expr).__name__} ({expr})")

    def _print_Function(self, expr):
        name = _FUNCTIONS.get(type(expr).__name__)
        if name is None or len(expr.args) != 1:
            raise UnsupportedError(f"no LEMS text for the function {expr.func}")
        return f"{name}({self._print(expr.args[0])})"

    def _print_Piecewise(self, expr):
        raise AssertionError("Piecewise must be lifted into a ConditionalDerivedVariable")



#: sympy function -> LEMS function of one argument (exp, log, abs, H print above).
_FUNCTIONS = {"sin": "sin", "cos": "cos", "tan": "tan", "sinh": "sinh", "cosh": "cosh",
              "tanh": "tanh", "floor": "floor", "ceiling": "ceil"}

_REL = {sympy.StrictGreaterThan: ".gt.", sympy.GreaterThan: ".geq.",
        sympy.StrictLessThan: ".lt.", sympy.LessThan: ".leq.",
        sympy.Equality: ".eq.", sympy.Unequality: ".neq."}
_NEGATED = {sympy.StrictGreaterThan: sympy.LessThan, sympy.GreaterThan: sympy.StrictLessThan,
            sympy.StrictLessThan: sympy.GreaterThan, sympy.LessThan: sympy.StrictGreaterThan,
            sympy.Equality: sympy.Unequality, sympy.Unequality: sympy.Equality}


def _negate(cond):
    """``not cond`` without a ``not`` operator: flip relations, De Morgan for and/or."""
    if cond is sympy.true or cond is sympy.false:
        return sympy.false if cond is sympy.true else sympy.true
    if type(cond) in _NEGATED:
        return _NEGATED[type(cond)](*cond.args, evaluate=False)
    if isinstance(cond, sympy.And):
        return sympy.Or(*(_negate(a) for a in cond.args), evaluate=False)
    if isinstance(cond, sympy.Or):
        return sympy.And(*(_negate(a) for a in cond.args), evaluate=False)
    if isinstance(cond, sympy.Not):
        return cond.args[0]
    raise UnsupportedError(f"no LEMS condition for {cond}")


def print_condition(cond, printer: LemsPrinter) -> str:
    """A LEMS condition (``a .lt. b .and. ...``)."""
    if isinstance(cond, sympy.Not):
        return print_condition(_negate(cond.args[0]), printer)
    if isinstance(cond, (sympy.And, sympy.Or)):
        op = " .and. " if isinstance(cond, sympy.And) else " .or. "
        return op.join(f"({print_condition(a, printer)})" for a in cond.args)
    if type(cond) in _REL:
        lhs, rhs = cond.args
        return f"{printer.doprint(lhs)} {_REL[type(cond)]} {printer.doprint(rhs)}"
    if cond is sympy.true:
        return "0 .eq. 0"
    if cond is sympy.false:
        return "0 .neq. 0"
    raise UnsupportedError(f"no LEMS condition for {cond}")


#: Most conjunctions one Piecewise condition may expand into (a guard, not a tuning knob).
MAX_CONJUNCTIONS = 32


def _disjoint_conjunctions(cond) -> list:
    """``cond`` as mutually exclusive conditions without ``Or`` whose union is ``cond``.

    jNeuroML's NEURON export translates ``.and.`` but copies ``.or.`` verbatim into NMODL,
    which rejects it; so ``a or b`` becomes the two cases ``a`` and ``(not a) and b``, and
    an ``And`` the products of its arguments' parts (still pairwise exclusive)."""
    if isinstance(cond, sympy.Not):
        return _disjoint_conjunctions(_negate(cond.args[0]))
    if isinstance(cond, sympy.Or):
        parts, before = [], []
        for arg in cond.args:
            term = sympy.And(*before, arg, evaluate=False) if before else arg
            parts.extend(_disjoint_conjunctions(term))
            before.append(_negate(arg))
    elif isinstance(cond, sympy.And):
        parts = [()]
        for arg in cond.args:
            parts = [(*p, q) for p in parts for q in _disjoint_conjunctions(arg)]
        parts = [_flat_and(p) for p in parts]
    else:
        return [cond]
    if len(parts) > MAX_CONJUNCTIONS:
        raise UnsupportedError(f"the condition {cond} has more than {MAX_CONJUNCTIONS} "
                               "disjoint parts: too long for a LEMS ConditionalDerivedVariable")
    return parts


def _flat_and(args: tuple):
    """And of ``args``, nested Ands flattened (one ``.and.`` chain when printed)."""
    flat = [b for a in args for b in (a.args if isinstance(a, sympy.And) else (a,))]
    return flat[0] if len(flat) == 1 else sympy.And(*flat, evaluate=False)


# ----------------------------------------------------------------------------- variables

@dataclass
class Variable:
    """A dimensionless Dynamics variable: ``value`` (DerivedVariable) or ``cases``
    (ConditionalDerivedVariable: (condition text or None for the default, value text))."""

    name: str
    value: str | None = None
    cases: list[tuple[str | None, str]] = field(default_factory=list)
    comment: str | None = None


class _Lifter:
    """Replaces Piecewise and the safe functions by new symbols bound to conditional
    variables, bottom-up, sharing identical ones."""

    def __init__(self, printer: LemsPrinter, prefix: str):
        self.printer = printer
        self.prefix = prefix
        self.out: list[Variable] = []
        self.seen: dict[sympy.Basic, sympy.Symbol] = {}
        self.count = 0

    def _fresh(self) -> sympy.Symbol:
        self.count += 1
        return sympy.Symbol(f"{self.prefix}{self.count}", real=True)

    def _atom(self, expr) -> sympy.Expr:
        """``expr`` as a symbol or number (a new derived variable when compound)."""
        if expr.is_Atom:
            return expr
        if expr in self.seen:
            return self.seen[expr]
        sym = self._fresh()
        self.out.append(Variable(sym.name, value=self.printer.doprint(expr)))
        self.seen[expr] = sym
        return sym

    def lift(self, expr):
        if expr.is_Atom:
            return expr
        if isinstance(expr, Random):
            self.printer.doprint(expr)      # raises the refusal
        if isinstance(expr, (ExpRelr, ExpRelrPrime, sympy.Piecewise)):
            if expr in self.seen:
                return self.seen[expr]
            if isinstance(expr, sympy.Piecewise):
                var = self._piecewise(expr)
            else:
                x = self._atom(self.lift(expr.args[0]))
                var = (_exprelr if isinstance(expr, ExpRelr) else _exprelr_prime)(
                    self.printer.doprint(x))
            sym = self._fresh()
            var.name = sym.name
            self.out.append(var)
            self.seen[expr] = sym
            return sym
        args = [self.lift(a) for a in expr.args]
        return expr.func(*args, evaluate=False) if args != list(expr.args) else expr

    def _piecewise(self, expr) -> Variable:
        cases, previous = [], []
        for value, cond in expr.args:
            value_text = self.printer.doprint(self.lift(value))
            cond = self._lift_condition(cond)
            if cond is sympy.true:
                cases.append((None, value_text))
                break
            exclusive = sympy.And(cond, *(_negate(c) for c in previous), evaluate=False) \
                if previous else cond
            cases.extend((print_condition(part, self.printer), value_text)
                         for part in _disjoint_conjunctions(exclusive))
            previous.append(cond)
        else:
            # No default branch: sympy gives NaN there; LEMS needs a value.
            raise UnsupportedError(f"Piecewise without a default branch: {expr}")
        return Variable("", cases=cases)

    def _lift_condition(self, cond):
        if cond is sympy.true or cond is sympy.false:
            return cond
        if isinstance(cond, sympy.Rel):
            return type(cond)(self.lift(cond.lhs), self.lift(cond.rhs), evaluate=False)
        return cond.func(*(self._lift_condition(a) for a in cond.args), evaluate=False)


def _small(x: str, bound: float) -> str:
    # No abs(): jNeuroML's NEURON export copies it into NMODL, which has only fabs.
    return f"{x} .lt. {bound} .and. {x} .gt. -{bound}"


def _exprelr(x: str) -> Variable:
    """x/(exp(x) - 1): series 1 - x/2 + x^2/12 - x^4/720 near 0 (error < 1 ulp there),
    ``x exp(-x)/(1 - exp(-x))`` for x > 0 (no overflow), ``x/(exp(x) - 1)`` for x < 0."""
    series = f"1 + {x} * (-0.5 + {x} * ({_num(1 / 12)} - {x} * {x} * {_num(1 / 720)}))"
    return Variable("", cases=[
        (_small(x, EXPRELR_SERIES), series),
        (f"{x} .geq. {EXPRELR_SERIES}", f"{x} * exp(-{x}) / (1 - exp(-{x}))"),
        (None, f"{x} / (exp({x}) - 1)")],
        comment=f"exprelr({x}) = x/(exp(x) - 1), finite at 0")


def _exprelr_prime(x: str) -> Variable:
    """d/dx exprelr: Taylor series (to x^9) for |x| < 0.1; elsewhere
    ``p(a) = exp(-a) (t - a)/t^2`` with ``a = |x|``, ``t = 1 - exp(-a)``, and
    ``exprelr'(x) = -1 - p(-x)`` for negative x (as exprelr_prime_np)."""
    coeffs = _PRIME_ODD_COEFFS[:EXPRELR_PRIME_TERMS]
    poly = _num(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        poly = f"{_num(c)} + {x} * {x} * ({poly})"

    def p(a: str) -> str:
        t = f"(1 - exp(-{a}))"
        return f"exp(-{a}) * ({t} - {a}) / ({t} * {t})"

    return Variable("", cases=[
        (_small(x, EXPRELR_PRIME_SERIES), f"-0.5 + {x} * ({poly})"),
        (f"{x} .geq. {EXPRELR_PRIME_SERIES}", p(x)),
        (None, f"-1 - {p(f'(-{x})')}")],
        comment=f"d/dx exprelr({x}), finite at 0")


def lems_variables(outputs: list[tuple[str, sympy.Expr]], printer: LemsPrinter,
                   prefix: str = "x") -> tuple[list[Variable], dict[str, str]]:
    """Variables computing ``outputs`` with shared subexpressions, and each output's text.

    Intermediate names are ``<prefix><k>``; the caller makes sure no model name has that
    form.  Order: every variable after the ones it reads (jLEMS sorts them anyway).
    """
    exprs = [sympy.sympify(e) for _, e in outputs]
    # dag_cse, not sympy.cse: it never re-evaluates, so a guarded 1/0 branch stays a guard.
    replacements, reduced = dag_cse(exprs, prefix=f"{prefix}c")
    lifter = _Lifter(printer, f"{prefix}f")
    variables: list[Variable] = []
    splitter = _Splitter(printer, f"{prefix}s", variables)
    conditions: dict[sympy.Symbol, sympy.Basic] = {}
    for sym, expr in replacements:
        expr = expr.xreplace(conditions)
        if isinstance(expr, sympy.logic.boolalg.Boolean):
            # A shared condition: LEMS has no boolean variables, so put it back in place.
            conditions[sym] = expr
            continue
        lifted = lifter.lift(expr)
        variables += lifter.out
        lifter.out = []
        variables.append(Variable(sym.name, value=printer.doprint(splitter.short(lifted))))
    texts = {}
    for (name, _), expr in zip(outputs, reduced):
        lifted = lifter.lift(expr.xreplace(conditions))
        variables += lifter.out
        lifter.out = []
        texts[name] = printer.doprint(splitter.short(lifted))
    return _after_conditionals(variables), texts


#: Longest expression text printed in one piece: nocmodl rejects long lines ("Line too
#: long") in the mods jNeuroML's NEURON export writes, and short lines read better.
MAX_TEXT = 240


class _Splitter:
    """Splits sums and products whose text is longer than MAX_TEXT into named parts."""

    def __init__(self, printer: LemsPrinter, prefix: str, out: list[Variable]):
        self.printer, self.prefix, self.out, self.count = printer, prefix, out, 0

    def short(self, expr):
        if len(self.printer.doprint(expr)) <= MAX_TEXT or not (expr.is_Add or expr.is_Mul):
            return expr
        parts, chunk = [], []
        for arg in (self.short(a) for a in expr.args):
            trial = chunk + [arg]
            if chunk and len(self.printer.doprint(expr.func(*trial, evaluate=False))) > MAX_TEXT:
                parts.append(self._name(expr.func(*chunk, evaluate=False)))
                chunk = [arg]
            else:
                chunk = trial
        parts.append(self._name(expr.func(*chunk, evaluate=False)) if parts else
                     expr.func(*chunk, evaluate=False))
        return expr.func(*parts, evaluate=False)

    def _name(self, expr):
        if expr.is_Atom:
            return expr
        self.count += 1
        sym = sympy.Symbol(f"{self.prefix}{self.count}", real=True)
        self.out.append(Variable(sym.name, value=self.printer.doprint(expr)))
        return sym


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _after_conditionals(variables: list[Variable]) -> list[Variable]:
    """jLEMS checks every DerivedVariable before any ConditionalDerivedVariable (one pass
    each, in file order), so a DerivedVariable reading a conditional one is rejected ("No
    such variable in map").  Every variable that depends on a conditional one therefore
    becomes a conditional one itself: an always-true Case and the same value as default
    (jNeuroML's NEURON export prints a lone default Case as an ``else`` without ``if``)."""
    tainted: set[str] = set()
    for var in variables:
        if var.cases:
            tainted.add(var.name)
        elif tainted.intersection(_WORD.findall(var.value)):
            var.cases, var.value = [(ALWAYS, var.value), (None, var.value)], None
            tainted.add(var.name)
    return variables


#: A condition that always holds (LEMS has no boolean literals).
ALWAYS = "0 .eq. 0"


#: A condition that always holds (LEMS has no boolean literals).
ALWAYS = "0 .eq. 0"


def depends_on_conditional(text: str, variables: list[Variable]) -> bool:
    """Whether expression ``text`` reads a conditional variable of ``variables``."""
    names = {v.name for v in variables if v.cases}
    return bool(names.intersection(_WORD.findall(text)))
