"""``--set PATH=VALUE``: change parameter values of a loaded model (IR -> IR)."""

from __future__ import annotations

import math
import re

from ..errors import ModelError
from ..ir.model import Model
from .units import UnitSystem

_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def parse_assignment(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ModelError(f"--set expects PATH=VALUE, got {text!r}")
    path, value = text.split("=", 1)
    return path.strip(), value.strip()


def internal_value(value: str, dimension: str, units: UnitSystem) -> float:
    """A plain number is in the internal unit ``inspect --params`` prints; a NeuroML
    quantity (``120mS_per_cm2``) is converted from its own unit."""
    dim = units.dimension(dimension or "none")
    if _NUMBER.match(value):
        number = float(value)
    else:
        number = units.parse_quantity(value, dim).internal   # as ingest reads the file
    if not math.isfinite(number):
        raise ModelError(f"value {value!r} is not a finite number")
    return number


def apply_overrides(model: Model, assignments: list[str],
                    units: UnitSystem | None = None) -> None:
    units = units or UnitSystem.standard()
    by_path = {p.path: p for p in model.parameters()}
    for text in assignments:
        path, value = parse_assignment(text)
        if path not in by_path:
            raise ModelError(f"--set: no parameter '{path}' (see `nml-gradiff inspect "
                             "FILE --params` for the paths)")
        param = by_path[path]
        try:
            param.value = internal_value(value, param.dimension, units)
        except ModelError as exc:       # name the option: the value alone does not say which
            raise ModelError(f"--set {path}={value}: {exc.message}") from None

