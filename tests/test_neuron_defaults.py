"""PARAMETER defaults that nocmodl rounds to 6 digits run at full precision with exact
integration (backends/neuron/defaults.py): the builder sets them from Python."""

from __future__ import annotations

import numpy as np
import pytest

from nml_gradiff.backends.neuron.defaults import nocmodl_value, rounded_defaults

from test_jax_backend import CAL_LEMS, _both_backends

MOD = """TITLE x
PARAMETER {
    scale = 13.888889 (mV) : cal/m/forwardRate/scale = 1 in a comment
    rate = 1.6 (/ms)
    tiny = -1.2345678e-05
    plain = 100
}
ASSIGNED { a = 13.888889 }
"""


def test_rounded_defaults_lists_what_nocmodl_changes():
    assert nocmodl_value(13.888889) == 13.8889 and nocmodl_value(1.6) == 1.6
    assert rounded_defaults({"cal": MOD, "none": "NEURON { SUFFIX none }\n"}) == {
        "cal": {"scale": 13.888889, "tiny": -1.2345678e-05}}


@pytest.mark.slow
def test_exact_neuron_runs_long_parameters_unrounded(tmp_path):
    """Traub's cal channel (scale 13.888889 mV) in the NEURON and JAX backends, exact
    integration: the Ca pool to round-off (measured 5.4e-14 relative); with nocmodl's
    13.8889 the NEURON backend was 8.5e-6 relative away."""
    path = tmp_path / "LEMS_cal.xml"
    path.write_text(CAL_LEMS)
    ours, nrn = _both_backends(path, "exact")
    ca = nrn.values["pop[0]/caConc"]
    assert ca[-1] > 2 * ca[0]
    np.testing.assert_allclose(ours.values["pop[0]/caConc"], ca, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours.values["pop[0]/v"], nrn.values["pop[0]/v"],
                               rtol=0, atol=1e-13)


@pytest.mark.slow
def test_exact_neuron_sensitivities_use_unrounded_parameters(tmp_path):
    """The same cell's sensitivities (cal feeds the pool, so its shadow companion is a
    self-contained mod with its own PARAMETER defaults) against the JAX module's: to 1e-12
    of their peak (measured 3.6e-14); with the companion's 13.8889 they were 1.6e-7 to
    3.1e-7 apart."""
    from nml_gradiff.backends.jax.run import simulate as jax_simulate
    from nml_gradiff.backends.neuron.run import simulate as neuron_simulate
    from nml_gradiff.ingest.simulation import load_simulation
    path = tmp_path / "LEMS_cal.xml"
    path.write_text(CAL_LEMS)
    model, sim = load_simulation(path)
    params = ["c/cal_all/condDensity", "cal/m/reverseRate/rate"]
    ours, nrn = jax_simulate(model, sim, params), neuron_simulate(model, sim, params)
    for key in ("pop[0]/v", "pop[0]/caConc"):
        a, b = np.asarray(ours.sens[key]), np.asarray(nrn.sens[key])
        peak = np.abs(a).max(axis=0)
        assert np.all(peak > 0)
        np.testing.assert_array_less(np.abs(a - b).max(axis=0), 1e-12 * peak)
