"""Target traces for ``tune --target-trace FILE``.

A target is a file in the format ``run`` writes (jNeuroML's): a time column in seconds, then
one column per quantity in SI units, whitespace-separated.  It stands for one ``OutputFile``
of the simulation: the one with the same file name, or else the only one with as many
columns.  Its values are interpolated onto the simulation's time grid and converted to the
internal units the backends compute in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..ir.simulation import OutputFile, Simulation


@dataclass
class Target:
    file: Path
    keys: list[str]                   # "<OutputFile id>/<OutputColumn id>", one per column
    t_ms: np.ndarray                  # the file's own times
    values_si: np.ndarray             # [rows, columns]

    def on_grid(self, t_ms: np.ndarray, scales: dict[str, float]) -> dict[str, np.ndarray]:
        """key -> values at ``t_ms`` in internal units (``scales``: internal -> SI)."""
        if t_ms[0] < self.t_ms[0] - 1e-9 or t_ms[-1] > self.t_ms[-1] + 1e-9:
            raise ModelError(f"the target covers {self.t_ms[0]:g}..{self.t_ms[-1]:g} ms, the "
                             f"simulation {t_ms[0]:g}..{t_ms[-1]:g} ms", file=self.file)
        return {k: np.interp(t_ms, self.t_ms, self.values_si[:, i]) / scales[k]
                for i, k in enumerate(self.keys)}


def _read_table(path: Path) -> np.ndarray:
    try:
        table = np.loadtxt(path, ndmin=2, dtype=float)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the target trace: {e}", file=path) from None
    if table.shape[0] < 2 or table.shape[1] < 2:
        raise ModelError("a target trace needs a time column and at least one value column, "
                         "on two or more lines", file=path)
    if not np.all(np.isfinite(table)) or np.any(np.diff(table[:, 0]) <= 0):
        raise ModelError("the target trace must be finite with increasing times", file=path)
    return table


def _matching_output(path: Path, sim: Simulation, columns: int) -> OutputFile:
    named = [o for o in sim.outputs if Path(o.path).name == path.name]
    if len(named) == 1:
        chosen = named[0]
    else:
        sized = [o for o in sim.outputs if len(o.columns) == columns]
        if len(sized) != 1:
            declared = ", ".join(f"{o.path} ({len(o.columns)} columns)" for o in sim.outputs)
            raise ModelError(f"cannot tell which output file the target stands for: name it "
                             f"like one of {declared or 'no output files'}", file=path)
        chosen = sized[0]
    if len(chosen.columns) != columns:
        raise ModelError(f"the target has {columns} value columns, {chosen.path} has "
                         f"{len(chosen.columns)}", file=path)
    return chosen


def read_target(path, sim: Simulation) -> Target:
    path = Path(path)
    if not path.is_file():
        raise ModelError("target trace not found", file=path)
    table = _read_table(path)
    output = _matching_output(path, sim, table.shape[1] - 1)
    keys = [f"{output.id}/{c.id}" for c in output.columns]
    return Target(path, keys, table[:, 0] * 1e3, table[:, 1:])
