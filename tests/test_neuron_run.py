"""run/convert through the NEURON backend on our HH model (the README's main job)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import MODELS

from nml_gradiff.cli import main

pytest.importorskip("neuron")
LEMS = MODELS / "hh" / "LEMS_hh.xml"


def test_run_writes_declared_outputs_in_jneuroml_format(tmp_path, capsys):
    assert main(["run", str(LEMS), "--backend", "neuron", "-o", str(tmp_path)]) == 0
    table = np.loadtxt(tmp_path / "results" / "hh_v.dat")
    assert table.shape == (10001, 2)                     # 100 ms at 0.01 ms, t = 0 included
    assert table[0, 1] == pytest.approx(-0.065)          # SI: volts
    assert table[-1, 0] == pytest.approx(0.1)            # SI: seconds
    spikes = np.loadtxt(tmp_path / "results" / "hh_spikes.spikes", ndmin=2)
    # a 0.1 nA step on 1000 um2 HH membrane from 20 to 80 ms: a regular train of 5
    assert len(spikes) == 5 and np.all(np.diff(spikes[:, 0]) > 0.010)


def test_run_refuses_an_output_path_outside(tmp_path, capsys):
    lems = tmp_path / "LEMS_x.xml"
    lems.write_text(LEMS.read_text().replace("results/hh_v.dat", "../../escape.dat")
                    .replace('file="hh_cell.nml"', f'file="{MODELS / "hh" / "hh_cell.nml"}"'))
    code = main(["run", str(lems), "-o", str(tmp_path / "out"), "--allow-outside"])
    assert code == 2 and "out of the output folder" in capsys.readouterr().err
    assert not (tmp_path / "escape.dat").exists()


def test_convert_batch_report_and_up_to_date(tmp_path, capsys):
    bad = tmp_path / "in" / "bad.nml"
    bad.parent.mkdir()
    bad.write_text("<neuroml")
    out = tmp_path / "out"
    assert main(["convert", str(MODELS / "hh"), str(bad), "-o", str(out)]) == 2
    report = json.loads((out / "report.json").read_text())
    status = {m["file"].split("/")[-1]: m["status"] for m in report["models"]}
    assert status == {"LEMS_hh.xml": "ok", "hh_cell.nml": "ok", "hh_channels.nml": "ok",
                      "bad.nml": "failed"}
    assert (out / "LEMS_hh" / "mods" / "hh_na.mod").is_file()
    assert (out / "LEMS_hh" / "plan.json").is_file()
    main(["convert", str(MODELS / "hh"), "-o", str(out)])
    again = json.loads((out / "report.json").read_text())
    assert {m["status"] for m in again["models"]} == {"up-to-date"}


#: An Ex1-like pointCellCondBased (NeuroML2 LEMSexamples/LEMS_NML2_Ex1_HH.xml, pulse moved
#: from 50 to 5 ms) and an izhikevichCell with a dimensionless pulse (OSB IzhikevichModel
#: FiveCells, popA).
POINT_CELLS = """\
<Lems>
  <Target component="sim1"/>
  <Include file="Cells.xml"/> <Include file="Networks.xml"/> <Include file="Simulation.xml"/>
  <ionChannelPassive id="passive" conductance="10pS"/>
  <ionChannelHH id="na" conductance="10pS">
    <gateHHrates id="m" instances="3">
      <forwardRate type="HHExpLinearRate" rate="1per_ms" midpoint="-40mV" scale="10mV"/>
      <reverseRate type="HHExpRate" rate="4per_ms" midpoint="-65mV" scale="-18mV"/>
    </gateHHrates>
    <gateHHrates id="h" instances="1">
      <forwardRate type="HHExpRate" rate="0.07per_ms" midpoint="-65mV" scale="-20mV"/>
      <reverseRate type="HHSigmoidRate" rate="1per_ms" midpoint="-35mV" scale="10mV"/>
    </gateHHrates>
  </ionChannelHH>
  <ionChannelHH id="k" conductance="10pS">
    <gateHHrates id="n" instances="4">
      <forwardRate type="HHExpLinearRate" rate="0.1per_ms" midpoint="-55mV" scale="10mV"/>
      <reverseRate type="HHExpRate" rate="0.125per_ms" midpoint="-65mV" scale="-80mV"/>
    </gateHHrates>
  </ionChannelHH>
  <pointCellCondBased id="hhpointcell" C="10pF" v0="-65mV" thresh="20mV">
    <channelPopulation id="leak" ionChannel="passive" number="300" erev="-54.3mV"/>
    <channelPopulation id="naChans" ionChannel="na" number="120000" erev="50mV"/>
    <channelPopulation id="kChans" ionChannel="k" number="36000" erev="-77mV"/>
  </pointCellCondBased>
  <pulseGenerator id="pulseGen1" delay="5ms" duration="50ms" amplitude="0.08 nA"/>
  <izhikevichCell id="izTonicSpiking" v0="-70mV" thresh="30mV" a="0.02" b="0.2" c="-65"
      d="6"/>
  <pulseGeneratorDL id="iA" delay="10ms" duration="90ms" amplitude="14"/>
  <network id="net1">
    <population id="hhpop" component="hhpointcell" size="1"/>
    <population id="izpop" component="izTonicSpiking" size="1"/>
    <explicitInput target="hhpop[0]" input="pulseGen1" destination="synapses"/>
    <explicitInput target="izpop[0]" input="iA" destination="synapses"/>
  </network>
  <Simulation id="sim1" length="20ms" step="0.01ms" target="net1">
    <OutputFile id="of0" fileName="v.dat">
      <OutputColumn id="hh" quantity="hhpop[0]/v"/>
      <OutputColumn id="iz" quantity="izpop[0]/v"/>
    </OutputFile>
  </Simulation>
