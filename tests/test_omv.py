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


def test_experiment_named_by_a_number(tmp_path):
    # SmithEtAl2013's experiment "0.3" (the stimulus in nA): YAML reads it as a float
    (tmp_path / "t.omt").write_text(
        "target: LEMS_x.xml\nengine: jNeuroML_NEURON\nmep: .test.mep\nexperiments:\n"
        "  0.3:\n    observables:\n      spike times:\n        file:\n"
        "          path: x.dat\n")
    (tmp_path / ".test.mep").write_text(
        "system: x\nexperiments:\n  0.3:\n    expected:\n      spike times: [7.5]\n")
    (o,) = omv.read_omt(tmp_path / "t.omt").observables
    assert o.experiment == "0.3" and o.expected == [7.5]


def test_other_engines_are_not_ours(tmp_path):
    (tmp_path / "t.omt").write_text("target: x.py\nengine: NEURON\n")
    assert omv.read_omt(tmp_path / "t.omt") is None


def test_corpus_discovery(corpus):
    tests = omv.discover([corpus])
    with_spikes = [t for t in tests if t.observables]
    print(f"\n{len(tests)} NeuroML-engine OSB tests, {len(with_spikes)} with spike times")
    assert len(with_spikes) > 100
    assert all(t.target.suffix == ".xml" for t in tests)


def _omt(path, engine, target, mep):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"target: {target}\nengine: {engine}\nmep: {mep}\n")
    return path


@pytest.mark.parametrize("home_engine, home_target, integration", [
    ("NEURON", "Test_Soma.hoc", "exact"),              # the original model made the data
    ("NEURON", "test_IB_ModelDB.hoc", "jnml_neuron"),  # a hoc file jNeuroML's export wrote
    ("PyNEURON", "LEMS_IB_nrn.py", "jnml_neuron"),
    ("jNeuroML_NEURON", "LEMS_x.xml", "jnml_neuron"),  # jNeuroML made the data
])
def test_reference_integration_follows_who_made_the_mep(tmp_path, home_engine, home_target,
                                                          integration):
    """--integration reference reproduces the integrator of whoever made the expected
    values (the test beside the .mep), not the engine of the test that reuses them;
    --integration exact never changes the integration."""
    from nml_gradiff.runtime.omv_command import integration_for
    from nml_gradiff.runtime.omv_provenance import mep_maker
    mep_maker.cache_clear()
    (tmp_path / "NEURON" / "test").mkdir(parents=True)
    (tmp_path / "NEURON" / "test" / ".test.mep").write_text("experiments: {}\n")
    _omt(tmp_path / "NEURON" / "test" / ".test.orig.omt", home_engine, home_target, ".test.mep")
    omt = _omt(tmp_path / "NeuroML2" / ".test.jnmlnrn.omt", "jNeuroML_NEURON", "LEMS_x.xml",
               "../NEURON/test/.test.mep")
    test = omv.read_omt(omt)
    assert integration_for(test, "reference") == integration
    assert integration_for(test, "exact") == "exact"


def test_a_mep_without_a_home_test_goes_by_the_tests_below_it(tmp_path):
    """WangBuzsaki1996/.test.wb.mep: its tests are in the folders below it."""
    from nml_gradiff.runtime.omv_command import integration_for
    from nml_gradiff.runtime.omv_provenance import mep_maker
    mep_maker.cache_clear()
    (tmp_path / ".test.wb.mep").write_text("experiments: {}\n")
    _omt(tmp_path / "NEURON" / ".test.omt", "NEURON", "wb.hoc", "../.test.wb.mep")
    omt = _omt(tmp_path / "NeuroML2" / ".test.omt", "jNeuroML", "LEMS_wb.xml",
               "../.test.wb.mep")
    assert integration_for(omv.read_omt(omt), "reference") == "jnml_neuron"
    (omt.parent / ".test.omt").unlink()
    mep_maker.cache_clear()
    test = omv.OmtTest(omt, omt.parent / "LEMS_wb.xml", "jNeuroML", mep=tmp_path / ".test.wb.mep")
    assert integration_for(test, "reference") == "exact"


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


SOLINAS = "OpenSourceBrain+SolinasEtAl-GolgiCell/NeuroML2"


@pytest.mark.corpus
def test_cell_level_calcium_currents_and_second_pool_are_recorded(corpus):
    """Solinas' soma2 test records the cell2CaPools' iCa, iCa2 and caConc2 (once refused:
    'unsupported: recording CG_Test/0/TestSoma/iCa')."""
    from nml_gradiff.backends.neuron.plan import make_plan
    from nml_gradiff.ingest.simulation import load_simulation
    plan = make_plan(*load_simulation(corpus / SOLINAS / "LEMS_Soma_Test_HELPER.xml"))
    rec = plan.data["record"]
    assert rec["CG_Test/0/TestSoma/iCa"]["what"] == "ion_current"
    assert rec["CG_Test/0/TestSoma/iCa"]["ion"] == "ca"
    assert rec["CG_Test/0/TestSoma/iCa2"]["ion"] == "ca2"
    assert rec["CG_Test/0/TestSoma/caConc2"] == {**rec["CG_Test/0/TestSoma/caConc2"],
                                                 "what": "range", "name": "ca2i"}
    assert plan.units["CG_Test/0/TestSoma/iCa"] == 1e-9        # nA -> A


@pytest.mark.corpus
def test_recorded_calcium_current_drives_the_pool_as_its_equation_says(corpus, tmp_path):
    """iCa (A, inward positive) and caConc (mol/m3) of the soma2 model, run for 1 ms, obey
    the pool's own equation (Golgi_CALC, decayingPoolConcentrationModel):
    dCa/dt = iCa / (2 F V_shell) - (Ca - Ca_rest) / tau, with the shell of a sphere of the
    soma's area.  A wrong sign or scale of the recorded iCa breaks it."""
    from nml_gradiff.cli import main
    pytest.importorskip("neuron")
    import shutil
    model = tmp_path / "model"
    shutil.copytree(corpus / SOLINAS, model)
    lems = model / "LEMS_Soma_Test_HELPER.xml"
    lems.chmod(0o644)
    lems.write_text(lems.read_text().replace('length="1500.0ms"', 'length="1ms"'))
    assert main(["run", str(lems), "--backend", "neuron", "-o", str(tmp_path / "out")]) == 0
    t, i_ca = np.loadtxt(tmp_path / "out" / "iCa.dat").T
    ca = np.loadtxt(tmp_path / "out" / "Ca.dat")[:, 1]
    assert np.all(i_ca > 0)                                      # Ca flows in at rest
    area = np.pi * 27e-6 * 27e-6                                  # m2: 27 um cylinder
    r = np.sqrt(area / (4 * 3.14159))
    shell = 4 / 3 * 3.14159 * (r**3 - (r - 2.0378e-7) ** 3)
    rest, tau = 5e-11 * 1e6, 0.769231e-3                         # mol/m3, s
    rhs = i_ca / (2 * 96485.3 * shell) - (ca - rest) / tau
    mid = (rhs[1:] + rhs[:-1]) / 2
    np.testing.assert_allclose(np.diff(ca) / np.diff(t), mid, rtol=1e-2,
                               atol=1e-3 * np.abs(mid).max())
