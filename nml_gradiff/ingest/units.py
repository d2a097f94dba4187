"""LEMS ``<Dimension>``/``<Unit>`` definitions and quantity text such as ``-65 mV``.

A :class:`UnitSystem` holds the dimensions and units in scope: the NeuroML standard set
(:meth:`UnitSystem.standard`, read from the NeuroMLCoreDimensions.xml inside pyneuroml's
jNeuroML jar) plus whatever a model defines itself.  :meth:`UnitSystem.parse_quantity` turns
attribute text into a :class:`Quantity` in SI, as LEMS does; the IR's internal units are one
call away (:attr:`Quantity.internal`, :func:`format_internal`).

Rules, following jLEMS (the reference LEMS interpreter) where it has one:

* ``SI = number * scale * 10**power + offset``.  jLEMS and pyLEMS agree on this only when a
  unit with an offset has scale 1 and power 0 (jLEMS computes ``(number + offset) * scale *
  10**power``), so a unit with both an offset and a factor is rejected as unsupported.
* A plain number is dimensionless.  For a parameter with a dimension it is an error, zero
  included: jLEMS (``ParamValue.setValue``) raises "Can't set parameter ... with string 0".
  The expected dimension ``*`` (LEMS "any") takes the number as it is.
* Redefining a dimension or unit is fine when the meaning is the same (models often repeat the
  standard definitions) and an error otherwise.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal
from dataclasses import dataclass

from lxml import etree

from ..errors import ModelError, UnsupportedError
from ..ir.units import (BASES, DIMENSIONLESS, Dimension, internal_unit, multiply_by_scale,
                        to_internal)
from .coretypes import core_file, jar_path

#: The dimension name LEMS uses for "any dimension" (e.g. in ``<Property dimension="*">``).
ANY = "*"
CORE_DIMENSIONS_MEMBER = "NeuroML2CoreTypes/NeuroMLCoreDimensions.xml"

# number, optional spaces, optional unit symbol (which must start like an identifier, so that
# "1.5.2mV" is "not a number" rather than an unknown unit ".2mV").
_QUANTITY = re.compile(
    r"\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"\s*(?P<unit>[A-Za-z_].*?)?\s*")


@dataclass(frozen=True)
class Unit:
    """A LEMS unit: ``SI = number * scale * 10**power + offset``."""

    symbol: str
    dimension: Dimension
    power: int = 0
    scale: float = 1.0
    offset: float = 0.0

    def to_si(self, number: float) -> float:
        # multiply_by_scale is exact-rounding for powers of ten (see ir.units)
        return multiply_by_scale(number * self.scale, 10.0 ** self.power) + self.offset

    @property
    def factor(self) -> float:
        return self.scale * 10.0 ** self.power

    def same_meaning(self, other: "Unit") -> bool:
        return (self.dimension == other.dimension
                and math.isclose(self.factor, other.factor, rel_tol=1e-12)
                and math.isclose(self.offset, other.offset, rel_tol=1e-12))


@dataclass(frozen=True)
class Quantity:
    """A parsed quantity: its value in SI and its dimension."""

    si: float
    dimension: Dimension
    exact_internal: float | None = None     # see _decimal_internal

    @property
    def internal(self) -> float:
        """The value in the internal (NEURON) unit of its dimension."""
        if self.exact_internal is not None:
            return self.exact_internal
        return to_internal(self.si, self.dimension)

    @property
    def internal_symbol(self) -> str:
        return internal_unit(self.dimension).symbol


def format_internal(si_value: float, dim: Dimension) -> tuple[float, str]:
    """SI value → ``(internal value, internal unit symbol)``, e.g. ``(-65.0, "mV")``."""
    return to_internal(si_value, dim), internal_unit(dim).symbol


class UnitSystem:
    """The dimensions and units in scope for one model."""

    def __init__(self):
        # "none" is built into LEMS: the core definitions use it without declaring it.
        self._dimensions: dict[str, Dimension] = {"none": DIMENSIONLESS}
        self._units: dict[str, Unit] = {}

    def copy(self) -> "UnitSystem":
        new = UnitSystem()
        new._dimensions = dict(self._dimensions)
        new._units = dict(self._units)
        return new

    @classmethod
    def standard(cls) -> "UnitSystem":
        """The NeuroML2 standard dimensions and units (a fresh copy each call)."""
        return _standard_system().copy()

    # ---- definitions -------------------------------------------------------------------

    def add_dimension(self, name: str, m=0, l=0, t=0, i=0, k=0, n=0, j=0, *,
                      file=None, line=None) -> Dimension:
        dim = Dimension.of(name, m=m, l=l, t=t, i=i, k=k, n=n, j=j)
        old = self._dimensions.get(name)
        if old is not None and old != dim:
            raise ModelError(f"dimension '{name}' redefined as {dim.exponent_string()}, "
                             f"was {old.exponent_string()}", file=file, line=line,
                             element="Dimension")
        self._dimensions.setdefault(name, dim)
        return self._dimensions[name]

    def add_unit(self, symbol: str, dimension_name: str, power: int = 0, scale: float = 1.0,
                 offset: float = 0.0, *, file=None, line=None) -> Unit:
        where = {"file": file, "line": line, "element": "Unit"}
        if dimension_name not in self._dimensions:
            raise ModelError(f"unit '{symbol}' refers to unknown dimension '{dimension_name}'",
                             **where)
        if not math.isfinite(scale) or scale == 0 or not math.isfinite(offset):
            raise ModelError(f"unit '{symbol}' has scale {scale} and offset {offset}", **where)
        unit = Unit(symbol, self._dimensions[dimension_name], int(power), float(scale),
                    float(offset))
        if offset != 0 and unit.factor != 1:
            raise UnsupportedError(
                f"unit '{symbol}' has both an offset and a scale/power; jLEMS applies the "
                "offset before scaling and pyLEMS after, so its meaning is ambiguous", **where)
        old = self._units.get(symbol)
        if old is not None and not old.same_meaning(unit):
            raise ModelError(f"unit '{symbol}' redefined as {_describe_unit(unit)}, was "
                             f"{_describe_unit(old)}", **where)
        self._units.setdefault(symbol, unit)
        return self._units[symbol]

    def add_from_lems(self, element) -> bool:
        """Add a ``<Dimension>`` or ``<Unit>`` element; False (and nothing added) for any
        other element, so callers can offer every child of ``<Lems>``."""
        kind = etree.QName(element).localname if isinstance(element.tag, str) else None
        where = {"file": element.base, "line": element.sourceline}
        if kind == "Dimension":
            name = _required(element, "name", kind, where)
            exps = {b: _attribute(element, b, int, 0, kind, where) for b in BASES}
            self.add_dimension(name, **exps, **where)
        elif kind == "Unit":
            self.add_unit(_required(element, "symbol", kind, where),
                          _required(element, "dimension", kind, where),
                          _attribute(element, "power", int, 0, kind, where),
                          _attribute(element, "scale", float, 1.0, kind, where),
                          _attribute(element, "offset", float, 0.0, kind, where), **where)
        else:
            return False
        return True

    def add_definitions(self, root) -> None:
        """Add every Dimension, then every Unit, among the children of ``root`` (units may
        come before the dimensions they use)."""
        children = [c for c in root if isinstance(c.tag, str)]
        for wanted in ("Dimension", "Unit"):
            for child in children:
                if etree.QName(child).localname == wanted:
                    self.add_from_lems(child)

    # ---- look-ups ----------------------------------------------------------------------

    @property
    def dimensions(self) -> dict[str, Dimension]:
        return dict(self._dimensions)

    @property
    def units(self) -> dict[str, Unit]:
        return dict(self._units)

    def dimension(self, name: str) -> Dimension:
        try:
            return self._dimensions[name]
        except KeyError:
            raise ModelError(f"unknown dimension '{name}'") from None

    def unit(self, symbol: str) -> Unit:
        try:
            return self._units[symbol]
        except KeyError:
            raise ModelError(f"unknown unit '{symbol}'") from None

    def name_of(self, dim: Dimension) -> str:
        """A readable name for ``dim``: its own, a defined dimension's with the same
        exponents, or the SI symbol; "dimensionless" for no dimension."""
        if dim.is_dimensionless:
            return "dimensionless"
        if dim.name in self._dimensions and self._dimensions[dim.name] == dim:
            return dim.name
        same = [name for name, d in self._dimensions.items() if d == dim]
        return same[0] if same else str(dim)

    # ---- quantities --------------------------------------------------------------------

    def parse_quantity(self, text: str, expected: str | Dimension | None = None, *,
                       file=None, line=None, element=None) -> Quantity:
        """Parse ``-65mV``, ``-65 mV``, ``+1e-3``, ``37degC`` ... into SI.

        ``expected`` (a dimension name, a Dimension, ``"*"`` for any, or None for no check)
        is checked; when given, the result carries that Dimension (and so its name).
        """
        where = {"file": file, "line": line, "element": element}
        match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
        number = float(match["number"]) if match else math.nan
        if not math.isfinite(number):
            raise ModelError(f"'{text}' is not a number with an optional unit", **where)
        symbol = match["unit"]
        if symbol is None:
            quantity = Quantity(number, DIMENSIONLESS)
        elif symbol in self._units:
            unit = self._units[symbol]
            quantity = Quantity(unit.to_si(number), unit.dimension,
                                _decimal_internal(match["number"], unit))
        else:
            raise ModelError(f"unknown unit '{symbol}' in '{text.strip()}'", **where)
        return self._check(quantity, text.strip(), symbol is not None, expected, where)

    def _check(self, quantity: Quantity, text: str, has_unit: bool, expected, where) -> Quantity:
        if expected is None or expected == ANY:
            return quantity
        try:
            want = self.dimension(expected) if isinstance(expected, str) else expected
        except ModelError as err:
            raise err.located(**where)
        if quantity.dimension == want:
            return Quantity(quantity.si, want, quantity.exact_internal)
        if not has_unit:
            raise ModelError(f"'{text}' has no unit, expected {self.name_of(want)} "
                             "(a plain number is dimensionless)", **where)
        raise ModelError(f"'{text}' is a {self.name_of(quantity.dimension)}, expected "
                         f"{self.name_of(want)}", **where)


# ---- helpers ---------------------------------------------------------------------------

def _decimal_internal(number: str, unit: Unit) -> float | None:
    """The internal value straight from the decimal text, when both units are powers of ten.

    Going through SI rounds twice: "10pS" is the double nearest 1e-11 S, which times 1e6
    gives 9.999999999999999e-06 uS.  Shifting the decimal exponent gives exactly 1e-05.
    """
    target = internal_unit(unit.dimension)
    if (unit.scale * 10.0 ** unit.power, unit.offset) == (target.scale, target.offset):
        return float(number)          # the internal unit itself (degC, ms, mV, ...)
    k = _power_of_ten(target.scale)
    if unit.scale != 1.0 or unit.offset or target.offset or k is None:
        return None
    return float(Decimal(number).scaleb(unit.power - k))


def _power_of_ten(scale: float) -> int | None:
    k = round(math.log10(scale)) if scale > 0 else None
    return k if k is not None and 10.0 ** k == scale else None


def _describe_unit(unit: Unit) -> str:
    offset = f" + {unit.offset:g}" if unit.offset else ""
    return f"{unit.factor:g}{offset} SI {unit.dimension.exponent_string()}"


def _required(element, name: str, kind: str, where: dict) -> str:
    value = element.get(name)
    if value is None or not value.strip():
        raise ModelError(f"<{kind}> without a '{name}' attribute", element=kind, **where)
    return value.strip()


def _attribute(element, name: str, convert, default, kind: str, where: dict):
    text = element.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = convert(text.strip())
    except ValueError:
        raise ModelError(f"{name}='{text}' is not {'an integer' if convert is int else 'a number'}",
                         element=kind, **where) from None
    if not math.isfinite(value):
        raise ModelError(f"{name}='{text}' is not a finite number", element=kind, **where)
    return value


@functools.lru_cache(maxsize=1)
def _standard_system() -> UnitSystem:
    """Parsed once per process; callers get copies (UnitSystem is mutable)."""
    # the CoreTypes' copy of the member (read from the jar once, cached on disk)
    jar = jar_path()
    data = core_file(CORE_DIMENSIONS_MEMBER.rsplit("/", 1)[1])[1]
    # Hardened even for our own dependency's file: no entities, no network, no huge trees.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    root = etree.fromstring(data, parser, base_url=f"{jar}!/{CORE_DIMENSIONS_MEMBER}")
    system = UnitSystem()
    system.add_definitions(root)
    return system
