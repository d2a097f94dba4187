"""Repeated NEURON runs (``tune``'s epochs) in one process, with the mods emitted once:
a session (backends/neuron/session.py) gives the same numbers, bit for bit, as a fresh
process per run, and ``NeuronObjective`` tunes a channel's own parameter (a PARAMETER
default in the emitted mod) through RANGE values, without new mods, to the same loss and
gradient as mods emitted at the new value."""

from __future__ import annotations

import numpy as np
import pytest

from nml_gradiff.backends.neuron.build import build
from nml_gradiff.backends.neuron.objective import NeuronObjective
from nml_gradiff.backends.neuron.run import simulate, traces_of
from nml_gradiff.backends.neuron.session import Session
from nml_gradiff.backends.neuron.shadow_plan import make_sens_plan
from nml_gradiff.ingest.simulation import load_simulation

from conftest import MODELS

pytest.importorskip("neuron")

HH = MODELS / "hh" / "LEMS_hh.xml"
PARAMS = ["hh_cell/naChans/condDensity", "hh_cell/kChans/condDensity"]


def _model(length_ms: float = 30.0):
    model, sim = load_simulation(HH)
    sim.length_ms = length_ms                 # the current step starts at 20 ms: a spike
    return model, sim, {p.path: p for p in model.parameters()}


def test_session_runs_equal_fresh_processes():
    model, sim, params = _model()
    memo = {}
    first = make_sens_plan(model, sim, PARAMS, memo=memo)
    assert memo                                       # primal and companion mods kept
    session = Session(build(first.mods))
    try:
        runs = []
        for scale in (1.0, 0.9, 1.0):                 # the third repeats the first
            params[PARAMS[0]].value = 0.12 * scale
            plan = make_sens_plan(model, sim, PARAMS, memo=memo)
            assert plan.mods == make_sens_plan(model, sim, PARAMS).mods
            runs.append(traces_of(plan, session.run(plan.data), True))
        fresh = simulate(model, sim, PARAMS)          # at scale 1.0, as runs 0 and 2
    finally:
        session.close()
    key = next(iter(fresh.values))
    assert runs[1].values[key].max() != runs[0].values[key].max()   # the value took effect
    for run in (runs[0], runs[2]):                # nothing of one run leaks into the next
        np.testing.assert_array_equal(run.values[key], fresh.values[key])
        np.testing.assert_array_equal(run.sens[key], fresh.sens[key])


def test_channel_parameters_are_tuned_without_new_mods():
    model, sim, params = _model()
    paths = PARAMS[:1] + ["hh_na/m/forwardRate/midpoint", "hh_k/n/reverseRate/rate"]
    x0 = np.array([params[p].value for p in paths])
    x1 = x0 * np.array([1.05, 1.02, 0.9])
    objective = NeuronObjective(model, sim, paths)
    t, target = objective.simulate(x0)
    objective.loss_and_grad(x0, target)
    library = objective._session.library
    loss, grad = objective.loss_and_grad(x1, target)
    assert objective._session.library == library     # the first epoch's mods, no rebuild
    objective.close()
    fresh = NeuronObjective(model, sim, paths)        # mods emitted at x1's values
    fresh_loss, fresh_grad = fresh.loss_and_grad(x1, target)
    fresh.close()
    assert fresh_loss > 1.0                           # x1 is away from the target
    assert loss == pytest.approx(fresh_loss, rel=1e-12)
    np.testing.assert_allclose(grad, fresh_grad, rtol=1e-10)


def test_session_works_in_a_folder_with_spaces(tmp_path, monkeypatch):
    """The plan and output paths go to the child as JSON, not split on whitespace."""
    spaced = tmp_path / "my temp folder"
    spaced.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spaced))
    model, sim, _ = _model(length_ms=5.0)
    plan = make_sens_plan(model, sim, PARAMS[:1])
    session = Session(build(plan.mods))
    try:
        assert " " in str(session._log_path)
        out = traces_of(plan, session.run(plan.data), True)
    finally:
        session.close()
    key = next(iter(out.values))
    assert np.isfinite(out.values[key]).all() and out.values[key].size > 1
