"""NEURON backend against jNeuroML's NEURON export, side by side in one run.

1. conversion time: ``nml-gradiff convert --target neuron`` against ``pynml FILE -neuron``
   (both as command lines on a fresh copy of the model's repository, ``--allow-outside`` as
   the LEMS file includes files of sibling folders; so both include their start-up:
   Python and our imports, or the JVM); wall-clock and CPU (user + sys of the child) time;
2. simulation time of our mods against jNeuroML's mods, same model, same dt (both take the
   LEMS ``<Simulation>`` step; the table shows each side's dt as its runner set it), as
   reported by each generated runner around its own run call (building and saving excluded):
   jNeuroML's ``LEMS_X_nrn.py`` and our converted model's ``nmlg_runner.py``, each on its
   mods compiled with ``nrnivmodl``; wall-clock and CPU time (``time.process_time``, which
   unlike wall time does not count the waiting for a core on a loaded machine) around that
   call.  Our runner prints both; jNeuroML's script times ``h.run()`` with ``time.time()``,
   so it runs under a wrapper (:data:`JNML_CLOCK`) that logs the process CPU time at each
   ``time.time()`` call.
   Repeats of the two sides alternate, so a change of machine load hits both alike.

jNeuroML writes its output beside the LEMS file: every model folder is copied to a temporary
folder first (the corpus stays read-only).

Usage: python bench/bench_neuron.py [--repeat N] [--md FILE] [--length MS] [--no-convert]
[--no-simulate] [--baseline DIR] [LEMS_FILE ...] (default: the HH cell
(LEMS_NML2_Ex5_DetCell) and the Hay L5PC simulation of the corpus).  ``--length``
shortens every simulation (the copy's ``<Simulation length>``, for both sides), e.g. for
the full Hay cell ``LEMS_TestL5PC.xml`` (3 s of 4,000 segments);
``--no-convert`` times the simulations only, ``--no-simulate`` the conversions only;
``--baseline DIR`` also times the conversion by another source tree of nml-gradiff (before /
after a change, under the same machine load: the three conversions alternate).
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

def ours_convert(lems: Path, out: Path, code: Path | None = None) -> tuple[float, float]:
    """``code``: another source tree of nml-gradiff to run instead of this one (its
    ``nml_gradiff`` package and ``templates`` folder), e.g. the previous commit's."""
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    wall, cpu, _ = timed([sys.executable, "-m", "nml_gradiff.cli", "convert", str(lems),
                          "-o", str(out), "--allow-outside"], cwd=code or ROOT, env=env)
    return wall, cpu


def ours_compile(lems: Path, out: Path) -> Path:
    """Convert into ``out`` and compile its mods as a user would (``nrnivmodl mods``); the
    converted model's folder."""
    ours_convert(lems, out)
    folder = out / lems.stem
    timed(["nrnivmodl", "mods"], cwd=folder)
    return folder


def ours_simulate(folder: Path, lems: Path) -> tuple[float, float, float]:
    """(simulation s, its CPU s, dt ms) from the converted model's standalone
    runner, run as the README says: ``python nmlg_runner.py plan.json x86_64/libnrnmech.so
    out.npz`` inside the converted folder."""
    lib = next(folder.glob("*/libnrnmech.so")).relative_to(folder)
    _, _, log = timed([sys.executable, "nmlg_runner.py", "plan.json", str(lib), "out.npz"],
                      cwd=folder)
    took, cpu = re.search(r"simulation took ([0-9.]+) s, CPU ([0-9.]+) s", log).groups()
    return float(took), float(cpu), _our_dt(lems)


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


#: Runs jNeuroML's ``LEMS_X_nrn.py`` as its ``__main__``, printing ``bench-clock WALL CPU``
#: at each ``time.time()`` call: the script brackets ``h.run()`` with two such calls.
JNML_CLOCK = """\
import runpy, sys, time
wall = time.time
def clock():
    now = wall()
    print(f"bench-clock {now!r} {time.process_time()!r}", flush=True)
    return now
time.time = clock
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def jnml_simulate(lems: Path) -> tuple[float, float, float]:
    """(simulation s, its CPU s, dt ms) of jNeuroML's runner."""
    script = lems.name.replace(".xml", "_nrn.py")
    _, _, out = timed([sys.executable, "-c", JNML_CLOCK, script, "-nogui"], cwd=lems.parent,
                      env=jnml_env())
    took = float(re.search(r"Finished NEURON simulation in ([0-9.]+) seconds", out).group(1))
    dt = float(re.search(r"dt = ([0-9.eE+-]+)ms", out).group(1))
    clocks = [(float(w), float(c)) for w, c in re.findall(r"bench-clock (\S+) (\S+)", out)]
    # the consecutive pair of time.time() calls whose wall difference is the reported time
    pair = min(zip(clocks, clocks[1:]), key=lambda p: abs(p[1][0] - p[0][0] - took))
    if abs(pair[1][0] - pair[0][0] - took) > 1e-5:
        raise RuntimeError("could not find the time.time() calls around jNeuroML's h.run()")
    return took, pair[1][1] - pair[0][1], dt


def shorten(lems: Path, length_ms: float) -> None:
    """Set the ``<Simulation length>`` of a (copied) LEMS file, written either way LEMS
    allows: ``<Simulation ...>`` or ``<Component type="Simulation" ...>``."""
    text = lems.read_text()
    sim = re.compile(r'(<(?:Simulation\b|Component\s+type="Simulation")[^>]*?\blength=")'
                     r'[^"]*(")')
    if not sim.search(text):
        raise RuntimeError(f"no <Simulation length=...> in {lems}")
    lems.write_text(sim.sub(lambda m: f"{m.group(1)}{length_ms:g}ms{m.group(2)}", text,
                            count=1))


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


