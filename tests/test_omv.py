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
