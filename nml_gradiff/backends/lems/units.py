"""LEMS names for the dimensions and units of emitted quantities.

The emitted Dynamics compute in the IR's internal units (NEURON's: mV, ms, S/cm2, ...) as
plain numbers, and convert at the boundary: a quantity ``q`` of dimension D is declared with
D (so jLEMS checks it and writes it in SI) and read as ``q / U`` where the Constant ``U`` is
one internal unit of D.  Sensitivities ``d x / d theta`` have the dimension
``dim(x) / dim(theta)`` and the internal unit ``unit(x) / unit(theta)``.

Where the NeuroML core types (NeuroMLCoreDimensions.xml) name a dimension or a unit with the
right exponents and scale, that name is used; otherwise one is defined in the emitted file
(``nmlg_...``), built from the SI exponents, so every name resolves whatever the model did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from ...errors import UnsupportedError
from ...ingest.units import UnitSystem
from ...ir import units as ir_units
from ...ir.units import Dimension, InternalUnit, internal_unit

__all__ = ["LemsUnit", "UnitTable", "dimension_of_unit"]


@lru_cache(maxsize=1)
def _internal_by_symbol() -> dict[str, Dimension]:
    out: dict[str, Dimension] = {}
    for value in vars(ir_units).values():
        if isinstance(value, Dimension):
            out.setdefault(internal_unit(value).symbol, value)
    return out


def dimension_of_unit(symbol: str) -> Dimension:
    """The dimension whose internal unit is ``symbol`` (as the IR writes units)."""
    dim = _internal_by_symbol().get(symbol)
    if dim is None:
        raise UnsupportedError(f"internal unit '{symbol}' has no known dimension for LEMS")
    return dim


@dataclass(frozen=True)
class LemsUnit:
    """One internal unit as LEMS sees it: the dimension's name and the unit's symbol."""

    dimension: str
    symbol: str
    scale: float            # SI per internal unit
    offset: float = 0.0     # SI value of internal zero (degC: 273.15 K)


class UnitTable:
    """Names in use, and the Dimension/Unit definitions the file must add for the rest."""

    def __init__(self):
        self.standard = UnitSystem.standard()
        self.new_dimensions: dict[str, Dimension] = {}
        self.new_units: dict[str, tuple[str, int, float]] = {}   # symbol -> dim, power, scale

    def dimension_name(self, dim: Dimension) -> str:
        if dim.is_dimensionless:
            return "none"
        for name, known in self.standard.dimensions.items():
            if known == dim:
                return name
        name = "nmlg_" + dim.si_symbol()
        self.new_dimensions[name] = dim
        return name

    def unit(self, dim: Dimension, scale: float) -> LemsUnit:
        """The LEMS unit worth ``scale`` SI units of ``dim`` (no offset)."""
        dname = self.dimension_name(dim)
        if dim.is_dimensionless and scale == 1.0:
            return LemsUnit("none", "", 1.0)
        for sym, u in self.standard.units.items():
            if (u.dimension == dim and not u.offset
                    and math.isclose(u.factor, scale, rel_tol=1e-12)):
                return LemsUnit(dname, sym, scale)
        power = round(math.log10(scale))
        rest = scale / 10.0 ** power
        sym = f"nmlg_{dim.si_symbol() or 'one'}_e{power}".replace("-", "m")
        if not math.isclose(rest, 1.0, rel_tol=1e-12):
            sym += f"_x{len(self.new_units)}"
        self.new_units[sym] = (dname, power, rest)
        return LemsUnit(dname, sym, scale)

    def internal(self, dim: Dimension) -> LemsUnit:
        """The internal unit of ``dim``; a unit with an offset (degC) only if the core
        types define it (a state or sensitivity never has one: see emit.py)."""
        iu: InternalUnit = internal_unit(dim)
        if not iu.offset:
            return self.unit(dim, iu.scale)
        for sym, u in self.standard.units.items():
            if (u.dimension == dim and math.isclose(u.offset, iu.offset, rel_tol=1e-12)
                    and math.isclose(u.factor, iu.scale, rel_tol=1e-12)):
                return LemsUnit(self.dimension_name(dim), sym, iu.scale, iu.offset)
        raise UnsupportedError(f"no LEMS unit for {iu.symbol} (a unit with an offset)")