</Lems>
"""


def _crossings(t, v, threshold=0.0):
    return t[np.flatnonzero((v[:-1] < threshold) & (v[1:] >= threshold))]


def test_point_cells_with_channels_and_dimensionless_inputs(tmp_path):
    """Regressions: the pointCellCondBased of Ex1 ran away to -180 mV (rates() called after
    the currents that use it); pulseGeneratorDL injected nothing (it exposes I, not i).
    Expected spike times from the corpus's .mep files (jLEMS): Ex1's first spike 2.24 ms
    after the pulse starts; FiveCells popA at 12.52 and 16.03 ms."""
    lems = tmp_path / "LEMS_points.xml"
    lems.write_text(POINT_CELLS)
    assert main(["run", str(lems), "-o", str(tmp_path)]) == 0
    t, hh, iz = (np.loadtxt(tmp_path / "v.dat") * 1000).T
    assert -80 < hh.min() and hh.max() < 55                 # between E_K and E_Na
    assert _crossings(t, hh)[0] == pytest.approx(7.24, abs=0.3)
    assert _crossings(t, iz) == pytest.approx([12.52, 16.03], abs=0.3)


FITZHUGH_NAGUMO = """\
<Lems>
  <Target component="sim1"/>
  <Include file="Cells.xml"/> <Include file="Networks.xml"/> <Include file="Simulation.xml"/>
  <fitzHughNagumoCell id="fn1" I="0.8"/>
  <network id="net1"><population id="fnPop1" component="fn1" size="1"/></network>
  <Simulation id="sim1" length="5s" step="0.01s" target="net1">
    <OutputFile id="of1" fileName="fn.dat"><OutputColumn id="V" quantity="fnPop1[0]/V"/>
    </OutputFile>
  </Simulation>
