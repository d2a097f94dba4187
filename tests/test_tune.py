"""``nml-gradiff tune`` (runtime/tune.py): bad requests fail fast, and a fit recovers
perturbed conductances."""

from __future__ import annotations

import json

import pytest

from conftest import MODELS
from nml_gradiff.cli import main
from nml_gradiff.ingest.simulation import load_simulation
from nml_gradiff.runtime.run import run_lems
from nml_gradiff.runtime.writeback import write_values

HH = MODELS / "hh" / "LEMS_hh.xml"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The HH cell's own trace, simulated with the JAX backend."""
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("reference")
    run_lems(HH, "jax", out)
    return out / "results" / "hh_v.dat"


def _tune(*args) -> int:
    return main(["tune", *map(str, args)])


@pytest.mark.parametrize("args, message", [
    (["--params", "hh_cell/*/condDensity", "--target-trace", "missing.dat"],
     "target trace not found"),
    (["--params", "nope/*", "--target-trace", HH], "no parameter matches"),
    (["--params", "step/weight", "--target-trace", HH], "cannot tune step/weight"),
    (["--params", "hh_cell/*/condDensity", "--target-rate", "-10"],
     "--target-rate must be a rate in spikes/s >= 0"),
    (["--params", "hh_cell/*/condDensity", "--target-rate", "40", "--mode", "online",
      "--backend", "neuron", "--update-every", "0"], "--update-every must be at least 1"),
    (["--params", "hh_cell/*/condDensity", "--target-trace", HH, "--leak", "5"],
     "--leak: online options; add --mode online"),
    (["--params", "hh_cell/*/condDensity", "--target-trace", HH, "--epochs", "0"],
     "--epochs must be at least 1"),
    (["--params", "hh_cell/*/condDensity", "--target-trace", HH, "--lr", "-1"],
     "--lr must be a positive number"),
])
def test_bad_requests_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert _tune(HH, *args, "-o", out) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_target_that_matches_no_output_file(tmp_path, capsys, reference):
    bad = tmp_path / "other.dat"
    bad.write_text("0 1 2\n1 1 2\n")
    assert _tune(HH, "--params", "hh_cell/*/condDensity", "--target-trace", bad,
                 "-o", tmp_path / "out") == 2
    assert "cannot tell which output file" in capsys.readouterr().err


def test_recovers_perturbed_conductances(tmp_path, reference):
    """gNa and gK 10 % off; Adam on the exact gradient brings both back within 1 %."""
    model, _ = load_simulation(HH)
    true = {"hh_cell/naChans/condDensity": 0.12, "hh_cell/kChans/condDensity": 0.036}
    perturbed = write_values(HH, model.parameters(),
                             {"hh_cell/naChans/condDensity": 0.132,
                              "hh_cell/kChans/condDensity": 0.0324}, tmp_path / "perturbed")
    out = tmp_path / "tuned"
    assert _tune(perturbed, "--params", "hh_cell/naChans/condDensity",
                 "hh_cell/kChans/condDensity", "--target-trace", reference,
                 "--epochs", "120", "--lr", "0.01", "-o", out) == 0
    history = json.loads((out / "history.json").read_text())
    best = history["epochs"][history["best_epoch"]]
    assert best["loss"] < 1e-3 * history["epochs"][0]["loss"]
    for path, value in true.items():
        assert best["params"][path] == pytest.approx(value, rel=0.01), path
    # The tuned model on disk carries the best values.
    tuned, _ = load_simulation(out / "model" / "LEMS_hh.xml")
    values = {p.path: p.value for p in tuned.parameters()}
    for path in true:
        assert values[path] == best["params"][path]
    for name in ("loss.png", "parameters.png", "traces.png"):
        assert (out / name).stat().st_size > 1000


def test_neuron_and_jax_give_the_same_loss_and_gradient(tmp_path, reference):
    """Both backends differentiate the same discrete scheme (NEURON's fixed step), so the
    gradients from NEURON's shadow cells and from the JAX module's tangents agree to
    rounding, not to an O(dt) term; measured 2e-11 relative on this case."""
    pytest.importorskip("neuron")
    import numpy as np
    from nml_gradiff.backends.jax.objective import JaxObjective
    from nml_gradiff.backends.neuron.objective import NeuronObjective
    from nml_gradiff.runtime.targets import read_target
    model, sim = load_simulation(HH)
    paths = ["hh_cell/naChans/condDensity", "hh_cell/kChans/condDensity",
             "hh_na/m/forwardRate/midpoint"]
    by_path = {p.path: p for p in model.parameters()}
    x = np.array([by_path[p].value for p in paths]) * np.array([1.1, 0.9, 1.02])
    target = read_target(reference, sim)
    results = []
    for objective in (JaxObjective(model, sim, paths), NeuronObjective(model, sim, paths)):
        t, _ = objective.simulate(x)
        results.append(objective.loss_and_grad(x, target.on_grid(t, objective.scales)))
    (loss_jax, grad_jax), (loss_nrn, grad_nrn) = results
    assert loss_nrn == pytest.approx(loss_jax, rel=1e-9)
    np.testing.assert_allclose(grad_nrn, grad_jax, rtol=1e-7)
