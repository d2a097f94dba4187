"""What one model file defines, as the rest of the compiler sees it."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .mechanism import Mechanism, Parameter


@dataclass
class CellOutline:
    """A morphological cell as far as the foundation reads it (counts, not geometry)."""

    id: str
    component_type: str
    segments: int
    segment_groups: int
    source: str | None = None


@dataclass
class Skipped:
    """A top-level component that is not a mechanism (network, simulation, ...)."""

    id: str | None
    component_type: str


@dataclass
class Unsupported:
    """A top-level component nml-gradiff cannot turn into equations (yet), and why.

    The rest of the model still loads; a backend that needs this component refuses the
    model with ``reason``."""

    id: str | None
    component_type: str
    reason: str


@dataclass
class Model:
    source: str
    mechanisms: dict[str, Mechanism] = field(default_factory=dict)
    cells: dict[str, CellOutline] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)

    def parameters(self) -> list[Parameter]:
        """Every tunable parameter, in a stable order (mechanism, then declaration)."""
        return [p for m in self.mechanisms.values() for p in m.parameters.values()]

    def select(self, patterns: list[str]) -> list[Parameter]:
        """Parameters whose path matches any shell-style glob; unmatched patterns are errors
        for the caller to report (see :func:`unmatched`)."""
        return [p for p in self.parameters()
                if any(fnmatch.fnmatchcase(p.path, pat) for pat in patterns)]

    def unmatched(self, patterns: list[str]) -> list[str]:
        paths = [p.path for p in self.parameters()]
        return [pat for pat in patterns if not fnmatch.filter(paths, pat)]
