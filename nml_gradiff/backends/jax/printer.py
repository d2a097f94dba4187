"""sympy expressions -> ``jax.numpy`` expression text.

The printed code runs under ``jit``, ``vmap`` and ``grad``, so:

* no Python control flow: ``Piecewise`` becomes nested ``jnp.where``, boolean operators
  ``jnp.logical_and``/``_or``/``_not``;
* the safe functions of the IR print as calls to :mod:`nml_gradiff.backends.jax.runtime`
  (``rt.exprelr``, ``rt.exprelr_prime``), which are finite *and have finite gradients*
  everywhere (a Taylor branch selected with the double-``where`` trick);
* integer powers stay integer (``x**3``: JAX's ``integer_pow``, exact and differentiable at
  0); a half power prints as ``jnp.sqrt``;
* numbers print as the shortest text that reads back to the same float64 (``repr``);
  rationals as their float value, so ``1/3`` is never an integer division.

``Random`` (LEMS ``random``) has no place in a deterministic, differentiable step and is
refused with :class:`~nml_gradiff.errors.UnsupportedError`; so are higher derivatives of
ExpRelr, which only a second-order sensitivity would need.
"""

from __future__ import annotations

import keyword

import sympy
from sympy.printing.precedence import precedence
from sympy.printing.pycode import PythonCodePrinter

from ...errors import UnsupportedError

__all__ = ["JaxPrinter", "py_name", "RESERVED"]

#: Names the generated module uses itself; model symbols with these names get a ``_``.
RESERVED = frozenset({"jnp", "np", "jax", "lax", "rt", "p", "state", "params",
                      "s", "out"})


def py_name(name: str) -> str:
    """A model symbol name as a Python identifier that cannot shadow anything we use."""
    if keyword.iskeyword(name) or name in RESERVED or name.startswith("_"):
        return f"{name}_"
    return name


class JaxPrinter(PythonCodePrinter):
    """Prints one expression; ``names`` maps sympy symbol names to Python text."""

    printmethod = "_jaxcode"

    def __init__(self, names: dict[str, str] | None = None):
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self.names = names or {}

    def doprint(self, expr, assign_to=None):
        # Non-integer rationals as floats first, so products print as 0.5*x, not (1/2)*x.
        if isinstance(expr, sympy.Basic):
            expr = expr.xreplace({q: sympy.Float(float(q), 17) for q in expr.atoms(sympy.Rational)
                                  if not q.is_Integer})
        return super().doprint(expr, assign_to)

    def _module_format(self, fqn, register=True):
        # math.exp / numpy.exp -> jnp.exp
        return "jnp." + fqn.split(".")[-1]

    # ---- atoms ---------------------------------------------------------------------------

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, py_name(expr.name))

    _print_Dummy = _print_Symbol

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        if expr.q == 1:
            return str(expr.p)
        return repr(float(expr))

    _print_Half = _print_Rational

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"

    def _print_Exp1(self, expr):
        return "jnp.e"

    def _print_Pi(self, expr):
        return "jnp.pi"

    # ---- arithmetic ----------------------------------------------------------------------

    def _print_Pow(self, expr, rational=False):
        base, e = expr.args
        if e == sympy.S.Half:
            return f"jnp.sqrt({self._print(base)})"
        if e == -sympy.S.Half:
            return f"1/jnp.sqrt({self._print(base)})"
        b = self.parenthesize(base, precedence(expr), strict=True)
        if e.is_Integer:
            if e >= 0:
                return f"{b}**{int(e)}"
            return f"1/{b}" if e == -1 else f"1/{b}**{-int(e)}"
        return f"{b}**{self.parenthesize(e, precedence(expr), strict=True)}"

    def _print_Min(self, expr):
        return self._fold("jnp.minimum", expr.args)

    def _print_Max(self, expr):
        return self._fold("jnp.maximum", expr.args)

    def _fold(self, fn: str, args) -> str:
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_sign(self, expr):
        return f"jnp.sign({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        h0 = expr.args[1] if len(expr.args) > 1 else sympy.S.Half
        return f"jnp.heaviside({self._print(expr.args[0])}, {self._print(h0)})"

    # ---- logic ---------------------------------------------------------------------------

    def _print_Piecewise(self, expr):
        *cases, (last, cond) = expr.args
        out = self._print(last) if cond == sympy.true else (
            f"jnp.where({self._print(cond)}, {self._print(last)}, jnp.nan)")
        for value, c in reversed(cases):
            out = f"jnp.where({self._print(c)}, {self._print(value)}, {out})"
        return out

    def _print_Relational(self, expr):
        ops = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
        lhs = self.parenthesize(expr.lhs, precedence(expr))
        rhs = self.parenthesize(expr.rhs, precedence(expr))
        return f"({lhs} {ops[expr.rel_op]} {rhs})"

    def _print_And(self, expr):
        return self._fold("jnp.logical_and", expr.args)

    def _print_Or(self, expr):
        return self._fold("jnp.logical_or", expr.args)

    def _print_Not(self, expr):
        return f"jnp.logical_not({self._print(expr.args[0])})"

    # ---- the IR's special functions ------------------------------------------------------

    def _print_ExpRelr(self, expr):
        return f"rt.exprelr({self._print(expr.args[0])})"

    def _print_ExpRelrPrime(self, expr):
        return f"rt.exprelr_prime({self._print(expr.args[0])})"

    def _print_ExpRelrDerivative(self, expr):
        raise UnsupportedError("second derivatives of ExpRelr in the JAX backend")

    def _print_Random(self, expr):
        raise UnsupportedError(f"random({self._print(expr.args[0])}) in the JAX backend: "
                               "a random draw has no place in a differentiable step")

    def _print_Function(self, expr):
        name = type(expr).__name__
        known = {"exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
                 "tanh", "floor", "ceiling", "Abs", "erf", "erfc", "atan2"}
        if name not in known:
            raise UnsupportedError(f"function {name}() in the JAX backend")
        return super()._print_Function(expr)

    def emptyPrinter(self, expr):
        raise UnsupportedError(f"cannot print {type(expr).__name__} for JAX: {expr}")
