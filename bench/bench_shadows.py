"""Cost of NEURON's shadow cells (issue 5, item 6): primal alone against primal + P shadows.

For each cell, the same LEMS simulation (same dt, same simulated time) is planned without
sensitivities and with P = 1, 4, 12 parameters (one shadow cell per parameter,
docs/neuron-gradients.md), each plan's mods compiled once (build cache), then every
configuration is run ``--repeat`` times in its own ``nml_gradiff.backends.neuron.runner``
subprocess, the configurations alternating within each repeat so that a change of machine
load hits all of them alike.  The time is what the runner reports around ``continuerun``
(building the cells, loading the library and saving excluded): wall time and CPU time
(``time.process_time``; on a loaded machine wall time is mostly waiting for a core).
Each sensitivity run is checked to return [T, P] sensitivities.

The target (issue 5) is primal + P shadows <= (1 + 0.7 P) x primal alone.

Cells: ``hh`` = models/hh/LEMS_hh.xml (one compartment, dt 0.01 ms, 1000 ms simulated by
default); ``tree`` = bench/models/LEMS_hh_tree.xml (128 compartments in 16 branches,
dt 0.025 ms, 200 ms simulated by default).  Parameters: conductance densities first, then
reversal potentials and (HH) gate-rate midpoints, see :data:`CELLS`.

Usage: python bench/bench_shadows.py [--repeat N] [--cells hh tree] [--length MS] [--md FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_neuron import Row, machine, report, timed, uptime  # noqa: E402  (bench/ is not a package)

P_VALUES = (1, 4, 12)


@dataclass(frozen=True)
class Case:
    lems: Path
    include_dirs: tuple[Path, ...]
    length_ms: float            # default simulated time
    params: tuple[str, ...]     # the first P are the parameters of the run with P shadows


def _hh_params() -> tuple[str, ...]:
    cell = [f"hh_cell/{d}/{a}" for a in ("condDensity", "erev")
            for d in ("naChans", "kChans", "leak")]
    rates = [f"{ch}/{g}/{r}/midpoint" for r in ("forwardRate", "reverseRate")
             for ch, g in (("hh_na", "m"), ("hh_na", "h"), ("hh_k", "n"))]
    return tuple(cell + rates)


def _tree_params() -> tuple[str, ...]:
    """Conductance densities of branches 0, 1, 2, 3 (Na, K, leak): shadows of the whole
    tree whose parameters sit on one branch each."""
    return tuple(f"hh_tree/{d}_b{b}/condDensity" for b in range(4)
                 for d in ("naChans", "kChans", "leak"))


CELLS = {
    "hh": Case(ROOT / "models/hh/LEMS_hh.xml", (), 1000.0, _hh_params()),
    "tree": Case(ROOT / "bench/models/LEMS_hh_tree.xml", (ROOT / "models/hh",), 200.0,
                 _tree_params()),
}


@dataclass
class Timings(Row):
    """bench_neuron's Row (repeats per key, median, min) with the run's length."""
    length_ms: float = 0.0
    steps: int = 0


def plans(case: Case, length_ms: float, folder: Path) -> dict[int, tuple[Path, Path]]:
    """P -> (plan file, compiled library) for P = 0 (primal alone) and every P_VALUES."""
    from nml_gradiff.backends.neuron.build import build
    from nml_gradiff.backends.neuron.plan import make_plan
    from nml_gradiff.backends.neuron.shadow_plan import make_sens_plan
    from nml_gradiff.ingest.simulation import load_simulation
    model, sim = load_simulation(case.lems, include_dirs=list(case.include_dirs))
    sim.length_ms = length_ms
    out = {}
    for p in (0, *P_VALUES):
        plan = (make_sens_plan(model, sim, list(case.params[:p])) if p
                else make_plan(model, sim))
        path = folder / f"plan{p}.json"
        path.write_text(json.dumps(plan.data))
        out[p] = (path, build(plan.mods))
    return out


def run_once(plan: Path, library: Path, p: int) -> tuple[float, float]:
    """(simulation wall s, its CPU s) as the runner reports them; checks the shapes."""
    out = plan.with_suffix(".npz")
    _, _, log = timed([sys.executable, "-m", "nml_gradiff.backends.neuron.runner", str(plan),
                       str(library), str(out)], cwd=ROOT)
    took, cpu = re.search(r"simulation took ([0-9.]+) s, CPU ([0-9.]+) s", log).groups()
    data = np.load(out)
    if p and data["S0"].shape != (len(data["t"]), p):
        raise RuntimeError(f"P = {p}: sensitivities of shape {data['S0'].shape}")
    return float(took), float(cpu)


def bench(name: str, case: Case, length_ms: float, repeat: int) -> Timings:
    row = Timings(name, length_ms=length_ms)
    with tempfile.TemporaryDirectory(prefix="bench-shadows-") as tmp:
        configs = plans(case, length_ms, Path(tmp))
        for p, (plan, library) in configs.items():     # warm-up: page cache, first load
            run_once(plan, library, p)
        for _ in range(repeat):
            for p, (plan, library) in configs.items():
                took, cpu = run_once(plan, library, p)
                row.add(f"{p} wall", took)
                row.add(f"{p} cpu", cpu)
        row.steps = round(length_ms / json.loads(configs[0][0].read_text())["dt"])
    return row


def table(rows: list[Timings]) -> str:
    """Ratios of the medians (and of the minima: the least disturbed run of each side)."""
    lines = ["| cell | simulated (steps) | P | primal + P shadows: wall / CPU, s (median) | "
             "ratio to primal, wall: median (min) | ratio, CPU: median (min) | target "
             "1 + 0.7 P | CPU ratio within target |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for p in (0, *P_VALUES):
            ratio = {k: (r.med(f"{p} {k}") / r.med(f"0 {k}"),
                         r.best(f"{p} {k}") / r.best(f"0 {k}")) for k in ("wall", "cpu")}
            target = 1 + 0.7 * p
            lines.append(
                f"| {r.model} | {r.length_ms:g} ms ({r.steps}) | {p} | "
                f"{r.med(f'{p} wall'):.3f} / {r.med(f'{p} cpu'):.3f} | "
                f"{ratio['wall'][0]:.2f} ({ratio['wall'][1]:.2f}) | "
                f"{ratio['cpu'][0]:.2f} ({ratio['cpu'][1]:.2f}) | "
                f"{target:g} | {'-' if not p else 'yes' if ratio['cpu'][0] <= target else 'no'}"
                " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--length", type=float, metavar="MS",
                    help="simulated ms for every cell (default: per cell, see CELLS)")
    ap.add_argument("--md", type=Path, help="also write machine, load, command and table here")
    args = ap.parse_args()
    start = uptime()
    rows = []
    for name in args.cells:
        case = CELLS[name]
        rows.append(bench(name, case, args.length or case.length_ms, args.repeat))
        print(f"{name}: {rows[-1].times}", file=sys.stderr)
    report("bench_shadows.py", machine(), start, table(rows), args.md)


if __name__ == "__main__":
    main()
