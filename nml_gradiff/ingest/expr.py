"""The LEMS expression language -> sympy, without ever evaluating text.

Model files come from the internet, so this module never calls ``eval``, ``sympify`` or
``parse_expr``: a hand-written tokenizer and a precedence-climbing (Pratt) parser build sympy
nodes directly, and only from a fixed table of operators and functions.

Grammar (``docs/expressions.md`` has the long version)::

    condition  := expression                       (must be a condition)
    expression := operand (infix operand)*         (precedence climbing, table below)
    operand    := number | name | name "(" arguments ")" | "(" expression ")"
                | ("-" | "+") operand-of-precedence-6
    number     := digits ["." [digits]] [exponent] | "." digits [exponent]
    exponent   := ("e" | "E") ["+" | "-"] digits
    name       := [A-Za-z_][A-Za-z0-9_]*

Precedence, lowest first (all binary operators are left-associative except ``^``; comparisons
do not chain)::

    1  .or.
    2  .and.
    3  .gt. .ge. .geq. .lt. .le. .leq. .eq. .neq. .ne.
    4  +  -            (binary)
    5  *  /
    6  -  +            (unary: -x^2 is -(x^2), -a*b is (-a)*b)
    7  ^               (right-associative: a^b^c is a^(b^c); 2^-x is 2^(-x))

jLEMS has no ``.not.``, so neither does this parser.

Numbers: integers become ``sympy.Integer``; anything with a decimal point or an exponent becomes
a ``sympy.Float`` holding exactly the nearest float64 (see :func:`_number`).

Guards against hostile input: at most :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels
of nesting, and every constant subexpression must stay finite in float64 (sympy would otherwise
happily try to compute ``floor(exp(exp(100)))`` or ``9^9^9`` exactly, for ever).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import sympy

from ..errors import ModelError
from ..ir.functions import Random, heaviside
from ..ir.mechanism import symbol

__all__ = ["parse_expression", "parse_condition", "FUNCTIONS", "MAX_LENGTH", "MAX_DEPTH"]

MAX_LENGTH = 10_000
MAX_DEPTH = 100

# ----------------------------------------------------------------------------- tokens

_RELATIONS: dict[str, type] = {
    ".gt.": sympy.StrictGreaterThan, ".ge.": sympy.GreaterThan, ".geq.": sympy.GreaterThan,
    ".lt.": sympy.StrictLessThan, ".le.": sympy.LessThan, ".leq.": sympy.LessThan,
    ".eq.": sympy.Eq, ".neq.": sympy.Ne, ".ne.": sympy.Ne,
}
_LOGIC: dict[str, type] = {".and.": sympy.And, ".or.": sympy.Or}
_DOT_OPS = {**_RELATIONS, **_LOGIC}

# (binding power, right-associative)
_INFIX: dict[str, tuple[int, bool]] = {
    ".or.": (1, False), ".and.": (2, False),
    **{op: (3, False) for op in _RELATIONS},
    "+": (4, False), "-": (4, False), "*": (5, False), "/": (5, False), "^": (7, True),
}
_UNARY_BP = 6

_DOT_NAMES = "|".join(sorted((op[1:-1] for op in _DOT_OPS), key=len, reverse=True))
# A '.' right after digits belongs to the number unless it starts an operator: 2.e5 is a number,
# 2.eq.x is 2 .eq. x.
_NUMBER = re.compile(r"(?:[0-9]+(?:\.(?!(?:" + _DOT_NAMES + r")\.)[0-9]*)?|\.[0-9]+)"
                     r"(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOT_WORD = re.compile(r"\.([A-Za-z]+)\.")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.]")
_SINGLE = set("+-*/^(),")
_SPACE = set(" \t\r\n")


def _isdigit(ch: str) -> bool:
    return len(ch) == 1 and "0" <= ch <= "9"  # str.isdigit() also accepts '²' and '٣'


@dataclass(frozen=True)
class _Token:
    kind: str   # "num", "name", "op" (+-*/^), "dot" (.gt. ...), "(", ")", ",", "end"
    text: str
    col: int    # 1-based column of the first character

    def describe(self) -> str:
        return "the end of the expression" if self.kind == "end" else repr(self.text)


# ----------------------------------------------------------------------------- values

@dataclass(frozen=True)
class _Val:
    """A parsed subexpression: its sympy form, whether it is a condition, and -- when it
    depends on no symbol -- its float64 value, used only to keep constants in range."""

    expr: sympy.Basic
    is_bool: bool
    fval: float | None = None


class _Undefined(Exception):
    """A constant subexpression outside its domain (log(0), 1/0, sqrt(-1) ...)."""


def _fcheck(fn: Callable, *args: float | None) -> float | None:
    """float64 value of ``fn(*args)``, None if an argument is not constant."""
    if any(a is None for a in args):
        return None
    try:
        value = fn(*args)
    except OverflowError:
        return math.inf
    except (ValueError, ZeroDivisionError) as exc:
        raise _Undefined from exc
    if isinstance(value, complex):
        raise _Undefined
    return float(value)


def _heaviside_f(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 0 else 0.5


def _factorial_f(x: float) -> float:
    return math.gamma(x + 1.0)


@dataclass(frozen=True)
class _Function:
    build: Callable[[sympy.Expr], sympy.Expr]
    fvalue: Callable[[float], float] | None   # None: never constant (random)
    arity: int = 1


#: The LEMS functions: name -> builder.  Unknown names are errors, never looked up elsewhere.
FUNCTIONS: dict[str, _Function] = {
    "exp": _Function(sympy.exp, math.exp),
    "log": _Function(sympy.log, math.log),      # natural logarithm, as in jLEMS
    "ln": _Function(sympy.log, math.log),
    "sqrt": _Function(sympy.sqrt, math.sqrt),
    "sin": _Function(sympy.sin, math.sin),
    "cos": _Function(sympy.cos, math.cos),
    "tan": _Function(sympy.tan, math.tan),
    "sinh": _Function(sympy.sinh, math.sinh),
    "cosh": _Function(sympy.cosh, math.cosh),
    "tanh": _Function(sympy.tanh, math.tanh),
    "abs": _Function(sympy.Abs, abs),
    "ceil": _Function(sympy.ceiling, math.ceil),
    "floor": _Function(sympy.floor, math.floor),
    "factorial": _Function(sympy.factorial, _factorial_f),
    "H": _Function(heaviside, _heaviside_f),
    "random": _Function(Random.draw, None),
}


def _number(text: str) -> sympy.Number:
    """A numeric literal.  Integers stay exact.  A decimal becomes a Float holding exactly
    float(text) -- the correctly rounded float64 every backend computes with -- at 17 significant
    digits, which is enough for any float64 to survive printing and re-parsing.  (Float(text, 17)
    would round the decimal to 60 bits first, and float() of that is off by one ulp for ~0.4 % of
    17-digit literals; a Rational would be exact but print as a ratio of big integers.)"""
    if text.isdigit():
        return sympy.Integer(text)
    return sympy.Float(float(text), 17)


# ----------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, where: dict):
        self.text = text
        self.where = where
        self.tokens = self._tokenize()
        self.pos = 0
        self.depth = 0

    # ---- errors

    def error(self, what: str, col: int) -> ModelError:
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
        return ModelError(f"cannot parse expression {shown!r}: {what} at column {col}",
                          **self.where)

    # ---- tokenizer

    def _tokenize(self) -> list[_Token]:
        text, i, out = self.text, 0, []
        while i < len(text):
            ch, col = text[i], i + 1
            if ch in _SPACE:
                i += 1
                continue
            if _isdigit(ch) or (ch == "." and _isdigit(text[i + 1:i + 2])):
                m = _NUMBER.match(text, i)
                end = m.end()
                if end < len(text) and _NAME_CHAR.match(text, end) and not _DOT_WORD.match(
                        text, end):
                    raise self.error(f"malformed number {text[i:end + 1]!r}", col)
                out.append(_Token("num", m.group(), col))
                i = end
            elif ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z"):
                m = _NAME.match(text, i)
                i = m.end()
                if text[i:i + 1] == "." and not self._dot_operator_at(i):
                    dotted = re.match(r"[A-Za-z0-9_.]*", text[m.start():]).group()
                    raise self.error(f"'.' is not allowed in a name: {dotted!r}", i + 1)
                out.append(_Token("name", m.group(), col))
            elif ch == ".":
                m = _DOT_WORD.match(text, i)
                if m is None:
                    raise self.error("unexpected '.'", col)
                if m.group() not in _DOT_OPS:
                    raise self.error(f"unknown operator {m.group()!r}", col)
                out.append(_Token("dot", m.group(), col))
                i = m.end()
            elif ch in _SINGLE:
                out.append(_Token(ch if ch in "()," else "op", ch, col))
                i += 1
            else:
                raise self.error(f"unexpected character {ch!r}", col)
        out.append(_Token("end", "", len(text) + 1))
        return out

    def _dot_operator_at(self, i: int) -> bool:
        m = _DOT_WORD.match(self.text, i)
        return m is not None and m.group() in _DOT_OPS

    # ---- token stream

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    # ---- grammar

    def parse(self) -> _Val:
        if self.peek().kind == "end":
            raise self.error("empty expression", 1)
        val = self.expression(0)
        tok = self.peek()
        if tok.kind == ")":
            raise self.error("unbalanced parentheses: ')' without a matching '('", tok.col)
        if tok.kind != "end":
            raise self.error(f"expected an operator, found {tok.describe()}", tok.col)
        return val

    def expression(self, min_bp: int) -> _Val:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", self.peek().col)
        left = self.operand()
        # A run of + - (or * /) at one level is built as one Add (Mul) at the end: folding
        # term by term would re-flatten the growing sum each time, quadratic in its length.
        chain_kind, chain = None, []
        while True:
            tok = self.peek()
            info = _INFIX.get(tok.text) if tok.kind in ("op", "dot") else None
            if info is None or info[0] < min_bp:
                break
            self.advance()
            bp, right_assoc = info
            right = self.expression(bp if right_assoc else bp + 1)
            kind = _CHAINS.get(tok.text)
            if kind != chain_kind:
                left, chain_kind, chain = _close_chain(chain_kind, chain, left), None, []
            if kind is None:
                left = self.infix(tok, left, right)
                continue
            a = self.numeric(left, tok, f"'{tok.text}'")
            b = self.numeric(right, tok, f"'{tok.text}'")
            if tok.text == "/" and b.fval == 0:
                raise self.error("division by zero", tok.col)
            if not chain:
                chain_kind, chain = kind, [a.expr]
            chain.append(_INVERSE[tok.text](b.expr))
            left = _Val(None, False, self.fvalue(tok, _FLOAT_OPS[tok.text], a.fval, b.fval))
        self.depth -= 1
        return _close_chain(chain_kind, chain, left)

    def operand(self) -> _Val:
        tok = self.advance()
        if tok.kind == "num":
            return self.number(tok)
        if tok.kind == "name":
            return self.name(tok)
        if tok.kind == "(":
            inner = self.expression(0)
            close = self.peek()
            if close.kind != ")":
                raise self.error(f"unbalanced parentheses: '(' at column {tok.col} is not "
                                 f"closed, found {close.describe()}", close.col)
            self.advance()
            return inner
        if tok.kind == "op" and tok.text in "+-":
            val = self.numeric(self.expression(_UNARY_BP), tok, "unary " + tok.text)
            if tok.text == "+":
                return val
            return _Val(-val.expr, False, self.fvalue(tok, lambda a: -a, val.fval))
        if tok.kind == "end":
            raise self.error("the expression ends where an operand is expected", tok.col)
        if tok.kind == ")":
            raise self.error("unexpected ')' where an operand is expected", tok.col)
        raise self.error(f"unexpected {tok.describe()} where an operand is expected", tok.col)

    def number(self, tok: _Token) -> _Val:
        value = float(tok.text)  # inf when out of range (also for long digit strings)
        if not math.isfinite(value):
            raise self.error(f"number {tok.text[:40]!r} is out of float64 range", tok.col)
        return _Val(_number(tok.text), False, value)

    def name(self, tok: _Token) -> _Val:
        if self.peek().kind == "(":
            return self.call(tok)
        if tok.text in FUNCTIONS:
            raise self.error(f"function '{tok.text}' must be called, as {tok.text}(...)",
                             tok.col)
        return _Val(symbol(tok.text), False, None)

    def call(self, name: _Token) -> _Val:
        fn = FUNCTIONS.get(name.text)
        if fn is None:
            raise self.error(f"unknown function '{name.text}'", name.col)
        self.advance()  # "("
        args: list[_Val] = []
        if self.peek().kind != ")":
            while True:
                args.append(self.numeric(self.expression(0), name, f"{name.text}()"))
                tok = self.advance()
                if tok.kind == ")":
                    break
                if tok.kind != ",":
                    raise self.error(f"expected ',' or ')' in the call of '{name.text}', found "
                                     f"{tok.describe()}", tok.col)
        else:
            self.advance()
        if len(args) != fn.arity:
            raise self.error(f"function '{name.text}' takes {fn.arity} argument"
                             f"{'s' if fn.arity != 1 else ''}, got {len(args)}", name.col)
        fval = None if fn.fvalue is None else self.fvalue(name, fn.fvalue, args[0].fval)
        return _Val(fn.build(*(a.expr for a in args)), False, fval)

    # ---- building nodes

    def numeric(self, val: _Val, tok: _Token, what: str) -> _Val:
        if val.is_bool:
            raise self.error(f"{what} needs a number, not a condition", tok.col)
        return val

    def condition(self, val: _Val, tok: _Token) -> _Val:
        if not val.is_bool:
            raise self.error(f"'{tok.text}' needs conditions on both sides, not numbers",
                             tok.col)
        return val

    def fvalue(self, tok: _Token, fn: Callable, *args: float | None) -> float | None:
        try:
            value = _fcheck(fn, *args)
        except _Undefined:
            raise self.error("constant subexpression is undefined (division by zero or a "
                             "function outside its domain)", tok.col) from None
        if value is not None and not math.isfinite(value):
            raise self.error("constant subexpression overflows float64", tok.col)
        return value

    def infix(self, tok: _Token, left: _Val, right: _Val) -> _Val:
        op = tok.text
        if op in _LOGIC:
            a, b = self.condition(left, tok).expr, self.condition(right, tok).expr
            symbolic = bool(a.free_symbols or b.free_symbols)
            return _Val(_LOGIC[op](a, b, evaluate=not symbolic), True)
        a = self.numeric(left, tok, f"'{op}'")
        b = self.numeric(right, tok, f"'{op}'")
        if op in _RELATIONS:
            # Keep symbolic comparisons symbolic (sympy would fold x .gt. x to False);
            # comparisons of constants may fold.
            constant = a.fval is not None and b.fval is not None
            return _Val(_RELATIONS[op](a.expr, b.expr, evaluate=constant), True)
        fval = self.fvalue(tok, _FLOAT_OPS[op], a.fval, b.fval)  # op is "^"
        return _Val(sympy.Pow(a.expr, b.expr), False, fval)


_CHAINS = {"+": "add", "-": "add", "*": "mul", "/": "mul"}
_INVERSE: dict[str, Callable] = {"+": lambda b: b, "-": lambda b: -b,
                                 "*": lambda b: b, "/": lambda b: sympy.Pow(b, -1)}
_FLOAT_OPS: dict[str, Callable] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "^": lambda a, b: a ** b,
}


def _close_chain(kind: str | None, chain: list, left: _Val) -> _Val:
    if kind is None:
        return left
    build = sympy.Add if kind == "add" else sympy.Mul
    return _Val(build(*chain), False, left.fval)


# ----------------------------------------------------------------------------- public API


#: (text, want_condition) -> parsed expression.  The result depends on the text only (names
#: are global symbols, ``where`` only locates errors, which are never cached), and a model
#: repeats the same expressions in many channels and gates (Hay's L5PC: 214 parses, 47
#: texts); a parse that draws a ``random()`` is never reused, each draw is its own.
_PARSED: dict[tuple[str, bool], sympy.Basic] = {}
_PARSED_MAX = 20_000


def _parse(text: str, where: dict, want_condition: bool) -> sympy.Basic:
    if not isinstance(text, str):
        raise TypeError(f"expression text must be a str, got {type(text).__name__}")
    key = (text, want_condition)
    if key in _PARSED:
        return _PARSED[key]
    expr = _parse_text(text, where, want_condition)
    if len(_PARSED) < _PARSED_MAX and not expr.atoms(Random):
        _PARSED[key] = expr
    return expr


def _parse_text(text: str, where: dict, want_condition: bool) -> sympy.Basic:
    if len(text) > MAX_LENGTH:
        raise ModelError(f"cannot parse expression {text[:200] + '...'!r}: longer than "
                         f"{MAX_LENGTH} characters at column {MAX_LENGTH + 1}", **where)
    parser = _Parser(text, where)
    try:
        val = parser.parse()
    except RecursionError:
        # Last line of defence: MAX_DEPTH keeps our own recursion far below the limit, but sympy
        # recurses over the tree it builds and the caller's stack may already be deep.
        raise parser.error("nested too deeply", 1) from None
    if val.is_bool and not want_condition:
        raise parser.error("expected a number but this is a condition", 1)
    if want_condition and not val.is_bool:
        raise parser.error("expected a condition (such as 'v .gt. 0') but this is a number", 1)
    return val.expr


def parse_expression(text: str, *, file=None, line=None, element=None) -> sympy.Expr:
    """Parse a LEMS numeric expression (``value=``, ``TimeDerivative``, ...) into sympy.

    Names become real symbols (:func:`nml_gradiff.ir.mechanism.symbol`); any syntax problem
    raises :class:`~nml_gradiff.errors.ModelError` naming the column.
    """
    return _parse(text, {"file": file, "line": line, "element": element}, False)


def parse_condition(text: str, *, file=None, line=None, element=None) -> sympy.logic.Boolean:
    """Parse a LEMS condition (``OnCondition test=``, ``Case condition=``) into a sympy
    relational/boolean.  Symbolic comparisons are kept unevaluated (``x .gt. x`` stays
    ``x > x``); comparisons of constants fold to ``true``/``false``."""
    return _parse(text, {"file": file, "line": line, "element": element}, True)
