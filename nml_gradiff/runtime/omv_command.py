"""``nml-gradiff omv DIR... --backend B``: run the OSB tests found under the folders."""

from __future__ import annotations

import json
import sys
import tempfile
from functools import partial
from pathlib import Path

from tqdm import tqdm

from ..errors import ModelError
from .omv import NEUROML_ENGINES, OmtTest, OutputCache, Outcome, discover, run_test
from .omv_provenance import JNEUROML, ORIGINAL, mep_maker
from .run import run_lems

#: ``--integration reference``: the NEURON backend's integration (emit.INTEGRATIONS) that
#: reproduces whoever made a test's expected spike times (its ``.mep``), not the engine the
#: test names: OSB tests of several engines share one .mep, each with its own tolerance.
#: Data made by jNeuroML (jNeuroML_NEURON and jNeuroML_NetPyNE run its exported mods:
#: forward-Euler gates, lagged conductance; for jLEMS we measured the same mode to be the
#: closer one) -> ``jnml_neuron``; data made by the model's original NEURON code (hand-written
#: mods, mostly cnexp) -> ``exact``.  Where the original's mods use derivimplicit (backward
#: Euler) at a step other than the LEMS file's, neither integration is theirs and neither can
#: be chosen from the corpus (their hoc and mods are not in it): Solinas ``soma2``, measured
#: in docs/omv-neuron.md ("Fourth round").  Who made a .mep: :func:`omv_provenance.mep_maker`.
REFERENCE_INTEGRATION = {JNEUROML: "jnml_neuron", ORIGINAL: "exact"}


def integration_for(test: OmtTest, mode: str) -> str:
    """The NEURON integration for ``test`` under ``--integration mode``."""
    if mode == "exact":
        return "exact"
    maker = mep_maker(test.mep, NEUROML_ENGINES) if test.mep is not None else JNEUROML
    return REFERENCE_INTEGRATION[maker]


def _runner(backend: str, folders: list[Path], integration: str, target: Path,
            out_dir: Path) -> None:
    # The folders named on the command line are trusted: includes may roam inside them.
    options = {"integration": integration} if backend in ("neuron", "jax") else {}
    run_lems(target, backend, out_dir, include_dirs=folders, backend_options=options)


def _row(outcome: Outcome, base: Path) -> str:
    try:
        name = outcome.test.path.resolve().relative_to(base.resolve())
    except ValueError:
        name = outcome.test.path
    worst = "-" if outcome.worst_dt_ms is None else f"{outcome.worst_dt_ms:.3g}"
    verdict = "pass" if outcome.passed else "FAIL"
    return (f"{verdict}  {str(name)[:70]:70s}  {outcome.experiment[:12]:12s}  "
            f"{outcome.observed:>4}/{outcome.expected:<4}  {worst:>7}  {outcome.detail}")


def omv_command(args) -> int:
    folders = [Path(f) for f in args.folders]
    tests = [t for t in discover(folders) if t.observables
             and (args.k is None or args.k in str(t.path))]
    if not tests:     # a typo in -k or the wrong folder, not "0 of 0 passed"
        matching = f" whose path contains {args.k!r}" if args.k is not None else ""
        raise ModelError(f"no OSB tests (.omt files with observables){matching} under "
                         + ", ".join(map(str, folders)))
    outcomes: list[Outcome] = []
    print(f"{'':4}  {'test':70s}  {'experiment':12s}  spikes     worst  detail "
          "(|dt| in ms)")
    with tempfile.TemporaryDirectory(prefix="nml-gradiff-omv-") as tmp:
        caches: dict[str, OutputCache] = {}     # one per integration: targets are shared
        for test in tqdm(tests, desc="omv", unit="test", disable=None, file=sys.stderr):
            integration = integration_for(test, args.integration)
            if integration not in caches:
                caches[integration] = OutputCache(
                    Path(tmp), partial(_runner, args.backend, folders, integration))
            results = run_test(test, caches[integration])
            for outcome in results:
                outcome.integration = integration
            outcomes += results
            for outcome in results:
                tqdm.write(_row(outcome, folders[0]))
    passed = sum(o.passed for o in outcomes)
    tests_passed = sum(all(o.passed for o in outcomes if o.test is t) for t in tests)
    print(f"{tests_passed} of {len(tests)} tests passed ({passed} of {len(outcomes)} "
          f"observables) with the {args.backend} backend, --integration {args.integration}")
    if args.json:
        Path(args.json).write_text(json.dumps([{
            "test": str(o.test.path), "target": str(o.test.target), "engine": o.test.engine,
            "integration": o.integration, "experiment": o.experiment, "passed": o.passed,
            "detail": o.detail,
            "worst_dt_ms": o.worst_dt_ms, "expected": o.expected, "observed": o.observed}
            for o in outcomes], indent=1) + "\n")
    return 0 if tests_passed == len(tests) else 1
