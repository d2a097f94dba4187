"""OSB model-validation tests (``.omt`` with their ``.mep``) run through our backends.

An ``.omt`` names a LEMS ``target``, an ``engine`` and, per experiment, observables read
from an output file with a spike detector; the ``.mep`` holds the expected spike times.  We
run the target with one of our backends into a scratch folder, detect spikes exactly as the
OSB tool does (``omv/analyzers/utils/timeseries.py``: a threshold crossing reports the
sample *before* the crossing; the derivative method reports local maxima), and compare.

Pass: same number of spikes, and every |dt| <= max(1 ms, 0.2 % of t, tolerance * t), where
``tolerance`` is the ``.omt``'s own relative tolerance (it covers differences between
simulators; the 1 ms floor covers our more exact gate integration).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from ..errors import ModelError

#: Engines whose target is a LEMS simulation of a NeuroML model (validation-only engines,
#: which record nothing, are not among them).
NEUROML_ENGINES = ("jNeuroML", "jNeuroML_NEURON", "jNeuroML_EDEN", "jNeuroML_NetPyNE",
                   "jNeuroML_Brian2", "jNeuroML_Moose", "jNeuroML_PyNN_NEURON",
                   "PyLEMS_NeuroML2")

ABS_FLOOR_S = 1e-3          # 1 ms
REL_FLOOR = 2e-3            # 0.2 % of t


@dataclass
class Observable:
    experiment: str
    file: str                   # relative to the .omt's folder
    columns: tuple[int, int]
    scaling: tuple[float, float]
    method: str
    threshold: float
    tolerance: float
    expected: list[float]


@dataclass
class OmtTest:
    path: Path
    target: Path
    engine: str
    observables: list[Observable] = field(default_factory=list)
    mep: Path | None = None     # the expected values' file (who made it: omv_provenance)
    skipped: list[str] = field(default_factory=list)   # observables we cannot check


@dataclass
class Outcome:
    test: OmtTest
    experiment: str
    passed: bool
    detail: str
    worst_dt_ms: float | None = None
    expected: int = 0
    observed: int = 0
    integration: str = ""       # the backend integration that produced it (omv_command)


def _yaml(path: Path) -> dict:
    """YAML from a model repository: safe_load only (never constructs Python objects)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"cannot read {path.name}: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise ModelError("not a YAML mapping", file=path)
    return data


def _expected_spikes(mep: dict, experiment) -> list[float] | None:
    # YAML reads an experiment named 0.3 as a number: match it as the .omt wrote it, or
    # as text
    experiments = mep.get("experiments") or {}
    exp = experiments.get(experiment, experiments.get(str(experiment))) or {}
    spikes = (exp.get("expected") or {}).get("spike times")
    return [float(s) for s in spikes] if isinstance(spikes, list) else None


def _observable(experiment: str, spec: dict, expected: list[float]) -> Observable:
    f = spec["file"]
    detection = spec.get("spike detection") or {}
    return Observable(
        experiment=experiment, file=str(f["path"]),
        columns=tuple(f.get("columns", (0, 1))), scaling=tuple(f.get("scaling", (1, 1))),
        method=str(detection.get("method", "threshold")).strip(),
        threshold=float(detection.get("threshold", 0)),
        tolerance=float(spec.get("tolerance") or 0.0), expected=expected)


def read_omt(path: Path) -> OmtTest | None:
    """The test in ``path``, or None when its engine is not a NeuroML one."""
    omt = _yaml(path)
    engine = str(omt.get("engine", ""))
    if engine not in NEUROML_ENGINES or "target" not in omt:
        return None
    test = OmtTest(path, path.parent / str(omt["target"]), engine)
    if omt.get("mep"):
        test.mep = path.parent / str(omt["mep"])
    mep = _yaml(test.mep) if test.mep else {}
    for name, experiment in (omt.get("experiments") or {}).items():
        for kind, spec in ((experiment or {}).get("observables") or {}).items():
            expected = _expected_spikes(mep, name)
            if kind != "spike times" or expected is None or "file" not in (spec or {}):
                test.skipped.append(f"{name}: {kind}")
                continue
            test.observables.append(_observable(str(name), spec, expected))
    return test


