"""The LEMS expression parser: operators, precedence, functions, conditions, errors, safety."""

from __future__ import annotations

import builtins
import sys
import time

import mpmath
import pytest
import sympy
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nml_gradiff.errors import ModelError
from nml_gradiff.ingest.expr import MAX_DEPTH, MAX_LENGTH, parse_condition, parse_expression
from nml_gradiff.ir.functions import Random
from nml_gradiff.ir.mechanism import symbol

P, C = parse_expression, parse_condition
a, b, c, d, e, f, x, y, z, v = (symbol(n) for n in "abcdefxyzv")


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("text, value", [("42", 42), ("0", 0), ("007", 7)])
def test_integers_stay_exact(text, value):
    r = P(text)
    assert isinstance(r, sympy.Integer) and r == value


@pytest.mark.parametrize("text", ["1e-3", "1E+3", "1e3", ".5", "2.", "2.e5", "0.1", "3.25",
                                  "6.02214076e23", "1.7976931348623157e308", "5e-324"])
def test_decimals_are_exact_float64(text):
    r = P(text)
    assert isinstance(r, sympy.Float)
    assert float(r) == float(text)  # exactly the correctly rounded double


def test_decimal_prints_with_17_significant_digits():
    r = P("0.12345678901234567")
    assert float(str(r)) == float("0.12345678901234567")
    assert len(str(r).replace("0.", "", 1)) >= 17


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_any_float_literal_round_trips_exactly(value):
    assert float(P(repr(value))) == value


def test_integer_division_is_exact():
    assert P("3/2") == sympy.Rational(3, 2)


# ----------------------------------------------------------------------------- operators


@pytest.mark.parametrize("text, expected", [
    ("a+b", a + b), ("a-b", a - b), ("a*b", a * b), ("a/b", a / b), ("a^b", a ** b),
    ("-a", -a), ("+a", a), ("--a", a), ("(a)", a), ("((a))", a),
    ("a - -b", a + b), ("a*-b", -a * b), ("a/-b", -a / b),
    # precedence
    ("a+b*c", a + b * c), ("a*b+c", a * b + c), ("(a+b)*c", (a + b) * c),
    ("a+b^c", a + b ** c), ("a*b^c", a * b ** c), ("a^b*c", a ** b * c),
    ("-a^2", -(a ** 2)), ("(-a)^2", (-a) ** 2), ("-a*b", (-a) * b), ("-a+b", -a + b),
    ("2^-a", 2 ** (-a)), ("2^-a^2", 2 ** (-(a ** 2))), ("2^-a*3", 3 * 2 ** (-a)),
    ("-2^2", sympy.Integer(-4)), ("(-2)^2", sympy.Integer(4)), ("2^-1", sympy.Rational(1, 2)),
    # associativity
    ("a-b-c", a - b - c), ("a/b/c", a / (b * c)), ("a/b*c", a * c / b),
    ("a^b^c", a ** (b ** c)), ("2^3^2", sympy.Integer(512)), ("a-b+c", a - b + c),
    # whitespace anywhere between tokens
    (" a\t+\n b ", a + b), ("exp (a)", sympy.exp(a)),
])
def test_operators_precedence_associativity(text, expected):
    assert P(text) == expected


def test_names():
    assert P("v_1 + _x + CamelCase2") == symbol("v_1") + symbol("_x") + symbol("CamelCase2")
    s = P("v")
    assert s == symbol("v") and s.is_real
    # names that mean something to python or sympy are only names here
    assert P("E + I + pi + oo + __import__") == sum(symbol(n) for n in
                                                     ["E", "I", "pi", "oo", "__import__"])


# ----------------------------------------------------------------------------- functions