</Lems>
"""


def test_fitzhugh_nagumo_jnml_neuron(tmp_path):
    """NeuroML2 Ex9 (FitzHugh-Nagumo, dt = 10 ms in a model whose time unit is 1 s): jLEMS
    and jNeuroML's mods step V and W by forward Euler and peak at 2440 ms (the .mep); the
    jnml_neuron integration reproduces that peak."""
    lems = tmp_path / "LEMS_fn.xml"
    lems.write_text(FITZHUGH_NAGUMO)
    assert main(["run", str(lems), "-o", str(tmp_path), "--integration", "jnml_neuron"]) == 0
    t, v = np.loadtxt(tmp_path / "fn.dat").T
    d = np.diff(v)
    peaks = t[np.flatnonzero((d[1:] <= 0) & (d[:-1] > 0)) + 1] * 1000
    assert peaks[0] == pytest.approx(2440.0, abs=1e-6)


def test_fitzhugh_nagumo_exact_is_the_step_map(tmp_path):
    """Under ``exact``, a point cell with a nonlinear own state performs the StepMap
    (passes/discretize.py) in NEURON: forward Euler for V' = V - V^3/3 - W + I (not linear
    in V), exponential Euler for the linear W' = 0.08 (V + 0.7 - 0.8 W), both from the
    values before the step; not derivimplicit's backward Euler, which differed by 0.2 in V.
    The recurrence is written out here from NeuroML's fitzHughNagumoCell (time unit 1 s)."""
    lems = tmp_path / "LEMS_fn.xml"
    lems.write_text(FITZHUGH_NAGUMO)
    assert main(["run", str(lems), "-o", str(tmp_path), "--integration", "exact"]) == 0
    t, v = np.loadtxt(tmp_path / "fn.dat").T
    dt, current, b = 0.01, 0.8, 0.064           # s; W' = a - b W with a = 0.08 (V + 0.7)
    expected = [0.0]
    big_v = w = 0.0
    for _ in range(len(t) - 1):
        a = 0.08 * (big_v + 0.7)
        big_v, w = (big_v + dt * (big_v - big_v ** 3 / 3 - w + current),
                    w + (1 - np.exp(-b * dt)) * (a / b - w))
        expected.append(big_v)
    assert v[1] == pytest.approx(0.008, rel=1e-12)
    np.testing.assert_allclose(v, expected, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- NMODL FUNCTIONs

FUNCTIONS_RUN = """\
import json, sys
from neuron import h
h.nrn_load_dll(sys.argv[1])
xs, ns = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps({"exprelr": [h.exprelr_nmlg_fns(x) for x in xs],
                  "prime": [h.exprelr_prime_nmlg_fns(x) for x in xs],
                  "power": [[h.power_nmlg_fns(x, n) for n in ns] for x in xs]}))
"""


def test_nmodl_functions_are_accurate_in_neuron():
    """The FUNCTIONs our mods define, compiled by nrnivmodl and called in NEURON, against
    50-digit references: exprelr (one exp; a series near its removable singularity),
    exprelr_prime and power (products for whole exponents up to 4, else pow)."""
    import subprocess
    import sys

    import mpmath

    from nml_gradiff.backends.neuron.build import build
    from nml_gradiff.backends.neuron.printer import FUNCTION_DEFINITIONS

    mod = "NEURON {\n    SUFFIX nmlg_fns\n    THREADSAFE\n}\n\n" + "\n".join(
        FUNCTION_DEFINITIONS[f] for f in ("exprelr", "exprelr_prime", "power"))
    lib = build({"nmlg_fns": mod})
    xs = [0.0, 5e-324, -1e-300, 1e-12, -1e-8, 1e-5, 0.013, -0.3, 0.4999999, 0.5, -0.5,
          0.5000001, 0.72327690798582, -0.9, 1.0, 2.5, -7.0, 30.0, -40.0, 699.0, 701.0, 740.0,
          -701.0, -800.0]
    ns = [0, 1, 2, 3, 4, 2.5, 5]
    proc = subprocess.run([sys.executable, "-c", FUNCTIONS_RUN, str(lib), json.dumps(xs),
                           json.dumps(ns)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    mpmath.mp.dps = 50
    eps = np.finfo(float).eps

    def rel(value, ref):
        ref = float(ref)
        return abs(value - ref) / abs(ref) if ref else abs(value)

    for x, e, p, pw in zip(xs, got["exprelr"], got["prime"], got["power"]):
        X = mpmath.mpf(x)
        ref = X / mpmath.expm1(X) if x else mpmath.mpf(1)
        # tiny results (x > 700) are subnormal or 0 in double: compare absolutely there
        assert rel(e, ref) <= 2 * eps or abs(e - float(ref)) < 1e-290, (x, e, ref)
        ref_p = mpmath.diff(lambda t: t / mpmath.expm1(t), X) if x else mpmath.mpf(-0.5)
        assert rel(p, ref_p) <= 1e-13 or abs(p - float(ref_p)) < 1e-290, (x, p, ref_p)
        for n, value in zip(ns, pw):
            if x < 0 and n != int(n):
                assert np.isnan(value)          # as pow(): no real value
                continue
            assert rel(value, X ** n if x or n else 1) <= 4 * eps \
                or abs(value - float(abs(X) ** n)) < 1e-290, (x, n, value)


# ----------------------------------------------------------------------------- standalone runner

def test_standalone_runner_inside_the_converted_folder(tmp_path):
    """README: ``nrnivmodl mods && python nmlg_runner.py plan.json x86_64/libnrnmech.so
    out.npz`` in the converted folder.  NEURON loads ./x86_64's library by itself there; the
    runner must not load it again ("user defined name already exists")."""
    import platform
    import shutil
    import subprocess
    import sys

    from nml_gradiff.backends.neuron.build import build

    out = tmp_path / "out"
    assert main(["convert", str(LEMS), "-o", str(out)]) == 0
    folder = out / "LEMS_hh"
    mods = {p.stem: p.read_text() for p in sorted((folder / "mods").glob("*.mod"))}
    arch = folder / platform.machine()
    arch.mkdir()
    shutil.copy(build(mods), arch / "libnrnmech.so")      # what nrnivmodl mods leaves there
    lib = f"{platform.machine()}/libnrnmech.so"
    proc = subprocess.run([sys.executable, "nmlg_runner.py", "plan.json", lib, "out.npz"],
                          cwd=folder, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    v = np.load(folder / "out.npz")["r0"]
    assert v[0] == pytest.approx(-65.0) and v.max() > 0     # it spikes: the HH mods ran


@pytest.mark.corpus
def test_planning_emits_each_mechanism_binding_once(corpus, monkeypatch):
    """A Thalamocortical cell places ~50 channels on 60 sections: emitting a mod per
    placement (846 emits, 88 s) made the batch convert of the corpus take over an hour.
    One emit per distinct (mechanism, binding), the same plan."""
    from nml_gradiff.backends.neuron import plan as planner
    from nml_gradiff.ingest.simulation import load_simulation
    repo = corpus / "OpenSourceBrain+Thalamocortical/NeuroML2"
    model, sim = load_simulation(repo / "test/LEMS_FigA1FRB.xml", include_dirs=[repo])
    calls = []
    emit = planner.emit
    monkeypatch.setattr(planner, "emit", lambda mech, **kw: calls.append(mech.name)
                        or emit(mech, **kw))
    plan = planner.make_plan(model, sim)
    placements = [p for ct in plan.data["cell_types"].values() for p in ct["placements"]]
    assert len(placements) > 10 * len(plan.mods)
    assert len(calls) == len(plan.mods)


IAF_REF_WITH_INPUT = """<Lems>
  <Target component="sim"/>
  <Include file="Cells.xml"/><Include file="Networks.xml"/><Include file="Simulation.xml"/>
  <iafRefCell id="iafRef" C="1nF" thresh="-50mV" reset="-70mV" leakConductance="5e-8S"
              leakReversal="-70mV" refract="5ms"/>
  <pulseGenerator id="pulse" delay="10ms" duration="80ms" amplitude="2nA"/>
  <network id="net">
    <population id="pop" component="iafRef" size="1"/>
    <explicitInput target="pop[0]" input="pulse"/>
  </network>
  <Simulation id="sim" length="40ms" step="0.025ms" target="net">
    <OutputFile id="of" fileName="v.dat"><OutputColumn id="v" quantity="pop[0]/v"/></OutputFile>
  </Simulation>
</Lems>
"""


def test_input_into_a_cell_that_holds_v_is_refused(tmp_path, capsys):
    """iafRefCell's refractory regime holds v; a NEURON section keeps integrating the
    input (v climbed 10 mV from reset in 5 ms): refused, not simulated wrong."""
    lems = tmp_path / "LEMS_iafref.xml"
    lems.write_text(IAF_REF_WITH_INPUT)
    code = main(["run", str(lems), "--backend", "neuron", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "unsupported: the input pulse into iafRef" in err
    assert "holds v" in err and not (tmp_path / "out" / "v.dat").exists()
    # the JAX backend, which the message points to, holds v through the refractory period
    assert main(["run", str(lems), "--backend", "jax", "-o", str(tmp_path / "jax")]) == 0
    t, v = np.loadtxt(tmp_path / "jax" / "v.dat", unpack=True)
    spike = np.argmax(np.diff(v) < -0.01) + 1             # the first reset
    held = v[spike:spike + int(5.0 / 0.025)]
    assert 0.010 < t[spike] < 0.030 and np.all(held == pytest.approx(-0.070, abs=1e-12))


#: Two passive iafCells (threshold out of reach) under pulses at dt = 5 us: one switching on
#: at 100 ms, on the step grid, where NEURON's accumulated t is 99.9999999999453 ms, and off
#: 20 us later; one switching on at 100.001 ms (before the step's midpoint, 100.0025) and
#: off at 100.0235 ms (after its step's midpoint, 100.0225).
EDGES_LEMS = """<Lems>
  <Target component="sim"/>
  <Include file="Cells.xml"/>
  <Include file="Networks.xml"/>
  <Include file="Simulation.xml"/>
  <iafCell id="iaf" leakConductance="0.2nS" leakReversal="-70mV" thresh="100mV"
      reset="-70mV" C="3.2pF"/>
  <pulseGenerator id="grid" delay="100ms" duration="0.02ms" amplitude="0.05nA"/>
  <pulseGenerator id="mid" delay="100.001ms" duration="0.0225ms" amplitude="0.05nA"/>
  <network id="net">
    <population id="a" component="iaf" size="1"/>
    <population id="b" component="iaf" size="1"/>
    <explicitInput target="a[0]" input="grid"/>
    <explicitInput target="b[0]" input="mid"/>
  </network>
  <Simulation id="sim" length="100.05ms" step="0.005ms" target="net">
    <OutputFile id="of" fileName="x.dat">
      <OutputColumn id="va" quantity="a[0]/v"/>
      <OutputColumn id="vb" quantity="b[0]/v"/>
    </OutputFile>
  </Simulation>
</Lems>
"""


@pytest.mark.slow
def test_pulse_edges_at_the_step_midpoint_match_the_jax_backend(tmp_path):
    """A pulse's OnConditions are tested at mid-step (BREAKPOINT, t + dt/2: docs/neuron.md),
    as jNeuroML's mods, IClamp and our JAX module do: the pulse at 100 ms is on for the step
    from 100 to 100.005 ms (it was one step late while the mod tested t at the step's start,
    where the accumulated t is 99.9999999999453), the mid-step edges switch in the step
    whose midpoint passed them, and the traces match the JAX backend's to round-off."""
    pytest.importorskip("jax")
    from nml_gradiff.backends.jax.run import simulate as jax_simulate
    from nml_gradiff.backends.neuron.run import simulate as neuron_simulate
    from nml_gradiff.ingest.simulation import load_simulation
    path = tmp_path / "LEMS_edges.xml"
    path.write_text(EDGES_LEMS)
    model, sim = load_simulation(path)
    nrn, ours = neuron_simulate(model, sim, []), jax_simulate(model, sim, [])
    t = np.asarray(nrn.t_ms)
    np.testing.assert_allclose(ours.t_ms, t, rtol=0, atol=1e-9)

    def k(ms):
        return int(np.argmin(np.abs(t - ms)))
    rest = -0.070                                                    # V
    for key, on, off in (("a[0]/v", 100.0, 100.02), ("b[0]/v", 100.0, 100.025)):
        v = np.asarray(nrn.values[key])
        assert np.all(v[:k(on) + 1] == pytest.approx(rest, abs=1e-12)), key
        # dv = I dt / C = 0.05 nA * 5 us / 3.2 pF = 78 uV in the first step on
        assert v[k(on) + 1] - rest == pytest.approx(0.05e-9 * 5e-6 / 3.2e-12, rel=1e-3), key
        rise = np.diff(v[k(on):k(off) + 3])
        assert np.all(rise[:k(off) - k(on)] > 0) and np.all(rise[k(off) - k(on):] < 0), key
        np.testing.assert_allclose(ours.values[key], v, rtol=0, atol=1e-15)        # V