def discover(folders: list[Path]) -> list[OmtTest]:
    tests = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.omt")):
            test = read_omt(path)
            if test is not None:
                tests.append(test)
    return tests


def detect_spikes(t: np.ndarray, v: np.ndarray, method: str, threshold: float) -> np.ndarray:
    if method == "threshold":
        idx = np.flatnonzero((v[:-1] < threshold) & (v[1:] >= threshold))
    elif method == "derivative":
        dx = np.diff(v)
        idx = np.flatnonzero((dx[1:] <= 0) & (dx[:-1] > 0)) + 1
    else:
        raise ModelError(f"unknown spike detection method {method!r}")
    return t[idx]


def compare(obs: Observable, observed: np.ndarray) -> tuple[bool, str, float | None]:
    expected = np.asarray(obs.expected, dtype=float)
    if len(observed) != len(expected):
        return False, f"{len(observed)} spikes, expected {len(expected)}", None
    if not len(expected):
        return True, "no spikes, as expected", None
    ms = 1e-3 * obs.scaling[0]                     # 1 ms in the file's time unit
    allowed = np.maximum.reduce([np.full_like(expected, ABS_FLOOR_S * obs.scaling[0]),
                                 REL_FLOOR * np.abs(expected),
                                 obs.tolerance * np.abs(expected)])
    dt = np.abs(observed - expected)
    worst = float(dt.max() / ms)
    if np.all(dt <= allowed):
        return True, f"{len(expected)} spikes, worst |dt| {worst:.3g} ms", worst
    k = int(np.argmax(dt - allowed))
    return False, (f"spike {k} at {observed[k]:.6g}, expected {expected[k]:.6g} "
                   f"(|dt| {dt[k] / ms:.3g} ms > {allowed[k] / ms:.3g} ms)"), worst


#: outputs(lems_file) -> the folder holding that LEMS file's outputs (simulating it first,
#: or reusing an earlier run: several .omt files often share one target)
Outputs = Callable[[Path], Path]


def _observed(obs: Observable, test: OmtTest, out_dir: Path) -> np.ndarray:
    declared = (test.path.parent / obs.file).resolve()
    rel = Path(declared).relative_to(test.target.parent.resolve()) \
        if test.target.parent.resolve() in declared.parents else Path(obs.file)
    table = np.loadtxt(out_dir / rel, usecols=obs.columns, ndmin=2)
    t, v = (table * np.asarray(obs.scaling)).T
    return detect_spikes(t, v, obs.method, obs.threshold)


def run_test(test: OmtTest, outputs: Outputs) -> list[Outcome]:
    try:
        out_dir = outputs(test.target)
    except ModelError as exc:
        return [Outcome(test, "(run)", False, str(exc))]
    outcomes = []
    for obs in test.observables:
        observed = _observed(obs, test, out_dir)
        ok, detail, worst = compare(obs, observed)
        outcomes.append(Outcome(test, obs.experiment, ok, detail, worst,
                                len(obs.expected), len(observed)))
    return outcomes


class OutputCache:
    """Simulate each target once, into a folder of its own under ``root``."""

    def __init__(self, root: Path, simulate: Callable[[Path, Path], None]):
        self.root, self.simulate = root, simulate
        self.done: dict[Path, Path | ModelError] = {}

    def __call__(self, target: Path) -> Path:
        key = target.resolve()
        if key not in self.done:
            folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
            try:
                self.simulate(target, folder)
                self.done[key] = folder
            except ModelError as exc:
                self.done[key] = exc
        result = self.done[key]
        if isinstance(result, ModelError):
            raise result
        return result
