"""sympy expressions -> NMODL expressions and statements.

NMODL is C-like, with differences that shape this printer:

* ``^`` is the power operator (nocmodl turns it into ``pow``); integer exponents print as
  integers (``m^3``), square roots as ``sqrt``.
* There is no ternary operator: a ``Piecewise`` cannot appear inside an expression.
  :class:`Block` lifts every ``Piecewise`` into ``if``/``else`` assignment statements to a
  LOCAL temporary (or straight to the assigned variable when the whole right-hand side is one).
* Only nocmodl's own function list can be called; others (``expm1``, ``log1p``, ``hypot``, ...)
  compile to calls with the wrong arguments.  The safe functions of the IR are printed as calls
  to FUNCTIONs that the mod file defines itself (:data:`FUNCTION_DEFINITIONS`): ``exprelr``
  (NEURON's hoc has a builtin of that name, but NMODL code cannot call it), ``exprelr_prime``,
  ``heaviside`` and ``power``.
* nocmodl turns every ``^`` into ``pow``, which costs several multiplications: a name to a
  whole power 2 to 4 prints as a product (``x*x*x``), and a power with a symbolic exponent
  (``q^instances``) as ``power(q, instances)``, a FUNCTION that multiplies for whole exponents
  up to 4 and calls ``pow`` otherwise.
* Numbers print with full double precision (``repr`` of the float, the shortest string that
  reads back to the same double); never single precision.

``Random`` (LEMS ``random``) is refused with :class:`~nml_gradiff.errors.UnsupportedError`.
"""

from __future__ import annotations

import contextlib
import math

import sympy
from sympy.core.relational import Relational
from sympy.printing.codeprinter import CodePrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from ...errors import UnsupportedError
from ...ir.functions import _PRIME_ODD_COEFFS, _PRIME_SERIES_MAX

__all__ = ["NmodlPrinter", "Block", "nmodl_number", "tidy", "cse_assignments",
           "FUNCTION_DEFINITIONS"]

#: sympy function name -> NMODL function name, for the functions nocmodl knows.
KNOWN_FUNCTIONS = {
    "exp": "exp", "log": "log", "sqrt": "sqrt", "Abs": "fabs",
    "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos", "atan": "atan",
    "atan2": "atan2", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
    "erf": "erf", "erfc": "erfc", "floor": "floor", "ceiling": "ceil",
}

#: Functions a mod file defines for itself when it uses them (name -> NMODL source).
FUNCTION_DEFINITIONS: dict[str, str] = {}

#: Taylor coefficients of exprelr(x) = 1 - x/2 + sum_k B_2k x^2k/(2k)!, k = 1..8: through x^16
#: the series is exact to < 1e-19 for |x| < 1/2 (the next term is 3e-20 there).
_EXPRELR_EVEN_COEFFS = [float(sympy.bernoulli(2 * k) / sympy.factorial(2 * k))
                        for k in range(1, 9)]
_EXPRELR_SERIES_MAX = 0.5