@pytest.mark.parametrize("name, fn", [
    ("exp", sympy.exp), ("log", sympy.log), ("ln", sympy.log), ("sqrt", sympy.sqrt),
    ("sin", sympy.sin), ("cos", sympy.cos), ("tan", sympy.tan), ("sinh", sympy.sinh),
    ("cosh", sympy.cosh), ("tanh", sympy.tanh), ("abs", sympy.Abs), ("ceil", sympy.ceiling),
    ("floor", sympy.floor), ("factorial", sympy.factorial),
])
def test_functions(name, fn):
    assert P(f"{name}(x + 1)") == fn(x + 1)


def test_function_values():
    assert P("factorial(5)") == 120
    assert P("ceil(2.5) + floor(2.5)") == 5
    assert P("abs(-3)") == 3
    assert P("log(exp(2))") == 2
    assert P("ln(1)") == 0


def test_heaviside_is_one_half_at_zero_like_jlems():
    assert P("H(0)") == sympy.Rational(1, 2)
    assert P("H(0.0)") == sympy.Rational(1, 2)
    assert P("H(-2)") == 0 and P("H(3)") == 1
    h = P("H(x)")
    assert h.subs(x, 0) == sympy.Rational(1, 2)
    assert h.subs(x, -1) == 0 and h.subs(x, 1) == 1


def test_random_draws_are_independent_and_unevaluated():
    r = P("random(2)")
    assert isinstance(r, Random) and r.args[0] == 2
    assert r.evalf() == r  # a draw is never folded into a number
    diff = P("random(1) - random(1)")
    assert diff != 0 and len(diff.atoms(Random)) == 2
    assert str(P("random(x)")) == "random(x)"


def test_parses_are_reused_but_not_draws_nor_error_locations():
    """Parsed texts are cached per process (models repeat their expressions); a random()
    is a new draw at every parse, and an error still names the place of each use."""
    assert parse_expression("exp((v - 10)/5)") is parse_expression("exp((v - 10)/5)")
    assert P("random(3)") != P("random(3)")
    for line in (4, 9):
        with pytest.raises(ModelError) as info:
            parse_expression("v +* 2", file="a.nml", line=line)
        assert info.value.line == line
    assert parse_condition("v .gt. 1") is parse_condition("v .gt. 1")
    with pytest.raises(ModelError, match="expected a number"):
        parse_expression("v .gt. 1")            # the cached condition is no expression


# ----------------------------------------------------------------------------- conditions


@pytest.mark.parametrize("text, expected", [
    ("x .gt. 0", sympy.Gt(x, 0)), ("x .ge. 0", sympy.Ge(x, 0)), ("x .geq. 0", sympy.Ge(x, 0)),
    ("x .lt. 0", sympy.Lt(x, 0)), ("x .le. 0", sympy.Le(x, 0)), ("x .leq. 0", sympy.Le(x, 0)),
    ("x .eq. 0", sympy.Eq(x, 0)), ("x .neq. 0", sympy.Ne(x, 0)), ("x .ne. 0", sympy.Ne(x, 0)),
    ("x.gt.0", sympy.Gt(x, 0)), ("2.eq.x", sympy.Eq(2, x)),
    ("a+1 .gt. b*2", sympy.Gt(a + 1, 2 * b)),
    ("a .lt. b .and. c .gt. d", sympy.And(sympy.Lt(a, b), sympy.Gt(c, d))),
    ("a .lt. b .or. c .gt. d .and. e .eq. f",
     sympy.Or(sympy.Lt(a, b), sympy.And(sympy.Gt(c, d), sympy.Eq(e, f)))),
    ("(a .lt. b .or. c .gt. d) .and. e .eq. f",
     sympy.And(sympy.Or(sympy.Lt(a, b), sympy.Gt(c, d)), sympy.Eq(e, f))),
    ("a .lt. b .or. c .gt. d .or. e .eq. f",
     sympy.Or(sympy.Lt(a, b), sympy.Gt(c, d), sympy.Eq(e, f))),
    ("((x .gt. 0))", sympy.Gt(x, 0)),
])
def test_conditions(text, expected):
    assert C(text) == expected