def bench(lems: Path, repeat: int, length_ms: float | None = None,
          convert: bool = True, simulate: bool = True, baseline: Path | None = None) -> Row:
    row = Row(lems.name)
    for _ in range(repeat if convert else 0):
        with tempfile.TemporaryDirectory() as tmp:
            copy = copy_model(lems, Path(tmp))
            if baseline is not None:
                for key, value in zip(("base wall", "base cpu"),
                                      ours_convert(copy, Path(tmp) / "b", baseline)):
                    row.add(key, value)
            for key, value in zip(("ours wall", "ours cpu"), ours_convert(copy, Path(tmp) / "o")):
                row.add(key, value)
            for key, value in zip(("jnml wall", "jnml cpu"), jnml_convert(copy)):
                row.add(key, value)
    if simulate:
        simulate_both(lems, row, repeat, length_ms)
    return row


def simulate_both(lems: Path, row: Row, repeat: int, length_ms: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = copy_model(lems, Path(tmp))
        if length_ms is not None:
            shorten(copy, length_ms)
        jnml_convert(copy)
        jnml_compile(copy)
        ours = ours_compile(copy, Path(tmp) / "ours")
        for _ in range(repeat):
            took, cpu, row.dt["jnml"] = jnml_simulate(copy)
            row.add("jnml sim", took)
            row.add("jnml sim cpu", cpu)
            took, cpu, row.dt["ours"] = ours_simulate(ours, copy)
            row.add("ours sim", took)
            row.add("ours sim cpu", cpu)


def table(rows: list[Row]) -> str:
    parts = []
    if all("ours wall" in r.times for r in rows):
        parts.append(convert_table(rows))
    if all("ours sim" in r.times for r in rows):
        parts.append(simulate_table(rows))
    return "\n\n".join(parts)


def convert_table(rows: list[Row]) -> str:
    lines = [
        "| model | convert wall: ours / jNeuroML (s) | speed-up | convert CPU: ours / jNeuroML"
        " (s) | speed-up |",
        "|---|---|---|---|---|"]
    for r in rows:
        for who, key in (("baseline", "base"), ("", "ours")):
            if f"{key} wall" not in r.times:
                continue
            lines.append(
                f"| {r.model}{f' ({who})' if who else ''} | "
                f"{r.med(f'{key} wall'):.2f} / {r.med('jnml wall'):.2f} | "
                f"{r.med('jnml wall') / r.med(f'{key} wall'):.1f}x | "
                f"{r.med(f'{key} cpu'):.2f} / {r.med('jnml cpu'):.2f} | "
                f"{r.med('jnml cpu') / r.med(f'{key} cpu'):.1f}x |")
    return "\n".join(lines)


def simulate_table(rows: list[Row]) -> str:
    """Speed-ups are jNeuroML's time over ours (> 1: ours faster), of the medians and of the
    minima (the least disturbed run of each side)."""
    lines = [
        "| model | dt ours / jNeuroML (ms) | simulation wall, as each runner reports it:"
        " ours / jNeuroML (s, median) | speed-up (median) | speed-up (min) | simulation"
        " CPU: ours / jNeuroML (s, median) | speed-up (median) | speed-up (min) |",
        "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.dt['ours']:g} / {r.dt['jnml']:g} | "
            f"{r.med('ours sim'):.3f} / {r.med('jnml sim'):.3f} | "
            f"{r.med('jnml sim') / r.med('ours sim'):.2f}x | "
            f"{r.best('jnml sim') / r.best('ours sim'):.2f}x | "
            f"{r.med('ours sim cpu'):.3f} / {r.med('jnml sim cpu'):.3f} | "
            f"{r.med('jnml sim cpu') / r.med('ours sim cpu'):.2f}x | "
            f"{r.best('jnml sim cpu') / r.best('ours sim cpu'):.2f}x |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, NEURON {importlib.metadata.version('neuron')}"
            f", pyNeuroML {importlib.metadata.version('pyNeuroML')}, "
            f"{java.splitlines()[0] if java else 'java ?'}")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def report(script: str, about: str, start_load: str, body: str, md: Path | None) -> str:
    """What a bench script prints (and writes to ``--md``): machine, load at start and end,
    the command, then its tables."""
    text = (f"Machine: {about}\n\nLoad (`uptime`) at start: {start_load}; at end: {uptime()}"
            f"\n\nCommand: `python bench/{script} {' '.join(sys.argv[1:])}`\n\n{body}\n")
    print(text)
    if md:
        md.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--md", type=Path, help="also write machine, command and table here")
    ap.add_argument("--length", type=float, metavar="MS",
                    help="simulate MS milliseconds instead of the LEMS file's length")
    ap.add_argument("--no-convert", action="store_true", help="time the simulations only")
    ap.add_argument("--no-simulate", action="store_true", help="time the conversions only")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="also time the conversion of the nml-gradiff source tree DIR (its "
                         "nml_gradiff/ and templates/, e.g. a checkout of an older commit), "
                         "alternating with ours and jNeuroML's")
    args = ap.parse_args()
    about, start = machine(), uptime()
    rows = []
    for lems in args.models:
        rows.append(bench(lems, args.repeat, args.length, not args.no_convert,
                          not args.no_simulate, args.baseline))
        print(f"{lems.name}: {rows[-1].times}", file=sys.stderr)
    report("bench_neuron.py", about, start, table(rows), args.md)


if __name__ == "__main__":
    main()
