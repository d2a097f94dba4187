"""NEURON backend against jNeuroML's NEURON export, side by side in one run.

1. conversion time: ``nml-gradiff convert --target neuron`` against ``pynml FILE -neuron``
   (both as command lines on a fresh copy of the model's repository, ``--allow-outside`` as
   the LEMS file includes files of sibling folders; so both include their start-up:
   Python and our imports, or the JVM); wall-clock and CPU (user + sys of the child) time;
2. simulation time of our mods against jNeuroML's mods, same model, same dt (both take the
   LEMS ``<Simulation>`` step; the table shows each side's dt as its runner set it), as
   reported by each generated runner around its own run call (building and saving excluded):
   jNeuroML's ``LEMS_X_nrn.py`` and our converted model's ``nmlg_runner.py``, each on its
   mods compiled with ``nrnivmodl``.
   Repeats of the two sides alternate, so a change of machine load hits both alike.

jNeuroML writes its output beside the LEMS file: every model folder is copied to a temporary
folder first (the corpus stays read-only).

Usage: python bench/bench_neuron.py [--repeat N] [--md FILE] [LEMS_FILE ...]
(default: the HH cell (LEMS_NML2_Ex5_DetCell) and the Hay L5PC simulation of the corpus).
Needs pyneuroml (pynml, Java) and NEURON; NEURON_HOME is set for pynml automatically.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
DEFAULT = [CORPUS / "NeuroML+NeuroML2/LEMSexamples/LEMS_NML2_Ex5_DetCell.xml",
           CORPUS / "OpenSourceBrain+L5bPyrCellHayEtAl2011/neuroConstruct/generatedNeuroML2/"
                    "LEMS_L5bPyrCellHayEtAl2011.xml"]


def neuron_home() -> str:
    import neuron
    return str(Path(neuron.__file__).parent / ".data")


def jnml_env() -> dict:
    return {**os.environ, "NEURON_HOME": neuron_home()}


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], cwd: Path, env=None) -> tuple[float, float, str]:
    """(wall s, CPU s of the child and its children, output) of a command that must work."""
    cpu, start = _child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - start, _child_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return wall, cpu, proc.stdout + proc.stderr


def copy_model(lems: Path, work: Path) -> Path:
    """A copy of the model's repository (the folder below the corpus, or the .git root) in
    ``work``; the LEMS file's path in the copy."""
    top = lems.resolve().parent
    while top.parent != top and not (top / ".git").exists() \
            and top.parent != CORPUS.resolve() and top != (ROOT / "models").resolve():
        top = top.parent
    shutil.copytree(top, work / top.name)
    return work / top.name / lems.resolve().relative_to(top)


# ------------------------------------------------------------------------------ ours

def ours_convert(lems: Path, out: Path) -> tuple[float, float]:
    wall, cpu, _ = timed([sys.executable, "-m", "nml_gradiff.cli", "convert", str(lems),
                          "-o", str(out), "--allow-outside"], cwd=ROOT)
    return wall, cpu


def ours_compile(lems: Path, out: Path) -> Path:
    """Convert into ``out`` and compile its mods as a user would (``nrnivmodl mods``); the
    converted model's folder."""
    ours_convert(lems, out)
    folder = out / lems.stem
    timed(["nrnivmodl", "mods"], cwd=folder)
    return folder


def ours_simulate(folder: Path, lems: Path) -> tuple[float, float]:
    """(simulation s, dt ms) from the converted model's standalone runner."""
    lib = next(folder.glob("*/libnrnmech.so"))
    # not from ``folder``: NEURON auto-loads ./x86_64 at import, and the runner's own load of
    # the same library then fails ("user defined name already exists")
    _, _, log = timed([sys.executable, str(folder / "nmlg_runner.py"), str(folder / "plan.json"),
                       str(lib), str(folder / "out.npz")], cwd=folder.parent)
    took = float(re.search(r"simulation took ([0-9.]+) s", log).group(1))
    return took, _our_dt(lems)


def _our_dt(lems: Path) -> float:
    from nml_gradiff.ingest.simulation import load_simulation
    return load_simulation(lems, allow_outside=True)[1].dt_ms