def test_symbolic_conditions_are_not_folded():
    for text in ["x .gt. x", "x .eq. x", "x .neq. x", "x .ge. x", "x .gt. x .or. y .lt. y",
                 "x .eq. x .and. y .gt. 1"]:
        r = C(text)
        assert r not in (sympy.true, sympy.false), text
    assert isinstance(C("x .eq. x"), sympy.Eq)
    # (sympy's And/Or always drop a relation next to its exact negation -- x .lt. x .or.
    # x .ge. x is true -- which is exact for real numbers.)


def test_constant_conditions_fold():
    assert C("1 .gt. 0") is sympy.true
    assert C("1 .lt. 0") is sympy.false
    assert C("1 .lt. 0 .or. 2 .gt. 1") is sympy.true


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("text, column, what", [
    ("", 1, "empty expression"),
    ("   ", 1, "empty expression"),
    ("x # y", 3, "unexpected character '#'"),
    ("x²", 2, "unexpected character"),
    ("x y", 3, "expected an operator, found 'y'"),
    ("(x", 3, "unbalanced parentheses: '(' at column 1"),
    ("((x)", 5, "unbalanced parentheses"),
    ("x)", 2, "unbalanced parentheses: ')'"),
    ("()", 2, "unexpected ')'"),
    ("x +", 4, "ends where an operand is expected"),
    ("* x", 1, "unexpected '*'"),
    ("x * / y", 5, "unexpected '/'"),
    ("2x", 1, "malformed number '2x'"),
    ("1e", 1, "malformed number"),
    ("1.2.3", 1, "malformed number"),
    ("x.y", 2, "'.' is not allowed in a name: 'x.y'"),
    ("a + b.c", 6, "'.' is not allowed in a name"),
    (".x", 1, "unexpected '.'"),
    ("x .foo. y", 3, "unknown operator '.foo.'"),
    ("x .not. y", 3, "unknown operator '.not.'"),
    ("foo(x)", 1, "unknown function 'foo'"),
    ("1 + exp(x, y)", 5, "takes 1 argument, got 2"),
    ("exp()", 1, "takes 1 argument, got 0"),
    ("exp", 1, "must be called"),
    ("exp(x", 6, "expected ',' or ')'"),
    ("x, y", 2, "expected an operator, found ','"),
    ("x .gt. 0", 1, "expected a number but this is a condition"),
    ("1e400", 1, "out of float64 range"),
    ("9^9^9", 2, "overflows float64"),
    ("floor(exp(exp(100)))", 7, "overflows float64"),
    ("1/0", 2, "division by zero"),
    ("x/(2 - 2)", 2, "division by zero"),
    ("log(0)", 1, "undefined"),
    ("exp(x .gt. 0)", 1, "needs a number, not a condition"),
    ("(x .gt. 0) + 1", 12, "needs a number, not a condition"),
    ("-(x .gt. 0)", 1, "needs a number"),
])
def test_expression_errors(text, column, what):
    with pytest.raises(ModelError) as info:
        P(text, file="m.nml", line=7, element="DerivedVariable")
    err = info.value
    assert what in err.message
    assert err.message.startswith(f"cannot parse expression {text!r}: ")
    assert err.message.endswith(f" at column {column}")
    assert (err.file, err.line, err.element) == ("m.nml", 7, "DerivedVariable")


@pytest.mark.parametrize("text, column, what", [
    ("x", 1, "expected a condition"),
    ("x + 1", 1, "expected a condition"),
    ("x .and. y", 3, "needs conditions on both sides"),
    ("x .gt. y .lt. z", 10, "needs a number, not a condition"),
    ("x .gt.", 7, "ends where an operand is expected"),
    (".gt. x", 1, "unexpected '.gt.'"),
])
def test_condition_errors(text, column, what):
    with pytest.raises(ModelError) as info:
        C(text)
    assert what in info.value.message
    assert info.value.message.endswith(f" at column {column}")


