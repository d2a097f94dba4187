"""``nml-gradiff run``: simulate a LEMS simulation with a backend and write its outputs.

Backends return :class:`Traces`; this module writes them where the LEMS file declares
(``OutputFile``/``EventOutputFile`` paths under the output folder, jNeuroML's format) and,
when sensitivities were asked for, ``X.sens.npz`` beside each ``X.dat``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..ingest.overrides import apply_overrides
from ..ingest.simulation import load_simulation
from ..ir.simulation import Simulation
from .outputs import output_path, write_columns, write_events

#: backend name -> module providing ``simulate(model, sim, params, workdir) -> Traces``
BACKENDS = {"neuron": "nml_gradiff.backends.neuron.run", "jax": "nml_gradiff.backends.jax.run"}


@dataclass
class Traces:
    """What a backend recorded, keyed by the quantity paths as written in the LEMS file."""

    t_ms: np.ndarray
    values: dict[str, np.ndarray]                        # quantity -> values in SI
    spikes: dict[str, list[float]] = field(default_factory=dict)  # select -> times (ms)
    params: list[str] = field(default_factory=list)      # parameter paths of sens
    sens: dict[str, np.ndarray] = field(default_factory=dict)     # quantity -> [T, P]


def backend(name: str):
    if name not in BACKENDS:
        raise ModelError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        raise ModelError(f"the {name} backend needs a package that is not installed "
                         f"({exc.name}); install nml-gradiff[{name}]") from None


def write_outputs(sim: Simulation, traces: Traces, out_dir: Path) -> list[Path]:
    written = []
    t_s = traces.t_ms * 1e-3
    for out in sim.outputs:
        path = output_path(out_dir, out.path, source=sim.source_file)
        write_columns(path, t_s, [traces.values[c.quantity.text] for c in out.columns])
        written.append(path)
        if traces.params:
            written.append(_write_sens(path, out, traces))
    for ev in sim.event_outputs:
        path = output_path(out_dir, ev.path, source=sim.source_file)
        events = [(sel.id, t * 1e-3) for sel in ev.selections
                  for t in traces.spikes.get(sel.select.text, [])]
        write_events(path, ev.format, events)
        written.append(path)
    return written


def _write_sens(dat: Path, out, traces: Traces) -> Path:
    """``X.sens.npz``: t [T], quantities [Q], params [P], values [T,Q], sens [T,Q,P]."""
    quantities = [c.quantity.text for c in out.columns]
    target = dat.with_suffix(".sens.npz")
    np.savez(target, t=traces.t_ms * 1e-3, quantities=np.array(quantities),
             params=np.array(traces.params),
             values=np.stack([traces.values[q] for q in quantities], axis=1),
             sens=np.stack([traces.sens[q] for q in quantities], axis=1))
    return target


def run_lems(path: Path, backend_name: str, out_dir: Path | None = None, *,
             overrides=(), param_globs=(), include_dirs=(), allow_outside=False,
             backend_options: dict | None = None) -> list[Path]:
    """Load, simulate with ``backend_name``, write the declared outputs; returns the files.
    ``backend_options``: keyword arguments of that backend's ``simulate`` (e.g. the NEURON
    backend's ``integration``)."""
    model, sim = load_simulation(path, include_dirs=include_dirs, allow_outside=allow_outside)
    apply_overrides(model, list(overrides))
    params = model.select_paths(list(param_globs))
    traces = backend(backend_name).simulate(model, sim, params, **(backend_options or {}))
    return write_outputs(sim, traces, Path(out_dir) if out_dir else Path(path).parent)