# ------------------------------------------------------------------------------ jNeuroML

def jnml_convert(lems: Path) -> tuple[float, float]:
    wall, cpu, _ = timed(["pynml", lems.name, "-neuron", "-nogui"], cwd=lems.parent,
                         env=jnml_env())
    return wall, cpu


def jnml_compile(lems: Path) -> None:
    """nrnivmodl on the mods jNeuroML wrote beside the LEMS file (once per model)."""
    timed(["nrnivmodl"], cwd=lems.parent)


def jnml_simulate(lems: Path) -> tuple[float, float]:
    script = lems.name.replace(".xml", "_nrn.py")
    _, _, out = timed([sys.executable, script, "-nogui"], cwd=lems.parent, env=jnml_env())
    took = float(re.search(r"Finished NEURON simulation in ([0-9.]+) seconds", out).group(1))
    dt = float(re.search(r"dt = ([0-9.eE+-]+)ms", out).group(1))
    return took, dt


# ------------------------------------------------------------------------------ table

@dataclass
class Row:
    model: str
    times: dict[str, list[float]] = field(default_factory=dict)
    dt: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.times.setdefault(key, []).append(value)

    def med(self, key: str) -> float:
        return statistics.median(self.times[key])

    def best(self, key: str) -> float:
        return min(self.times[key])


def bench(lems: Path, repeat: int) -> Row:
    row = Row(lems.name)
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            copy = copy_model(lems, Path(tmp))
            for key, value in zip(("ours wall", "ours cpu"), ours_convert(copy, Path(tmp) / "o")):
                row.add(key, value)
            for key, value in zip(("jnml wall", "jnml cpu"), jnml_convert(copy)):
                row.add(key, value)
    with tempfile.TemporaryDirectory() as tmp:
        copy = copy_model(lems, Path(tmp))
        jnml_convert(copy)
        jnml_compile(copy)
        ours = ours_compile(copy, Path(tmp) / "ours")
        for _ in range(repeat):
            took, row.dt["jnml"] = jnml_simulate(copy)
            row.add("jnml sim", took)
            took, row.dt["ours"] = ours_simulate(ours, copy)
            row.add("ours sim", took)
    return row


def table(rows: list[Row]) -> str:
    lines = [
        "| model | convert wall: ours / jNeuroML (s) | speed-up | convert CPU: ours / jNeuroML"
        " (s) | speed-up | dt ours / jNeuroML (ms) | simulate: ours / jNeuroML (s, median)"
        " | speed-up (median) | speed-up (best of each) |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.med('ours wall'):.2f} / {r.med('jnml wall'):.2f} | "
            f"{r.med('jnml wall') / r.med('ours wall'):.1f}x | "
            f"{r.med('ours cpu'):.2f} / {r.med('jnml cpu'):.2f} | "
            f"{r.med('jnml cpu') / r.med('ours cpu'):.1f}x | "
            f"{r.dt['ours']:g} / {r.dt['jnml']:g} | "
            f"{r.med('ours sim'):.3f} / {r.med('jnml sim'):.3f} | "
            f"{r.med('jnml sim') / r.med('ours sim'):.2f}x | "
            f"{r.best('jnml sim') / r.best('ours sim'):.2f}x |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, NEURON {importlib.metadata.version('neuron')}"
            f", pyNeuroML {importlib.metadata.version('pyNeuroML')}, "
            f"{java.splitlines()[0] if java else 'java ?'}; "
            f"load average at start {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--md", type=Path, help="also write machine, command and table here")
    args = ap.parse_args()
    about = machine()
    rows = []
    for lems in args.models:
        rows.append(bench(lems, args.repeat))
        print(f"{lems.name}: {rows[-1].times}", file=sys.stderr)
    text = (f"Machine: {about}; load average at end {os.getloadavg()[0]:.1f}\n\n"
            f"Command: `python bench/bench_neuron.py --repeat {args.repeat}"
            + "".join(f" {m}" for m in sys.argv[1:] if m.endswith(".xml")) + "`\n\n"
            + table(rows) + "\n")
    print(text)
    if args.md:
        args.md.write_text(text)


if __name__ == "__main__":
    main()
