"""NEURON's online learner (backends/neuron/learner*.py; issue 5, deliverable 3).

(1) The learner inside NEURON follows the JAX learner's parameter trajectory, update for
update, on HH (a conductance density and a gate's midpoint, both objectives, replays).
NEURON's shadows run one step behind the cell, so its update at step k has seen the loss
gradient up to k-1; the JAX learner with ``delay=1`` does the same, and is the reference.
The same on ACnet2's pyr_4_sym (9 sections, 5 conductance densities placed on different
groups, 3 recordings): the copies of the tuned values reach the right compartments.
(2) Issue 5's demonstration (b) through NEURON: the HH cell under noisy drive tunes gK
online until its rate proxy settles at the target.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from conftest import ACNET, MODELS, PYR_LEMS
from nml_gradiff.cli import main
from test_tune_online import GK, noisy_hh

pytest.importorskip("neuron")

MID = "hh_na/m/forwardRate/midpoint"


def short_hh(folder):
    """models/hh for 40 ms at dt = 0.025 ms under a constant 0.1 nA (a regular spike
    train).  Constant: the two backends switch a pulseGenerator on one step apart (measured:
    7 mV apart after a step at 5.0125 ms, 2e-10 mV with the drive on from t = 0), which is
    not what this test is about."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("hh_cell.nml", "hh_channels.nml"):
        shutil.copy(MODELS / "hh" / name, folder / name)
    text = (MODELS / "hh" / "LEMS_hh.xml").read_text()
    text = text.replace('length="100ms" step="0.01ms"', 'length="40ms" step="0.025ms"')
    text = text.replace('delay="20ms" duration="60ms"', 'delay="0ms" duration="100ms"')
    lems = folder / "LEMS_hh.xml"
    lems.write_text(text)
    return lems


@pytest.fixture(scope="module")
def hh(tmp_path_factory):
    pytest.importorskip("jax")
    from nml_gradiff.backends.jax.objective import JaxObjective
    from nml_gradiff.backends.neuron.learner import NeuronOnlineObjective
    from nml_gradiff.backends.neuron.objective import NeuronObjective
    from nml_gradiff.ingest.simulation import load_simulation

    model, sim = load_simulation(short_hh(tmp_path_factory.mktemp("hh")))
    paths = [GK, MID]
    return (NeuronOnlineObjective(NeuronObjective(model, sim, paths)),
            JaxObjective(model, sim, paths), np.array([0.036, -40.0]))


def _objectives(neuron):
    from nml_gradiff.backends.learning import RateProxy
    t, rec = neuron.simulate(np.array([0.036, -40.0]))
    target = {"out_v/v": rec["out_v/v"] + 5.0 * np.sin(t / 3.0)}
    proxy = RateProxy(threshold_mv=-20.0, slope_mv=2.0, tau_ms=20.0, width_ms=1.5,
                      key="out_v/v")
    return {"trace": {"target": target}, "rate": {"proxy": proxy, "rate": 40.0}}