def _horner_x2(coeffs: list[float]) -> str:
    """sum_k coeffs[k] * x2^k in Horner form (NMODL text, ``x2`` = x*x)."""
    body = repr(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        body = f"{repr(c)} + x2*({body})"
    return body


def _exprelr_series() -> str:
    return f"1 - x/2 + x2*({_horner_x2(_EXPRELR_EVEN_COEFFS)})"


FUNCTION_DEFINITIONS["exprelr"] = f"""\
FUNCTION exprelr(x) {{
    : x/(exp(x) - 1), equal to 1 at x = 0 (the removable singularity of HH rates and GHK),
    : with one exp at most: for |x| >= {_EXPRELR_SERIES_MAX} the rounding of exp(x) costs ~1 ulp (the
    : denominator does not cancel), below it a Taylor series (error < 1e-19) replaces the
    : cancelling closed form.  Within 1.3 ulp of the exact value everywhere.
    LOCAL x2
    if (fabs(x) < {_EXPRELR_SERIES_MAX}) {{
        x2 = x*x
        exprelr = {_exprelr_series()}
    }} else if (x > 700) {{
        exprelr = x*exp(-x)
    }} else {{
        exprelr = x/(exp(x) - 1)
    }}
}}
"""

FUNCTION_DEFINITIONS["power"] = """\
FUNCTION power(x, n) {
    : x^n.  Gate powers (instances) are small whole numbers: products for n = 1 to 4 cost
    : far less than pow(), and BREAKPOINT, where they are computed, runs twice per step.
    if (n == 1) {
        power = x
    } else if (n == 2) {
        power = x*x
    } else if (n == 3) {
        power = x*x*x
    } else if (n == 4) {
        power = x*x*x*x
    } else {
        power = x^n
    }
}
"""


def _prime_series() -> str:
    # Horner form of sum_j c_j x^(2j-1), the Taylor series of exprelr' about 0 (see
    # nml_gradiff.ir.functions.exprelr_prime_np, whose coefficients these are).
    return f"-0.5 + x*({_horner_x2(_PRIME_ODD_COEFFS)})"


FUNCTION_DEFINITIONS["exprelr_prime"] = f"""\
FUNCTION exprelr_prime(x) {{
    : d/dx exprelr(x), equal to -1/2 at 0: a Taylor series for |x| < {_PRIME_SERIES_MAX} (the closed form
    : cancels there), else exp(-a)*(s - a)/s^2 with a = |x|, s = 1 - exp(-a), and
    : exprelr'(x) = -1 - exprelr'(-x) for x < 0.
    LOCAL a, e, s, x2
    if (fabs(x) < {_PRIME_SERIES_MAX}) {{
        x2 = x*x
        exprelr_prime = {_prime_series()}
    }} else {{
        a = fabs(x)
        e = exp(-a)
        s = 1 - e
        exprelr_prime = e*(s - a)/(s*s)
        if (x < 0) {{
            exprelr_prime = -1 - exprelr_prime
        }}
    }}
}}
"""

FUNCTION_DEFINITIONS["heaviside"] = """\
FUNCTION heaviside(x) {
    : LEMS H(x): 0 below 0, 1 above, 1/2 at 0 (as jLEMS evaluates it)
    if (x < 0) {
        heaviside = 0
    } else if (x > 0) {
        heaviside = 1
    } else {
        heaviside = 0.5
    }
}
"""


def nmodl_number(value) -> str:
    """A number as NMODL text with full double precision: integers as integers, else the
    shortest decimal that reads back to the same double."""
    if isinstance(value, (int, sympy.Integer)):
        return str(int(value))
    x = float(value)
    if not math.isfinite(x):
        raise UnsupportedError(f"the number {x} in NMODL (NMODL has no literal for it)")
    if x == int(x) and abs(x) < 1e16:
        return str(int(x)) if isinstance(value, sympy.Rational) else repr(x)
    return repr(x)


class NmodlPrinter(CodePrinter):
    """Prints one sympy expression (no Piecewise: see :class:`Block`) as NMODL.

    ``used`` collects the names of :data:`FUNCTION_DEFINITIONS` the printed code calls.
    """

    printmethod = "_nmodl"
    language = "NMODL"
    _default_settings = {**CodePrinter._default_settings, "strict": False}
    _operators = {"and": "&&", "or": "||", "not": "!"}

    def __init__(self, settings=None):
        super().__init__(settings or {})
        self.used: set[str] = set()
        self.caret = True

    def code(self, expr, caret: bool = True) -> str:
        """``expr`` as NMODL.  ``caret=False`` prints powers as ``pow(b, e)``: nocmodl's parser
        of derivative equations (cnexp, derivimplicit) fails on ``^`` (NEURON 9.0)."""
        self.caret = caret
        try:
            expr = sympy.sympify(expr)
            return (caret and _product(expr)) or self._print(expr)
        finally:
            self.caret = True

    def parenthesize(self, item, level, strict=False):
        # A non-negative Rational prints as one decimal literal: no parentheses needed.
        if isinstance(item, sympy.Rational) and item.is_nonnegative:
            return self._print(item)
        return super().parenthesize(item, level, strict)

    # ---------------------------------------------------------------- numbers
    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Rational(self, expr):
        return nmodl_number(expr)

    def _print_Float(self, expr):
        return nmodl_number(expr)

    def _print_Zero(self, expr):
        return "0"

    def _print_One(self, expr):
        return "1"

    def _print_NegativeOne(self, expr):
        return "-1"

    def _print_Half(self, expr):
        return "0.5"

    def _print_Pi(self, expr):
        return "PI"

    def _print_Exp1(self, expr):
        return "exp(1)"

    def _print_Infinity(self, expr):
        raise UnsupportedError("infinity in NMODL (NMODL has no literal for it)")

    _print_NegativeInfinity = _print_Infinity
    _print_ComplexInfinity = _print_Infinity
    _print_NaN = _print_Infinity

    def _print_BooleanTrue(self, expr):
        return "1"

    def _print_BooleanFalse(self, expr):
        return "0"

    # ---------------------------------------------------------------- operators
    def _print_Add(self, expr, order=None):
        # Lead with a positive term where there is one: "v - vhalf", not "-vhalf + v".
        terms = list(self._as_ordered_terms(expr, order=order))
        first = next((i for i, t in enumerate(terms) if not t.could_extract_minus_sign()), 0)
        terms = terms[first:first + 1] + terms[:first] + terms[first + 1:]
        out = self._print(terms[0]) if precedence(terms[0]) >= PRECEDENCE["Add"] \
            else f"({self._print(terms[0])})"
        for t in terms[1:]:
            if t.could_extract_minus_sign():
                out += " - " + self.parenthesize(-t, PRECEDENCE["Add"] + 1)
            else:
                out += " + " + self.parenthesize(t, PRECEDENCE["Add"])
        return out

    def _print_Mul(self, expr):
        # x/1000 rather than 0.001*x: one correctly rounded division, and it reads as written.
        c, rest = expr.as_coeff_Mul()
        if c.is_Rational and not c.is_Integer and abs(c.p) == 1 and rest != 1:
            return self._divided(c, rest)
        return super()._print_Mul(expr)

    def _divided(self, c, rest) -> str:
        sign = "-" if c.p < 0 else ""
        num, den = rest.as_numer_denom()
        if den == 1:
            return f"{sign}{self.parenthesize(num, PRECEDENCE['Mul'], strict=True)}/{c.q}"
        den = self.parenthesize(den, PRECEDENCE["Mul"], strict=True)
        return f"{sign}{self.parenthesize(num, PRECEDENCE['Mul'], strict=True)}/({c.q}*{den})"

    def _print_Pow(self, expr):
        base, exp = expr.as_base_exp()
        if exp == sympy.S.Half:
            return f"sqrt({self._print(base)})"
        if exp.is_Number and exp.is_negative:
            return f"1/{self.parenthesize(base ** -exp, PRECEDENCE['Mul'] + 1)}"
        if not self.caret:
            return f"pow({self._print(base)}, {self._print(exp)})"
        product = _product(expr)
        if product:                 # parenthesized: it binds looser than the ^ it replaces
            return f"({product})"
        if not exp.is_Number:
            self.used.add("power")
            return f"power({self._arg(base)}, {self._arg(exp)})"
        b = self.parenthesize(base, PRECEDENCE["Pow"] + 1)
        if (base.is_Number and base.is_negative) or b.startswith("-"):
            b = f"({self._print(base)})"
        if exp.is_Integer or (exp.is_Symbol) or (exp.is_Number and exp.is_nonnegative):
            e = self._print(exp)
        else:
            e = f"({self._print(exp)})"
        return f"{b}^{e}"

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        prec = PRECEDENCE["Relational"]
        return f"{self.parenthesize(expr.lhs, prec)} {op} {self.parenthesize(expr.rhs, prec)}"

    def _print_And(self, expr):
        return " && ".join(f"({self._print(a)})" for a in self._sorted_args(expr))

    def _print_Or(self, expr):
        return " || ".join(f"({self._print(a)})" for a in self._sorted_args(expr))

    def _print_Not(self, expr):
        return f"!({self._print(expr.args[0])})"

    @staticmethod
    def _sorted_args(expr):
        return sorted(expr.args, key=sympy.default_sort_key)

    def _print_Piecewise(self, expr):
        raise ValueError("NMODL has no conditional expression: lift Piecewise with Block.assign")

    # ---------------------------------------------------------------- functions
    def _arg(self, expr) -> str:
        """A function argument: a product needs no parentheses there."""
        return (self.caret and _product(expr)) or self._print(expr)

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name in KNOWN_FUNCTIONS:
            args = ", ".join(self._arg(a) for a in expr.args)
            return f"{KNOWN_FUNCTIONS[name]}({args})"
        raise UnsupportedError(f"the function {name}() in NMODL")

    def _print_ExpRelr(self, expr):
        self.used.add("exprelr")
        return f"exprelr({self._arg(expr.args[0])})"

    def _print_ExpRelrPrime(self, expr):
        self.used.add("exprelr_prime")
        return f"exprelr_prime({self._arg(expr.args[0])})"

    def _print_ExpRelrDerivative(self, expr):
        raise UnsupportedError(f"the {expr.args[0]}th derivative of exprelr in NMODL")

    def _print_Random(self, expr):
        raise UnsupportedError(f"random({expr.args[0]}) in NMODL (a random draw per "
                               "evaluation needs a per-instance random stream)")

    def _print_Heaviside(self, expr):
        if len(expr.args) > 1 and expr.args[1] != sympy.S.Half:
            raise UnsupportedError(f"Heaviside with H(0) = {expr.args[1]} in NMODL")
        self.used.add("heaviside")
        return f"heaviside({self._arg(expr.args[0])})"

    def _print_Symbol(self, expr):
        return expr.name

    # CodePrinter hooks for statement printing (unused: Block writes statements itself).
    def _get_statement(self, codestring):
        return codestring

    def _get_comment(self, text):
        return f": {text}"

    def _declare_number_const(self, name, value):
        return f"{name} = {value}"

    def _format_code(self, lines):
        return lines


# ----------------------------------------------------------------------------- tidy


def _product(expr) -> str | None:
    """``x*x*x`` for ``x^3`` (whole exponents 2 to 4 of a name), else None: nocmodl turns
    ``^`` into ``pow``, which costs several multiplications."""
    if isinstance(expr, sympy.Pow) and expr.base.is_Symbol and expr.exp.is_Integer \
            and 2 <= expr.exp <= 4:
        return "*".join([expr.base.name] * int(expr.exp))
    return None


def tidy(expr):
    """The same value written the way a person would: common rational factors pulled out
    (``1000*(v/1000 - vh/1000)/k`` -> ``(v - vh)/k``, what unit conversion leaves behind)
    and comparisons with both sides scaled by the same positive number unscaled
    (``v/1000 > thresh/1000`` -> ``v > thresh``).  Equal in exact arithmetic; in floating point
    within an ulp or two."""
    if not isinstance(expr, sympy.Basic) or not expr.args:
        return expr
    done = _TIDIED.get(expr)
    if done is None:
        done = expr
        if isinstance(expr, sympy.Expr):
            done = sympy.factor_terms(expr)
        done = done.replace(lambda e: isinstance(e, Relational), _tidy_relational)
        if len(_TIDIED) < _TIDIED_MAX:
            _TIDIED[expr] = done
    return done


#: expression -> :func:`tidy` of it, per process: ``factor_terms`` is the costliest step of
#: emission and the mods of a model tidy the same expressions again and again (Hay's L5PC:
#: 321 calls, 80 expressions).  Keys compare structurally and strictly (sympy >= 1.13:
#: ``Float(1) != Integer(1)``, Floats of another precision differ), so a hit is the same tree.
_TIDIED: dict = {}
_TIDIED_MAX = 50_000


def _tidy_relational(rel):
    lhs, rhs = sympy.factor_terms(rel.lhs), sympy.factor_terms(rel.rhs)
    cl, l_rest = lhs.as_coeff_Mul()
    cr, r_rest = rhs.as_coeff_Mul()
    if cl == cr and cl.is_Rational and cl.is_positive:
        lhs, rhs = l_rest, r_rest
    elif rhs == 0 and cl.is_Rational and cl.is_positive:
        lhs = l_rest
    return rel.func(lhs, rhs, evaluate=False)


# ----------------------------------------------------------------------------- statements


class Block:
    """The statements of one NMODL block, with the LOCAL temporaries they need.

    ``taken`` holds every name already used in the mod file, so temporaries never collide;
    ``indent`` is the indentation of the block's body.
    """

    def __init__(self, printer: NmodlPrinter, taken: set[str], indent: int = 1,
                 caret: bool = True):
        self.printer = printer
        self.taken = taken
        self.caret = caret  # False in DERIVATIVE blocks: see NmodlPrinter.code
        self.lines: list[str] = []
        self.locals: list[str] = []
        self.level = indent

    # -- plain lines
    def line(self, text: str) -> None:
        self.lines.append("    " * self.level + text)

    def comment(self, text: str) -> None:
        self.line(f": {text}")

    def temp(self, stem: str = "tmp") -> str:
        """A new LOCAL ``<stem>1``, ``<stem>2``, ... (the first free one)."""
        n = 1
        while f"{stem}{n}" in self.taken:
            n += 1
        return self.local(f"{stem}{n}")

    def local(self, name: str) -> str:
        """A new LOCAL called ``name`` if that is free, else ``<name>2``, ..."""
        n, new = 2, name
        while new in self.taken:
            new, n = f"{name}{n}", n + 1
        self.taken.add(new)
        self.locals.append(new)
        return new

    @contextlib.contextmanager
    def if_(self, condition):
        cond = self.expr(condition)
        self.line(f"if ({cond}) {{")
        self.level += 1
        yield
        self.level -= 1
        self.line("}")

    # -- expressions and assignments
    def expr(self, expr) -> str:
        """``expr`` printed, after lifting its Piecewise parts into statements before it."""
        return self.printer.code(self._lift(_rewrite_unprintable(expr), {}), self.caret)

    def assign(self, target: str, expr) -> None:
        self._assign(target, _rewrite_unprintable(expr), {})

    def _assign(self, target: str, expr, seen: dict) -> None:
        if isinstance(expr, sympy.Piecewise):
            self._piecewise(target, expr, seen)
        else:
            self.line(f"{target} = {self.printer.code(self._lift(expr, seen), self.caret)}")

    def _lift(self, expr, seen: dict):
        """``expr`` with each Piecewise replaced by a temporary assigned just before.  ``seen``
        maps the Piecewises already lifted in this scope (a branch sees its parents', not the
        other way round: a temporary set in a branch is not set when the branch is skipped)."""
        if isinstance(expr, sympy.Piecewise):
            if expr not in seen:
                name = self.temp()
                self._piecewise(name, expr, seen)
                seen[expr] = sympy.Symbol(name, real=True)
            return seen[expr]
        if not expr.args or not any(a.has(sympy.Piecewise) for a in expr.args):
            return expr
        return expr.func(*[self._lift(a, seen) for a in expr.args])

    def _piecewise(self, target: str, pw: sympy.Piecewise, seen: dict) -> None:
        # Conditions first (they may need lifting themselves), then the if/else chain; each
        # branch value is lifted inside its branch, so it is only evaluated when taken.
        cases = [(value, cond if cond == sympy.true
                  else self.printer.code(self._lift(cond, seen), self.caret))
                 for value, cond in pw.args]
        if cases[0][1] == sympy.true:
            self._assign(target, cases[0][0], seen)
            return
        for k, (value, cond) in enumerate(cases):
            if cond == sympy.true:
                self.line("} else {")
            else:
                self.line(f"{'if' if k == 0 else '} else if'} ({cond}) {{")
            self.level += 1
            self._assign(target, value, dict(seen))
            self.level -= 1
            if cond == sympy.true:
                break
        self.line("}")
        if cases[-1][1] != sympy.true:
            self.comment(f"no case holds: {target} keeps its previous value")


def _rewrite_unprintable(expr):
    """Min, Max and sign have no NMODL function: write them as Piecewise."""
    expr = sympy.sympify(expr)
    kinds = (sympy.Min, sympy.Max, sympy.sign)
    if not expr.has(*kinds):
        return expr
    return expr.replace(lambda e: isinstance(e, kinds), lambda e: e.rewrite(sympy.Piecewise))


# ----------------------------------------------------------------------------- cse


def cse_assignments(assignments: list[tuple[str, sympy.Expr]], taken: set[str],
                    printer: NmodlPrinter) -> list[tuple[str, sympy.Expr, bool]]:
    """Share common subexpressions between sequential assignments ``name = expr``.

    Returns ``(name, expr, is_temporary)`` triples, each temporary placed just before its
    first use.  Kept only when the printed code gets shorter.  Assignments with a Piecewise
    are left alone (a shared part of a branch would be evaluated when the branch is not
    taken, which is what the branch may be there to prevent).
    """
    plain = [i for i, (_, e) in enumerate(assignments) if not e.has(sympy.Piecewise)]
    exprs = [assignments[i][1] for i in plain]
    if len(exprs) < 1:
        return [(n, e, False) for n, e in assignments]
    names = _temp_names(taken)
    replacements, reduced = sympy.cse(exprs, symbols=names, order="none")
    if not replacements:
        return [(n, e, False) for n, e in assignments]
    new = list(assignments)
    for i, e in zip(plain, reduced):
        new[i] = (assignments[i][0], e)
    out = _place_temporaries(new, replacements)
    before = [(assignments[i][0], e, False) for i, e in zip(plain, exprs)]
    after = [a for i, a in enumerate(out) if a[2] or not a[1].has(sympy.Piecewise)]
    if _printed_length(after, printer) >= _printed_length(before, printer):
        return [(n, e, False) for n, e in assignments]
    for sym, _ in replacements:
        taken.add(sym.name)
    return out


def _temp_names(taken: set[str]):
    n = 1
    while True:
        if f"cse{n}" not in taken:
            yield sympy.Symbol(f"cse{n}", real=True)
        n += 1


def _place_temporaries(assignments, replacements):
    temps = {sym: e for sym, e in replacements}
    first_use = {}
    for sym, _ in reversed(replacements):
        uses = [i for i, (_, e) in enumerate(assignments) if sym in e.free_symbols]
        uses += [first_use[t] for t in first_use if sym in temps[t].free_symbols]
        first_use[sym] = min(uses) if uses else len(assignments)
    out = []
    for i, (name, e) in enumerate(assignments):
        out += [(sym.name, temps[sym], True) for sym, _ in replacements if first_use[sym] == i]
        out.append((name, e, False))
    return out


def _printed_length(assignments, printer: NmodlPrinter) -> int:
    return sum(len(n) + 3 + len(printer.code(e)) for n, e, _ in assignments)