def test_nesting_limit_is_a_model_error_not_recursion_error():
    ok = MAX_DEPTH - 1
    assert P("(" * ok + "x" + ")" * ok) == x
    for text in ["(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1),
                 "exp(" * 2000 + "x" + ")" * 2000,
                 "-" * 5000 + "x",
                 "^".join(["x"] * 3000)]:
        with pytest.raises(ModelError, match="nested|longer than"):
            P(text)


def test_length_limit():
    with pytest.raises(ModelError, match=f"longer than {MAX_LENGTH} characters"):
        P("x+" * MAX_LENGTH + "x")


def test_deep_caller_stack_still_gives_model_error():
    # The caller may already be deep: the parser must still never leak a RecursionError.
    def descend(n):
        if n == 0:
            try:
                return P("exp(" * (MAX_DEPTH - 2) + "x" + ")" * (MAX_DEPTH - 2))
            except ModelError:
                return "model error"
        return descend(n - 1)

    assert descend(sys.getrecursionlimit() - 250) is not None


@pytest.mark.parametrize("text", ["9^9^9^9", "floor(exp(exp(100)))", "factorial(100000)",
                                  "ceil(exp(exp(exp(2))))", "2^(10^10)"])
def test_hostile_constants_fail_fast(text):
    start = time.perf_counter()
    with pytest.raises(ModelError):
        P(text)
    assert time.perf_counter() - start < 1.0


def test_long_sums_parse_quickly():
    start = time.perf_counter()
    r = P("+".join(f"x{i}" for i in range(1500)))
    assert len(r.args) == 1500
    assert time.perf_counter() - start < 2.0


# ----------------------------------------------------------------------------- safety


def test_python_code_is_not_evaluated(tmp_path):
    canary = tmp_path / "canary"
    attacks = [f"__import__('os').system('touch {canary}')",
               '__import__("os").system("x")',
               "exec('1')", "eval('1')", "lambda: 1", "x if y else z", "[x for x in y]",
               "x.__class__", "x; y", "x = 1", "{}", "x[0]", "`x`", "x @ y", "x ** 2",
               "x == y", "x && y", "x != y", "!x", "x % y", "'x'", '"x"']
    for text in attacks:
        with pytest.raises(ModelError):
            P(text)
    assert not canary.exists()


def test_no_text_evaluator_is_ever_called(monkeypatch):
    import sympy.parsing.sympy_parser as sympy_parser

    def forbidden(*args, **kwargs):
        raise AssertionError("text was handed to an evaluator")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", forbidden)
    monkeypatch.setattr(sympy_parser, "parse_expr", forbidden)  # sympify(str) goes through it
    assert P("exp(-(v + 40)/10) * sin(x)^2 + H(x) + random(1)") is not None
    assert C("x .gt. 0 .and. (y .lt. 1 .or. z .eq. 2)") is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(list("xyv019.eE+-*/^(),_ ") + list("#@!'\"[]{}é²\t")
                                + [".gt.", ".and.", ".or.", ".eq.", "exp", "H", "random", "log",
                                   "factorial", ".not."]), max_size=25).map("".join))
def test_garbage_parses_or_raises_model_error(text):
    for parse in (P, C):
        try:
            parse(text)
        except ModelError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_unicode_parses_or_raises_model_error(text):
    try:
        P(text)
    except ModelError:
        pass


# ----------------------------------------------------------------------------- property tests

# Random expression trees, printed as LEMS text twice (fully parenthesized and with the fewest
# parentheses the precedence table allows), parsed and compared with the tree evaluated directly
# in 50-digit arithmetic.

SYMBOLS = ["x", "y", "z", "v_1"]
FUNCS = {"exp": mpmath.exp, "log": mpmath.log, "sin": mpmath.sin, "cos": mpmath.cos,
         "tanh": mpmath.tanh, "sqrt": mpmath.sqrt, "abs": abs, "sinh": mpmath.sinh}
BINARY_PREC = {"+": 4, "-": 4, "*": 5, "/": 5, "^": 7}
UNARY_PREC, ATOM_PREC = 6, 9