def test_neuron_learner_follows_the_jax_learner(hh):
    """3 replays of 40 ms, an Adam update every 1 ms (120), both objectives, a bound and a
    clip in use.  Measured: offline losses equal to 3e-13 relative, gradients to 1e-9;
    the trajectories to 6e-11 of the initial values (the midpoint runs into its bound
    -45 mV, gK moves 16-19 %); the JAX learner without the delay is 1e-3 (trace) and 5e-5
    (rate) away.  33 s with the mods built, 88 s building them."""
    from nml_gradiff.backends.learning import OnlineOptions
    neuron, jax_objective, x0 = hh
    for name, kwargs in _objectives(neuron).items():
        offline = OnlineOptions(every=40)
        loss_n, grad_n = neuron.learner(offline, **kwargs).epoch_loss_and_grad(None, x0)
        loss_j, grad_j = jax_objective.learner(offline, **kwargs).epoch_loss_and_grad(
            jax_objective.base, x0)
        assert loss_n == pytest.approx(loss_j, rel=1e-9), name
        np.testing.assert_allclose(grad_n, grad_j, rtol=1e-8, err_msg=name)

        options = OnlineOptions(lr=2e-3, every=40, leak=10.0, clip=0.5 if name == "rate"
                                else None, lower=(0.0, -45.0))
        epochs = []                               # the progress bar's calls, as they come
        run_n = neuron.learner(options, **kwargs).run(None, x0, 3, epochs.append)
        run_j = jax_objective.learner(dataclasses.replace(options, delay=1), **kwargs).run(
            jax_objective.base, x0, 3)
        assert run_n.theta.shape == run_j.theta.shape == (120, 2)
        moved = np.abs(run_j.theta[-1] - x0) / np.abs(x0)
        assert moved.min() > 0.05, (name, moved)
        diff = np.abs(run_n.theta - run_j.theta) / np.abs(x0)
        assert diff.max() < TOL_THETA, (name, diff.max(axis=0))
        np.testing.assert_allclose(run_n.loss, run_j.loss, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(epochs, [c.sum() for c in np.split(run_n.loss, 3)],
                                   rtol=1e-12, err_msg=name)


#: The two learners compute the same numbers in a different order (round-off: gradients
#: ~1e-9 apart); measured 6e-11 after 120 updates.  Adam normalises its steps, so a real
#: difference (one step of delay) shows at 5e-5..1e-3.
TOL_THETA = 1e-9


@pytest.mark.slow
def test_neuron_online_homeostasis_settles_the_rate(tmp_path):
    """Issue 5 (b) through NEURON: the JAX test's protocol and options (25 replays of
    200 ms, an update of gK every 1 ms).  Measured: the proxy's mean per replay follows
    the JAX run's for the first replays (49.9, 53.3, 52.3, 44.7, 42.7, 42.2/s), then,
    from the 10th replay (2 s) on, 38.9/s on average, 14 of 15 replays within 40 +- 2.7/s
    and one at 31.7/s; gK 0.036 -> 0.044..0.048 S/cm2; the real spike rate of one run
    60/s before, 40/s after (45/s since pulses switch at mid-step).  Wall time 29 s with the mods built (56 s on a loaded
    machine), 86-228 s building them."""
    lems = noisy_hh(tmp_path / "model", 200)
    out = tmp_path / "tuned"
    assert main(["tune", str(lems), "--backend", "neuron", "--params", GK,
                 "--target-rate", "40", "--mode", "online", "--epochs", "25",
                 "--lr", "2e-4", "-o", str(out)]) == 0
    doc = json.loads((out / "history.json").read_text())
    assert doc["backend"] == "neuron"
    rows = doc["history"]
    epoch = np.array([int(r["t_ms"] // 200.0001) for r in rows])
    proxy = np.array([r["rate_proxy"] for r in rows])
    gk = np.array([r["params"][GK] for r in rows])
    assert doc["summary"]["spike_rate_before"] >= 50.0
    settled = range(10, 25)
    per_replay = np.array([proxy[epoch == e].mean() for e in settled])
    # the drive makes r fluctuate (a few spikes per tau): judge each replay's mean loosely
    assert np.sum(np.abs(per_replay - 40.0) > 5.0) <= 1
    assert np.abs(per_replay - 40.0).max() < 10.0
    assert abs(per_replay.mean() - 40.0) < 1.5
    assert gk[epoch >= 10].min() > 1.1 * 0.036
    # The real rate (spike counts, filtered alike) over the settled replays, as the JAX test
    # judges it, and one run of the tuned model: 200 ms count spikes in steps of 5/s, so
    # "within one spike of 8" (35..45/s).  Measured: settled real rate 41.6/s (proxy 38.6/s);
    # one run 40/s in session 3, 45/s (9 spikes) since the NEURON backend switches the
    # drive's pulses at the step's midpoint, as JAX does.
    real = np.array([r["spike_rate"] for r in rows])
    assert abs(np.mean([real[epoch == e].mean() for e in settled]) - 40.0) < 4.0
    assert abs(doc["summary"]["spike_rate_after"] - 40.0) <= 5.0 + 1e-6
    from nml_gradiff.ingest.simulation import load_simulation
    tuned, _ = load_simulation(out / "model" / "LEMS_hh_noisy.xml")
    assert {p.path: p.value for p in tuned.parameters()}[GK] == rows[-1]["params"][GK]
    for name in ("loss.png", "parameters.png", "traces.png", "rate.png"):
        assert (out / name).stat().st_size > 1000


def test_neuron_learner_refusals(tmp_path, capsys):
    """What the shadow cells cannot differentiate is refused before any learning run, with
    an ``unsupported:`` message; so is a --update-every that does not divide the run."""
    lems = short_hh(tmp_path / "m")
    for params, args, message in [
        (["hh_cell/specificCapacitance/all"], [], "unsupported: sensitivity with respect "
         "to hh_cell/specificCapacitance/all"),
        ([GK], ["--update-every", "7"], "--update-every 7 must divide the simulation's 1600"),
    ]:
        out = tmp_path / "out"
        assert main(["tune", str(lems), "--backend", "neuron", "--params", *params,
                     "--target-rate", "40", "--mode", "online", *args, "-o", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not (out / "history.json").exists()


@pytest.mark.slow
def test_neuron_learner_follows_the_jax_learner_on_a_multicompartment_cell(corpus,
                                                                          tmp_path):
    """pyr_4_sym under constant drive (soma and apical dendrite), 2 replays of 40 ms, a
    trace objective on 3 recordings, 5 conductances.  Measured: the trajectories agree to
    7e-7 of the initial values while they move by 0.5-5 %; the two backends' primal
    traces differ by 6.5e-6 mV here (2e-10 on HH), which bounds what to expect.  21 s with
    the mods built, 96 s building them."""
    pytest.importorskip("jax")
    from nml_gradiff.backends.jax.objective import JaxObjective
    from nml_gradiff.backends.learning import OnlineOptions
    from nml_gradiff.backends.neuron.learner import NeuronOnlineObjective
    from nml_gradiff.backends.neuron.objective import NeuronObjective
    from nml_gradiff.ingest.simulation import load_simulation

    lems = tmp_path / "LEMS_pyr.xml"
    lems.write_text(PYR_LEMS.replace('delay="5ms" duration="20ms"',
                                     'delay="0ms" duration="100ms"')
                    .replace('delay="12ms" duration="4ms"', 'delay="0ms" duration="100ms"'))
    model, sim = load_simulation(lems, (ACNET,))
    paths = model.select_paths(["pyr_4_sym/*/condDensity"])
    assert len(paths) == 5
    neuron = NeuronOnlineObjective(NeuronObjective(model, sim, paths))
    jax_objective = JaxObjective(model, sim, paths)
    values = {p.path: p.value for p in model.parameters()}
    x0 = np.array([values[p] for p in paths])
    t, rec = neuron.simulate(x0)
    target = {k: v + 3.0 * np.sin(t / 2.0) for k, v in rec.items()}
    options = OnlineOptions(lr=2e-3, every=40, leak=10.0)
    run_n = neuron.learner(options, target=target).run(None, x0, 2)
    run_j = jax_objective.learner(dataclasses.replace(options, delay=1),
                                  target=target).run(jax_objective.base, x0, 2)
    moved = np.abs(run_j.theta[-1] - x0) / x0
    assert moved.min() > 2e-3, moved
    diff = np.abs(run_n.theta - run_j.theta) / x0
    assert diff.max() < 1e-5, diff.max(axis=0)
