"""NEURON backend against jNeuroML's NEURON export, side by side in one run.

1. conversion time: ``nml-gradiff convert --target neuron`` against ``pynml FILE -neuron``
   (both as command lines, cold, so both include their start-up: Python or the JVM);
2. simulation time of our mods against jNeuroML's mods, same model, same dt, as reported by
   each generated runner around its own ``run`` call (building and saving excluded).

Usage: python bench/bench_neuron.py [--repeat N] [LEMS_FILE ...]
(default: the HH model of models/ and the Hay L5PC simulation of the corpus).
Needs pyneuroml (pynml, Java) and NEURON; NEURON_HOME is set for pynml automatically.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
DEFAULT = [ROOT / "models/hh/LEMS_hh.xml",
           CORPUS / "OpenSourceBrain+L5bPyrCellHayEtAl2011/neuroConstruct/generatedNeuroML2/"
                    "LEMS_L5bPyrCellHayEtAl2011.xml"]


def neuron_home() -> str:
    import neuron
    return str(Path(neuron.__file__).parent / ".data")


def timed(cmd: list[str], cwd: Path, env=None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def copy_model(lems: Path, work: Path) -> Path:
    """jNeuroML writes its output beside the model: work on a copy of the repository."""
    top = lems.parent
    while top.parent != top and not (top / ".git").exists() and top.parent.name != "corpus" \
            and top != ROOT / "models":
        top = top.parent
    shutil.copytree(top, work / top.name)
    return work / top.name / lems.relative_to(top)


def ours_convert(lems: Path, out: Path) -> float:
    t, _ = timed([sys.executable, "-m", "nml_gradiff.cli", "convert", str(lems), "-o", str(out),
                  "--allow-outside"], cwd=ROOT)
    return t


def jnml_convert(lems: Path) -> float:
    env = {**os.environ, "NEURON_HOME": neuron_home()}
    t, _ = timed(["pynml", lems.name, "-neuron", "-nogui"], cwd=lems.parent, env=env)
    return t


def jnml_simulate(lems: Path) -> float:
    env = {**os.environ, "NEURON_HOME": neuron_home()}
    subprocess.run(["nrnivmodl"], cwd=lems.parent, capture_output=True, check=True)
    script = lems.name.replace(".xml", "_nrn.py")
    _, out = timed([sys.executable, script, "-nogui"], cwd=lems.parent, env=env)
    return float(re.search(r"Finished NEURON simulation in ([0-9.]+) seconds", out).group(1))


def ours_simulate(lems: Path, out: Path) -> float:
    _, log = timed([sys.executable, "-m", "nml_gradiff.cli", "run", str(lems), "-o", str(out),
                    "--allow-outside"], cwd=ROOT)
    return float(re.search(r"simulation took ([0-9.]+) s", log).group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print("| model | convert: ours (s) | convert: jNeuroML (s) | speed-up | "
          "simulate: ours (s) | simulate: jNeuroML (s) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for lems in args.models:
        rows = {"oc": [], "jc": [], "os": [], "js": []}
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                copy = copy_model(lems, Path(tmp))
                rows["oc"].append(ours_convert(copy, Path(tmp) / "out"))
                rows["jc"].append(jnml_convert(copy))
                rows["js"].append(jnml_simulate(copy))
                rows["os"].append(ours_simulate(copy, Path(tmp) / "run"))
        m = {k: statistics.median(v) for k, v in rows.items()}
        print(f"| {lems.name} | {m['oc']:.2f} | {m['jc']:.2f} | {m['jc'] / m['oc']:.1f}x | "
              f"{m['os']:.3f} | {m['js']:.3f} | {m['js'] / m['os']:.2f}x |")


if __name__ == "__main__":
    main()