numbers = st.one_of(st.integers(0, 30).map(str),
                    st.sampled_from(["0.5", "2.", ".25", "1e-3", "1.5E2", "3.25e+1", "0.1"]),
                    st.floats(0.01, 100, allow_nan=False).map(repr))
leaves = st.one_of(numbers.map(lambda t: ("num", t)), st.sampled_from(SYMBOLS).map(
    lambda s: ("sym", s)))


def _extend(children):
    return st.one_of(
        st.tuples(st.just("bin"), st.sampled_from(list(BINARY_PREC)), children, children),
        st.tuples(st.just("un"), st.sampled_from(["-", "+"]), children),
        st.tuples(st.just("call"), st.sampled_from(sorted(FUNCS)), children))


trees = st.recursive(leaves, _extend, max_leaves=12)


def to_full(t) -> str:
    kind = t[0]
    if kind in ("num", "sym"):
        return t[1]
    if kind == "un":
        return f"({t[1]}{to_full(t[2])})"
    if kind == "call":
        return f"{t[1]}({to_full(t[2])})"
    return f"({to_full(t[2])}{t[1]}{to_full(t[3])})"


def to_minimal(t) -> tuple[str, int]:
    """LEMS text with the fewest parentheses, and the precedence of its top operator."""
    kind = t[0]
    if kind in ("num", "sym"):
        return t[1], ATOM_PREC
    if kind == "call":
        return f"{t[1]}({to_minimal(t[2])[0]})", ATOM_PREC
    if kind == "un":
        inner, p = to_minimal(t[2])
        return t[1] + (inner if p >= UNARY_PREC else f"({inner})"), UNARY_PREC
    op, prec = t[1], BINARY_PREC[t[1]]
    (left, lp), (right, rp) = to_minimal(t[2]), to_minimal(t[3])
    if op == "^":  # right-associative and tighter than unary minus: (-x)^2, but 2^-x
        left = left if lp > prec else f"({left})"
        right = right if rp >= UNARY_PREC else f"({right})"
    else:
        left = left if lp >= prec else f"({left})"
        right = right if rp > prec else f"({right})"
    return f"{left}{op}{right}", prec


class Skip(Exception):
    pass


def evaluate(t, env, seen=None):
    """The tree's value in mpmath; ``seen`` collects every intermediate value (sympy folds
    constants at ~18 digits, so rounding scales with the largest of them)."""
    val = _evaluate(t, env, seen)
    if seen is not None:
        seen.append(abs(val))
    return val


def _evaluate(t, env, seen):
    kind = t[0]
    if kind == "num":
        return mpmath.mpf(float(t[1]))  # the parser stores the exact float64 of the literal
    if kind == "sym":
        return env[t[1]]
    if kind == "un":
        val = evaluate(t[2], env, seen)
        return -val if t[1] == "-" else val
    if kind == "call":
        val = evaluate(t[2], env, seen)
        if (t[1] in ("log", "sqrt") and val <= 0) or (t[1] == "log" and val == 0):
            raise Skip
        if t[1] in ("exp", "sinh") and abs(val) > 500:
            raise Skip
        return FUNCS[t[1]](val)
    l, r = evaluate(t[2], env, seen), evaluate(t[3], env, seen)
    if t[1] == "/" and r == 0:
        raise Skip
    if t[1] == "^":
        if l == 0 and r <= 0 or l < 0 and r != int(r) or abs(r * mpmath.log(abs(l) + 1)) > 500:
            raise Skip
        return l ** r
    return {"+": l + r, "-": l - r, "*": l * r, "/": l / r if r else None}[t[1]]


def _parse_or_skip(text):
    try:
        return P(text)
    except ModelError as err:
        # constants outside float64 (1/0, exp(exp(9)), ...) are rejected by design
        assert "constant subexpression" in err.message or "division by zero" in err.message, \
            err.message
        raise Skip from None


