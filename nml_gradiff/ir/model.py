"""What one model file defines, as the rest of the compiler sees it."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from ..errors import ModelError
from .cell import Cell
from .mechanism import Mechanism, Parameter


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
    cells: dict[str, Cell] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)

    def parameters(self) -> list[Parameter]:
        """Every tunable parameter, in a stable order: mechanisms, then cells, each in
        declaration order."""
        return ([p for m in self.mechanisms.values() for p in m.parameters.values()]
                + [p for c in self.cells.values() for p in c.parameters])

    def select(self, patterns: list[str]) -> list[Parameter]:
        """Parameters whose path matches any shell-style glob; unmatched patterns are errors
        for the caller to report (see :func:`unmatched`)."""
        return [p for p in self.parameters()
                if any(fnmatch.fnmatchcase(p.path, pat) for pat in patterns)]

    def select_paths(self, patterns: list[str]) -> list[str]:
        """``--params``: the paths matching the globs, in the model's order; a glob that
        matches nothing is an error."""
        missing = self.unmatched(patterns)
        if missing:
            raise ModelError("--params: no parameter matches " + ", ".join(map(repr, missing)))
        return [p.path for p in self.select(patterns)]

    def unmatched(self, patterns: list[str]) -> list[str]:
        paths = [p.path for p in self.parameters()]
        return [pat for pat in patterns if not fnmatch.filter(paths, pat)]
