"""Writing a simulation's declared outputs the way jNeuroML writes them.

``OutputFile``: one line per time step, the time then one column per ``OutputColumn``,
whitespace-separated, in SI units (s, V, A, mol/m3, ...).  ``EventOutputFile``: one line per
event, ``time id`` (TIME_ID) or ``id time`` (ID_TIME), times in seconds.  Existing OSB
tests and user scripts read these unchanged.

Paths come from the model file, so they are checked: a declared path must stay inside the
output folder; folders are created as needed (jNeuroML fails when ``results/`` is missing);
each file is written to a temporary name and renamed, so no half-written file is left.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ModelError

#: Enough digits that a float64 reads back exactly.
FLOAT_FORMAT = "%.17g"


def output_path(out_dir: Path, declared: str, *, source: str | None = None) -> Path:
    """``out_dir / declared``, refusing absolute paths and paths that leave ``out_dir``."""
    rel = Path(declared)
    if rel.is_absolute():
        raise ModelError(f"output file {declared!r} is an absolute path", file=source)
    root = out_dir.resolve()
    target = (root / rel).resolve()
    if root != target and root not in target.parents:
        raise ModelError(f"output file {declared!r} would be written outside {root}",
                         file=source)
    return target


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_columns(path: Path, t_seconds: np.ndarray, columns: list[np.ndarray]) -> None:
    """An OutputFile: time (s) then each column (SI)."""
    table = np.column_stack([np.asarray(t_seconds, dtype=float)]
                            + [np.asarray(c, dtype=float) for c in columns])
    _atomic_write(path, lambda fh: np.savetxt(fh, table, fmt=FLOAT_FORMAT, delimiter="\t"))


def write_events(path: Path, fmt: str, events: list[tuple[str, float]]) -> None:
    """An EventOutputFile: ``events`` are (selection id, time in s), written in time order."""
    ordered = sorted(events, key=lambda e: (e[1], e[0]))

    def write(fh):
        for ident, time in ordered:
            t = FLOAT_FORMAT % time
            fh.write(f"{t}\t{ident}\n" if fmt == "TIME_ID" else f"{ident}\t{t}\n")
    _atomic_write(path, write)