symbol_values = st.one_of(st.just(0.0), st.floats(1e-3, 3), st.floats(-3, -1e-3))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.lists(symbol_values, min_size=4, max_size=4))
def test_random_trees_parse_to_their_value(tree, values):
    env = {s: mpmath.mpf(val) for s, val in zip(SYMBOLS, values)}
    subs = {symbol(s): sympy.Float(val, 50) for s, val in zip(SYMBOLS, values)}
    with mpmath.workdps(50):
        seen = []
        try:
            expected = evaluate(tree, env, seen)
        except Skip:
            assume(False)
        scale = max([1, *seen])
        assume(scale < 1e8)
        for text in (to_full(tree), to_minimal(tree)[0]):
            try:
                parsed = _parse_or_skip(text)
            except Skip:
                assume(False)
            got = parsed.evalf(50, subs=subs)
            assume(got.is_number and got.is_finite)
            got = mpmath.mpc(complex(got)) if not got.is_real else mpmath.mpf(got)
            assert abs(got - expected) <= 1e-12 * scale, (text, got, expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_round_trip_minimal_and_full_parentheses_agree(tree):
    try:
        full = _parse_or_skip(to_full(tree))
        minimal = _parse_or_skip(to_minimal(tree)[0])
    except Skip:
        assume(False)
    assume(not minimal.has(sympy.zoo, sympy.nan))  # x/(x - x): sympy's zoo has no structure
    assert same(full, minimal)
    # and printing the parsed expression back to LEMS text parses to the same expression
    text = to_lems(minimal)
    assume(text is not None)
    try:  # sympy may have folded a symbolic part into a complex constant such as (-1)^(1/3)
        again = _parse_or_skip(text)
    except Skip:
        assume(False)
    assert same(again, as_doubles(minimal)), text


def same(one, two) -> bool:
    """Equal as trees, or -- where sympy's automatic simplification depends on the order it
    met the pieces in (2*(1+x)*x vs x*(2*x+2); Abs(2*Abs(x)) -> 2*Abs(Abs(x))) -- as values."""
    if one == two:
        return True
    for values in ([0.3, -1.7, 2.2, 0.9], [-2.5, 0.4, 1.1, -0.6]):
        subs = {symbol(s): sympy.Float(val, 30) for s, val in zip(SYMBOLS, values)}
        a_, b_ = one.evalf(30, subs=subs), two.evalf(30, subs=subs)
        if a_.is_finite and b_.is_finite and \
                abs(complex(a_) - complex(b_)) > 1e-12 * (1 + abs(complex(b_))):
            return False
    return True


def as_doubles(expr):
    """Constants folded at parse time carry sympy's 60-bit precision; text carries float64."""
    return expr.xreplace({f: sympy.Float(float(f), 17) for f in expr.atoms(sympy.Float)})


def to_lems(expr) -> str | None:
    """A small sympy -> LEMS printer for the round trip (fully parenthesized)."""
    if isinstance(expr, sympy.Symbol):
        return expr.name
    if isinstance(expr, sympy.Integer):
        return f"({int(expr)})" if expr < 0 else str(int(expr))
    if isinstance(expr, sympy.Rational):
        return f"({expr.p}/{expr.q})"
    if isinstance(expr, sympy.Float):
        return f"({float(expr)!r})"
    if expr is sympy.E:
        return "exp(1)"
    names = {sympy.exp: "exp", sympy.log: "log", sympy.sin: "sin", sympy.cos: "cos",
             sympy.tanh: "tanh", sympy.sinh: "sinh", sympy.Abs: "abs"}
    if expr.func in names:
        inner = to_lems(expr.args[0])
        return None if inner is None else f"{names[expr.func]}({inner})"
    parts = [to_lems(arg) for arg in expr.args]
    if any(p is None for p in parts):
        return None
    if isinstance(expr, sympy.Add):
        return "(" + "+".join(parts) + ")"
    if isinstance(expr, sympy.Mul):
        return "(" + "*".join(parts) + ")"
    if isinstance(expr, sympy.Pow):
        return f"({parts[0]}^{parts[1]})"
    return None  # zoo, nan, I, ...: not LEMS
