"""OSB model-validation: reading .omt/.mep, spike detection as the OSB tool does, tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from nml_gradiff.runtime import omv


def test_threshold_detection_reports_the_sample_before_the_crossing():
    t = np.arange(8.0)
    v = np.array([-70, -10, 5, 20, -60, -5, 1, -70.0])
    assert list(omv.detect_spikes(t, v, "threshold", 0.0)) == [1.0, 5.0]


def test_derivative_detection_reports_peaks():
    t = np.arange(40.0)
    v = np.array([-1, 0, 1, 0] * 10, dtype=float)
    assert list(omv.detect_spikes(t, v, "derivative", 0.0)) == list(np.arange(2.0, 40, 4))


def obs(expected, tolerance=0.0, scaling=(1000, 1000)):
    return omv.Observable("v", "x.dat", (0, 1), scaling, "threshold", 0.0, tolerance,
                          expected)


@pytest.mark.parametrize("observed, ok", [
    ([10.9, 500.0], True),            # 0.9 ms: within the 1 ms floor
    ([11.1, 500.0], False),           # 1.1 ms at t = 10 ms: too far
    ([10.0, 500.9], True),            # 0.2 % of 500 ms = 1 ms
    ([10.0], False),                  # a missing spike
])
def test_tolerance(observed, ok):
    passed, detail, _ = omv.compare(obs([10.0, 500.0]), np.array(observed))
    assert passed is ok, detail


def test_own_relative_tolerance_widens():
    passed, _, _ = omv.compare(obs([1000.0], tolerance=0.01), np.array([1009.0]))
    assert passed


def test_floor_in_seconds_when_times_are_in_seconds():
    passed, _, _ = omv.compare(obs([0.010], scaling=(1, 1)), np.array([0.0109]))
    assert passed


def test_read_omt_and_mep(tmp_path):
    (tmp_path / "t.omt").write_text(
        "target: LEMS_x.xml\nengine: jNeuroML_NEURON\nmep: .test.mep\nexperiments:\n"
        "  v:\n    observables:\n      spike times:\n        file:\n          path: x.dat\n"
        "          columns: [0,1]\n          scaling: [1000, 1000]\n"
        "        spike detection:\n          method: threshold\n          threshold: 0\n"
        "        tolerance: 0.0005\n      resting:\n        average last: 10\n")
    (tmp_path / ".test.mep").write_text(
        "system: x\nexperiments:\n  v:\n    expected:\n      spike times: [1.5, 20.25]\n")
    test = omv.read_omt(tmp_path / "t.omt")
    (o,) = test.observables
    assert o.expected == [1.5, 20.25] and o.tolerance == 0.0005 and o.file == "x.dat"
    assert test.skipped == ["v: resting"]


def test_other_engines_are_not_ours(tmp_path):
    (tmp_path / "t.omt").write_text("target: x.py\nengine: NEURON\n")
    assert omv.read_omt(tmp_path / "t.omt") is None


def test_corpus_discovery(corpus):
    tests = omv.discover([corpus])
    with_spikes = [t for t in tests if t.observables]
    print(f"\n{len(tests)} NeuroML-engine OSB tests, {len(with_spikes)} with spike times")
    assert len(with_spikes) > 100
    assert all(t.target.suffix == ".xml" for t in tests)


def test_reference_integration_per_engine(tmp_path):
    """--integration reference reproduces the integrator of jNeuroML's exported mods for the
    engines that run them; --integration exact never changes the integration."""
    from nml_gradiff.runtime.omv_command import integration_for
    from nml_gradiff.runtime.omv import OmtTest
    for engine in ("jNeuroML_NEURON", "jNeuroML_NetPyNE", "jNeuroML"):
        test = OmtTest(tmp_path / "x.omt", tmp_path / "LEMS_x.xml", engine)
        assert integration_for(test, "reference") == "jnml_neuron"
        assert integration_for(test, "exact") == "exact"


POSPISCHIL = "OpenSourceBrain+PospischilEtAl2008/NeuroML2"


def _plan(corpus, rel):
    from nml_gradiff.backends.neuron.plan import make_plan
    from nml_gradiff.ingest.simulation import load_simulation
    # the model's files include ../../channels/...: the OSB folder is an include dir, as
    # `omv` passes it
    model = load_simulation(corpus / POSPISCHIL / rel, include_dirs=[corpus / POSPISCHIL])
    return make_plan(*model, "jnml_neuron").data


def test_recording_the_nernst_potential_of_a_density(corpus):
    """channels/Ca records IT_all/erev of a channelDensityNernst: the erev its mod computes
    (once refused: 'IT has no variable erev')."""
    plan = _plan(corpus, "channels/Ca/LEMS_Ca.xml")
    (rec,) = [r for k, r in plan["record"].items() if k.endswith("IT_all/erev")]
    assert rec["what"] == "range" and rec["name"].startswith("erev_IT")
    assert rec["name"].endswith("_nernst")


def test_a_pool_without_initial_concentration_parameters(corpus):
    """Pospischil's decayingPoolConcentrationModelPosp does not read the species'
    initialConcentration: no such RANGE is set on it (NEURON failed on
    'initialConcentration_CaPoolModel'); the species still sets cai0/cao0."""
    plan = _plan(corpus, "channels/IL/LEMS_IL.nonernst.xml")
    pools = [p for ct in plan["cell_types"].values() for p in ct.get("placements", [])
             if p["neuron_name"].startswith("CaPoolModel")]
    assert pools and all("initialConcentration" not in p["range"] for p in pools)
    assert plan["ions"]["ca"] == {"i": pytest.approx(2.4e-4), "o": pytest.approx(2.0)}


@pytest.mark.corpus
def test_nernst_ca2_density_uses_the_second_pool(corpus):
    """Solinas' Golgi cell places Ca_LVA with channelDensityNernstCa2 and ion="ca": its
    current and Nernst potential belong to the second pool (ica2, ca2i/ca2o), as in
    jNeuroML's export (it once wrote ica: 18 spikes in 4 s instead of 25)."""
    from nml_gradiff.backends.neuron.plan import make_plan
    from nml_gradiff.ingest.simulation import load_simulation
    lems = corpus / "OpenSourceBrain+SolinasEtAl-GolgiCell/NeuroML2/LEMS_Golgi.xml"
    plan = make_plan(*load_simulation(lems), "jnml_neuron")
    (lva,) = [p for ct in plan.data["cell_types"].values() for p in ct["placements"]
              if p["id"] == "Ca_LVA_soma_group"]
    text = plan.mods[lva["neuron_name"]]
    assert "USEION ca2 READ ca2i, ca2o WRITE ica2" in text
    assert "USEION ca " not in text
