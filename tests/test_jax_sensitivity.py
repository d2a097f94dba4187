"""Forward sensitivities emitted into the generated JAX module (docs/jax.md, "Sensitivities").

The module's ``simulate_sens`` propagates tangents printed from the sensitivity pass's
Jacobians; it must be the exact derivative of the module's own discrete update.  Checked
against two independent references:

* ``jax.jvp`` through the same module's primal ``simulate`` (JAX's own forward mode through
  the primal code: no emitted derivative is used).  Both compute the same derivative, so
  they differ by rounding only: asserted to 1e-9 of the trace's largest sensitivity
  (measured: 1e-16 to 2e-11 over these runs, the largest through spikes);
* central finite differences of the primal, in float64, with Richardson extrapolation
  (see :func:`_fd`): the tolerance comes from that formula's error bound.

Models: the HH cell (models/hh); ACnet2's pyr_4_sym with all its channels and its Ca pool;
a single compartment with the Golgi cell's kinetic-scheme (KS) KAHP channel, its Ca pool
and a Nernst Ca channel; Bahl's reduced L5 cell (inhomogeneous densities, vShift,
resistivity per group); Smith's L2/3 cell (849 nodes; dendritic Na and T-type Ca).
Simulated times are short (5-30 ms) to keep the file fast.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from nml_gradiff.backends.jax.emit import emit, load_module  # noqa: E402
from nml_gradiff.errors import ModelError, UnsupportedError  # noqa: E402
from nml_gradiff.ingest.simulation import load_simulation  # noqa: E402
from nml_gradiff.runtime.run import run_lems  # noqa: E402

from conftest import CORPUS, MODELS  # noqa: E402

HH = MODELS / "hh" / "LEMS_hh.xml"
ACNET = CORPUS / "OpenSourceBrain+ACnet2" / "neuroConstruct" / "generatedNeuroML2"
GOLGI = CORPUS / "OpenSourceBrain+SolinasEtAl-GolgiCell" / "NeuroML2"
BAHL = CORPUS / "OpenSourceBrain+BahlEtAl2012_ReducedL5PyrCell" / "NeuroML2"
SMITH = CORPUS / "OpenSourceBrain+SmithEtAl2013-L23DendriticSpikes" / "NeuroML2"

JVP_TOL = 1e-9
#: Finite differences: Richardson-extrapolated central differences, (4 D(h/2) - D(h))/3.
#: Error model: truncation O(h^4) (the fifth derivative is large through a spike, whose
#: time the step shifts: the error falls 1e4-fold per decade of h) plus rounding
#: ~ eps * |trace| * growth / h.  Measured max |FD - S| / max |S| at h = 1e-2, 1e-3, 1e-4,
#: 1e-5 |theta|: HH m midpoint 1e-3, 1e-7, 6e-11, 2e-10; HH n scale 1e-9, 2e-10, 2e-9, 1e-8
#: (rounding from 1e-4 on); pyr_4_sym Na m midpoint -> [Ca] 1e-2, 2e-4, 3e-7, 7e-11 (a
#: steeper spike shift: needs 1e-5); pyr_4_sym Ca decayConstant -> v 2e-7 at 1e-5
#: (rounding: needs 1e-4).  No one step suits every parameter, so the reference is the
#: better of h = 1e-4 and 1e-5 |theta| (each is accurate in one of the two regimes: a wrong
#: S cannot match either), and FD_TOL = 1e-7 is a factor >= 10 above the measured minima.
FD_TOL = 1e-7
FD_REL_STEPS = (1e-4, 1e-5)
#: Steps for parameters outside that model.  pyr_4_sym's Ca pool climbs from its initial
#: 5e-5 mM to 63 mM within the run: a step of 1e-4 of the initial value (5e-9 mM) is below
#: the pool's rounding (eps * 63 mM, amplified) -- measured 1.6e-6 (h = 1e-3) to 1.2e-4
#: (h = 1e-4) -- while the trace is almost linear in it (Richardson at h = 0.1 |theta|:
#: 2e-8).
FD_STEPS = {"pyr_4_sym/ca/soma_group/initialConcentration": (1e-1,)}
#: Plus a rounding floor for sensitivities small against their trace: a central difference
#: of values y carrying rounding r has error ~ r / h, and a trajectory's r grows to
#: ~ G * eps * max|y| over the steps.  Measured G ~ 17 (Bahl's L5, the inhomogeneous
#: density's c1: S ~ 2e-4 mV per unit against a 68 mV trace, error 6.4e-7 of S at
#: h = 1e-4 |c1|, 7.7e-6 at 1e-5, growing as 1/h); G = 100 leaves a margin.
ROUNDING_GROWTH = 100.0
EPS = float(np.finfo(np.float64).eps)


# ============================================================================ helpers

class Case:
    """A module with sensitivities, its sensitivity run and the references."""

    def __init__(self, lems, params, duration, include_dirs=(), name="sens_case",
                 fd_steps=FD_REL_STEPS):
        model, sim = load_simulation(lems, include_dirs=list(include_dirs))
        self.params = model.select_paths(params)
        self.m = load_module(emit(model, sim, params=self.params), name)
        self.duration = duration
        self.fd_steps = fd_steps          # relative steps of the references (see FD_TOL)
        self.t, self.rec, self.sens = jax.jit(
            lambda p: self.m.simulate_sens(p, duration))(self.m.PARAMS)
        self.primal = jax.jit(lambda p: self.m.simulate(p, duration)[1])

    def jvp(self) -> dict:
        """``jax.jvp`` of the primal along every parameter at once (vmap over tangents)."""
        m, P = self.m, len(self.params)
        tangents = {k: jnp.zeros(P) for k in m.PARAMS}
        for j, path in enumerate(self.params):
            tangents[path] = tangents[path].at[j].set(1.0)

        def one(tan):
            return jax.jvp(lambda q: m.simulate(q, self.duration)[1], (m.PARAMS,), (tan,))[1]

        out = jax.jit(jax.vmap(one))(tangents)
        return {k: np.asarray(out[k]).T for k in m.OUTPUTS}       # [T, P]

    def fd(self, path: str, rel_step: float) -> dict:
        return _fd(self.primal, self.m.PARAMS, path, list(self.m.OUTPUTS), rel_step)


def _fd(primal, params, path, keys, rel_step) -> dict:
    """Richardson extrapolation of central differences: (4 D(h/2) - D(h)) / 3."""
    x0 = params[path]
    h = rel_step * abs(x0) if x0 else rel_step

    def central(step):
        up = primal({**params, path: x0 + step})
        dn = primal({**params, path: x0 - step})
        return {k: (np.asarray(up[k]) - np.asarray(dn[k])) / (2 * step) for k in keys}

    d1, d2 = central(h), central(h / 2)
    return {k: (4 * d2[k] - d1[k]) / 3 for k in keys}


def _assert_close(got, ref, tol, what):
    scale = np.max(np.abs(ref))
    assert scale > 0, f"{what}: the reference derivative is zero (a test that cannot fail)"
    err = np.max(np.abs(got - ref)) / scale
    assert err < tol, f"{what}: max |error| / max |reference| = {err:.3e} (tolerance {tol})"
    return err


def _check_jvp(case: Case):
    ref = case.jvp()
    for key in case.m.OUTPUTS:
        for j, path in enumerate(case.params):
            _assert_close(np.asarray(case.sens[key][:, j]), ref[key][:, j], JVP_TOL,
                          f"{path} -> {key} vs jax.jvp")


def _check_fd(case: Case, keys, paths=None):
    """S of each recorded key against the better of the finite-difference references (see
    FD_REL_STEPS); one set of primal runs per parameter and step serves every key."""
    ys = {key: np.max(np.abs(np.asarray(case.rec[key]))) for key in keys}
    for j, path in enumerate(case.params):
        if paths is not None and path not in paths:
            continue
        x0 = case.m.PARAMS[path]
        results = {key: [] for key in keys}
        for rel in FD_STEPS.get(path, case.fd_steps):
            refs = case.fd(path, rel)
            h = rel * abs(x0) if x0 else rel
            for key in keys:
                ref = refs[key]
                scale = np.max(np.abs(ref))
                assert scale > 0, f"{path} -> {key}: zero derivative (a test that cannot fail)"
                tol = FD_TOL + ROUNDING_GROWTH * EPS * ys[key] / h / scale
                err = np.max(np.abs(np.asarray(case.sens[key][:, j]) - ref)) / scale
                results[key].append((err, tol, rel))
        for key, res in results.items():
            assert any(err < tol for err, tol, _ in res), (
                f"{path} -> {key} vs finite differences: (error, tolerance, step) = {res}")


# ============================================================================ HH

HH_PARAMS = ["hh_cell/naChans/condDensity", "hh_cell/kChans/condDensity",
             "hh_cell/leak/erev", "hh_na/m/forwardRate/midpoint", "hh_na/h/forwardRate/rate",
             "hh_k/n/reverseRate/scale", "hh_na/m/instances",
             "hh_cell/specificCapacitance/all", "hh_cell/initMembPotential/all",
             "step/amplitude"]


@pytest.fixture(scope="module")
def hh():
    return Case(HH, HH_PARAMS, 30.0, name="sens_hh")     # one spike, at ~25 ms


def test_hh_sensitivities_equal_jvp(hh):
    assert hh.m.SENS_PARAMS == tuple(hh.params)      # the model's order (Model.select_paths)
    assert set(hh.params) == set(HH_PARAMS)
    assert hh.sens["out_v/v"].shape == (3001, len(HH_PARAMS))
    _check_jvp(hh)


def test_hh_sensitivities_equal_finite_differences(hh):
    _check_fd(hh, ["out_v/v"])


def test_hh_recorded_values_are_the_primal(hh):
    primal = hh.primal(hh.m.PARAMS)
    for key in hh.m.OUTPUTS:
        np.testing.assert_array_equal(np.asarray(hh.rec[key]), np.asarray(primal[key]))


def test_loss_and_grad_equals_jax_grad(hh):
    m, D = hh.m, hh.duration
    target = {"out_v/v": hh.primal({**m.PARAMS, "hh_cell/kChans/condDensity":
                                    1.05 * m.PARAMS["hh_cell/kChans/condDensity"]})["out_v/v"]}

    def loss(p):
        _, rec = m.simulate(p, D)
        return jnp.sum((rec["out_v/v"] - target["out_v/v"]) ** 2) * m.DT_MS

    ref_loss, ref_grad = jax.jit(jax.value_and_grad(loss))(m.PARAMS)
    got_loss, got_grad = jax.jit(lambda p, y: m.loss_and_grad(p, y, D))(m.PARAMS, target)
    assert float(ref_loss) > 0
    assert abs(float(got_loss) / float(ref_loss) - 1) < 1e-12
    assert set(got_grad) == set(HH_PARAMS)
    for path in HH_PARAMS:
        r, g = float(ref_grad[path]), float(got_grad[path])
        assert r != 0, path
        assert abs(g - r) <= 1e-9 * abs(r), (path, g, r)


def test_without_params_the_module_is_the_primal_one():
    model, sim = load_simulation(HH)
    primal = emit(model, sim)
    assert "SENS" not in primal and "simulate_sens" not in primal
    with_sens = emit(model, sim, params=["hh_cell/naChans/condDensity"])
    assert with_sens.startswith(primal.rstrip("\n"))     # same module, sensitivities after


def test_convert_target_jax_emits_the_sensitivity_module(tmp_path):
    from nml_gradiff.backends.jax.convert import convert_file
    files = convert_file(HH, params=("hh_cell/*/condDensity",))
    (name, text), = files.items()
    assert name == "LEMS_hh.py"
    m = load_module(text, "sens_convert_hh")
    assert m.SENS_PARAMS == ("hh_cell/naChans/condDensity", "hh_cell/kChans/condDensity",
                             "hh_cell/leak/condDensity")
    assert "--params hh_cell/*/condDensity" in text


def test_refusals():
    model, sim = load_simulation(HH)
    with pytest.raises(UnsupportedError, match="unsupported: .*delay"):
        emit(model, sim, params=["step/delay"])          # sets when the pulse switches
    with pytest.raises(ModelError, match="no parameters"):
        emit(model, sim, params=["hh_cell/nothing"])
    with pytest.raises(UnsupportedError, match="jacobian='analytic'"):
        emit(model, sim, jacobian="neuron", params=["hh_cell/naChans/condDensity"])


# ============================================================================ ACnet2 pyr_4_sym

PYR_LEMS = """<Lems>
    <Target component="sim"/>
    <Include file="Cells.xml"/>
    <Include file="Networks.xml"/>
    <Include file="Simulation.xml"/>
    <Include file="pyr_4_sym.cell.nml"/>
    <pulseGenerator id="soma_stim" delay="2ms" duration="15ms" amplitude="1.5nA"/>
    <network id="net" type="networkWithTemperature" temperature="6.3degC">
        <population id="pop" component="pyr_4_sym" size="1"/>
        <inputList id="in_soma" population="pop" component="soma_stim">
            <input id="0" target="../pop/0/pyr_4_sym" destination="synapses"/>
        </inputList>
    </network>
    <Simulation id="sim" length="20ms" step="0.025ms" target="net">
        <OutputFile id="of" fileName="v.dat">
            <OutputColumn id="soma" quantity="pop/0/pyr_4_sym/0/v"/>
            <OutputColumn id="apical4" quantity="pop/0/pyr_4_sym/4/v"/>
            <OutputColumn id="ca" quantity="pop/0/pyr_4_sym/0/caConc"/>
        </OutputFile>
    </Simulation>
</Lems>
"""
PYR_PARAMS = ["pyr_4_sym/Kdr_pyr_soma_group/condDensity", "pyr_4_sym/Kahp_pyr_soma_group/condDensity",
              "Na_pyr/m/forwardRate/midpoint", "Ca_conc/decayConstant", "Ca_conc/rho",
              "pyr_4_sym/ca/soma_group/initialConcentration",
              "pyr_4_sym/specificCapacitance/all", "pyr_4_sym/resistivity/all"]


@pytest.fixture(scope="module")
def pyr(tmp_path_factory):
    if not ACNET.is_dir():
        pytest.skip(f"the real-model corpus is not here ({CORPUS}): no ACnet2 pyr_4_sym")
    path = tmp_path_factory.mktemp("pyr_sens") / "LEMS_pyr.xml"
    path.write_text(PYR_LEMS)
    return Case(path, PYR_PARAMS, 20.0, [ACNET], name="sens_pyr")


def test_branched_cell_sensitivities_equal_jvp(pyr):
    _check_jvp(pyr)


def test_branched_cell_sensitivities_equal_finite_differences(pyr):
    _check_fd(pyr, ["of/soma", "of/ca"])


# ============================================================================ Golgi: KS + pool

GOLGI_CELL = """<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="ks_cell">
    <include href="LeakCond.channel.nml"/>
    <include href="Golgi_KAHP.channel.nml"/>
    <include href="Golgi_Ca_HVA.channel.nml"/>
    <include href="Golgi_CALC.nml"/>
    <cell id="ks_cell">
        <morphology id="morph">
            <segment id="0" name="Soma">
                <proximal x="0" y="0" z="0" diameter="27"/>
                <distal x="0" y="27" z="0" diameter="27"/>
            </segment>
            <segmentGroup id="soma_group"><member segment="0"/></segmentGroup>
            <segmentGroup id="all"><include segmentGroup="soma_group"/></segmentGroup>
        </morphology>
        <biophysicalProperties id="bio">
            <membraneProperties>
                <channelDensity id="leak" ionChannel="LeakCond" condDensity="0.021 mS_per_cm2"
                    erev="-55.0 mV" ion="non_specific"/>
                <channelDensity id="kahp" ionChannel="Golgi_KAHP" condDensity="38 mS_per_cm2"
                    segmentGroup="soma_group" ion="k" erev="-84.69 mV"/>
                <channelDensityNernst id="cahva" ionChannel="Golgi_Ca_HVA"
                    condDensity="0.46 mS_per_cm2" segmentGroup="soma_group" ion="ca"/>
                <spikeThresh value="0 mV"/>
                <specificCapacitance value="1 uF_per_cm2"/>
                <initMembPotential value="-60.0 mV"/>
            </membraneProperties>
            <intracellularProperties>
                <species segmentGroup="soma_group" id="ca" ion="ca" concentrationModel="Golgi_CALC"
                    initialConcentration="5.0E-11 mol_per_cm3" initialExtConcentration="2.0E-6 mol_per_cm3"/>
                <resistivity value="0.1 kohm_cm"/>
            </intracellularProperties>
        </biophysicalProperties>
    </cell>
</neuroml>
"""
GOLGI_LEMS = """<Lems>
    <Target component="sim"/>
    <Include file="Cells.xml"/>
    <Include file="Networks.xml"/>
    <Include file="Simulation.xml"/>
    <Include file="ks_cell.nml"/>
    <pulseGenerator id="stim" delay="2ms" duration="12ms" amplitude="0.4nA"/>
    <network id="net" type="networkWithTemperature" temperature="30degC">
        <population id="pop" component="ks_cell" size="1"/>
        <inputList id="in" population="pop" component="stim">
            <input id="0" target="../pop/0/ks_cell" destination="synapses"/>
        </inputList>
    </network>
    <Simulation id="sim" length="20ms" step="0.025ms" target="net">
        <OutputFile id="of" fileName="ks.dat">
            <OutputColumn id="v" quantity="pop/0/ks_cell/v"/>
            <OutputColumn id="ca" quantity="pop/0/ks_cell/caConc"/>
            <OutputColumn id="o1" quantity="pop/0/ks_cell/bio/membraneProperties/kahp/Golgi_KAHP/n/o1/occupancy"/>
        </OutputFile>
    </Simulation>
</Lems>
"""
GOLGI_PARAMS = ["ks_cell/kahp/condDensity", "ks_cell/cahva/condDensity",
                "Golgi_KAHP/n/q10Settings/q10Factor", "Golgi_CALC/decayConstant",
                "Golgi_CALC/shellThickness", "ks_cell/ca/soma_group/initialExtConcentration",
                "stim/amplitude"]


@pytest.fixture(scope="module")
def golgi_lems(tmp_path_factory):
    if not GOLGI.is_dir():
        pytest.skip(f"the real-model corpus is not here ({CORPUS}): no Golgi cell")
    folder = tmp_path_factory.mktemp("golgi_sens")
    (folder / "ks_cell.nml").write_text(GOLGI_CELL)
    (folder / "LEMS_ks.xml").write_text(GOLGI_LEMS)
    return folder / "LEMS_ks.xml"


@pytest.fixture(scope="module")
def golgi(golgi_lems):
    return Case(golgi_lems, GOLGI_PARAMS, 20.0, [GOLGI], name="sens_golgi")


def test_ks_channel_and_pool_sensitivities_equal_jvp(golgi):
    _check_jvp(golgi)


def test_ks_channel_and_pool_sensitivities_equal_finite_differences(golgi):
    _check_fd(golgi, ["of/v", "of/ca", "of/o1"])


def test_run_writes_sensitivities_in_dat_units(golgi_lems, tmp_path):
    """``run --params``: X.sens.npz beside X.dat, d(value in the .dat's SI units)/d(param in
    the units inspect --params prints), against a central difference of two ``run --set``
    outputs (the end-to-end check of both unit conventions)."""
    path = "Golgi_CALC/decayConstant"
    run_lems(golgi_lems, "jax", tmp_path / "base", param_globs=[path],
             include_dirs=[GOLGI])
    npz = np.load(next((tmp_path / "base").rglob("*.sens.npz")))
    assert list(npz["params"]) == [path]
    assert list(npz["quantities"]) == ["pop/0/ks_cell/v", "pop/0/ks_cell/caConc",
                                       "pop/0/ks_cell/bio/membraneProperties/kahp/Golgi_KAHP/n/o1/occupancy"]
    dat = np.loadtxt(next((tmp_path / "base").rglob("ks.dat")))
    np.testing.assert_array_equal(npz["values"], dat[:, 1:])
    model, _ = load_simulation(golgi_lems, include_dirs=[GOLGI])
    (param,) = [p for p in model.parameters() if p.path == path]
    h = 1e-4 * param.value
    runs = {}
    for sign in (1, -1):
        out = tmp_path / f"set{sign}"
        run_lems(golgi_lems, "jax", out, include_dirs=[GOLGI],
                 overrides=[f"{path}={param.value + sign * h}"])
        runs[sign] = np.loadtxt(next(out.rglob("ks.dat")))[:, 1:]
    fd = (runs[1] - runs[-1]) / (2 * h)
    for q in range(3):
        # plain central difference with h = 1e-4 |theta|: truncation ~1e-8 relative
        _assert_close(npz["sens"][:, q, 0], fd[:, q], 1e-6, f"{path} -> column {q}")


# ============================================================================ Bahl L5

BAHL_PARAMS = ["pyr_model2/apicaltree_g_kfast/condDensity/c1", "pyr_model2/nat_soma/vShift",
               "pyr_model2/tuft_kca/condDensity", "cad/decay",
               "pyr_model2/resistivity/apical_group", "pyr_model2/resistivity/basal_group",
               "pyr_model2/specificCapacitance/*"]


@pytest.fixture(scope="module")
def bahl():
    lems = BAHL / "LEMS_pyr_multi_comp.xml"
    if not lems.is_file():
        pytest.skip(f"the real-model corpus is not here ({CORPUS}): no Bahl L5 cell")
    return Case(lems, BAHL_PARAMS, 10.0, name="sens_bahl")


@pytest.mark.slow
def test_reduced_l5_sensitivities_equal_jvp_and_finite_differences(bahl):
    _check_jvp(bahl)
    key = next(iter(bahl.m.OUTPUTS))
    _check_fd(bahl, [key], paths={"pyr_model2/apicaltree_g_kfast/condDensity/c1",
                                  "pyr_model2/resistivity/apical_group"})


# ============================================================================ Smith L2/3

#: Smith et al. 2013's L2/3 cell (2953 segments, 849 NEURON nodes, 7 channel types on
#: soma, axon and 100+ dendritic sections; no Ca pool: kca reads NEURON's default [Ca])
#: driven at the soma so that it fires one spike within the run (50 mV at 1.9 ms; the
#: dendritic node under segment 2800, on dend4_121, follows to 41 mV).
SMITH_LEMS = """<Lems>
    <Target component="sim"/>
    <Include file="Cells.xml"/>
    <Include file="Networks.xml"/>
    <Include file="Simulation.xml"/>
    <Include file="L23_NoHotSpot.cell.nml"/>
    <pulseGenerator id="stim" delay="0.5ms" duration="10ms" amplitude="2nA"/>
    <network id="net" type="networkWithTemperature" temperature="35degC">
        <population id="pop" component="L23_NoHotSpot" size="1"/>
        <inputList id="in" population="pop" component="stim">
            <input id="0" target="../pop/0/L23_NoHotSpot" destination="synapses"/>
        </inputList>
    </network>
    <Simulation id="sim" length="5ms" step="0.025ms" target="net">
        <OutputFile id="of" fileName="v.dat">
            <OutputColumn id="soma" quantity="pop/0/L23_NoHotSpot/0/v"/>
            <OutputColumn id="dend" quantity="pop/0/L23_NoHotSpot/2800/v"/>
        </OutputFile>
    </Simulation>
</Lems>
"""
SMITH_PARAMS = ["L23_NoHotSpot/na_dends/condDensity", "L23_NoHotSpot/it_dends/condDensity",
                "L23_NoHotSpot/kv_soma/condDensity", "na/m/forwardRate/midpoint",
                "kv/n/reverseRate/rate", "it/h/steadyState/midpoint",
                "L23_NoHotSpot/specificCapacitance/all", "L23_NoHotSpot/resistivity/all"]
#: This cell's primal carries ~30x more rounding than the models above: measured
#: max |FD - S| / max |S| grows as 1/h below h = 1e-3 |theta| (soma, na_dends condDensity:
#: 1e-9, 1.4e-8, 6.6e-8, 2.9e-7 at h = 1e-2, 1e-3, 1e-4, 1e-5; it_dends condDensity: 2e-9,
#: 6e-9, 8e-8, 3.4e-6), i.e. G ~ 1e3-3e3 in the rounding model above (plausibly its
#: small nodes, areas down to 1.3 um2: axial terms ~|a v| large against C/dt, which
#: cancel in the right-hand side).  So its references use larger steps, where truncation is
#: still small: the better of h = 1e-2 and 1e-3 |theta| is at most 1.0e-8 over the 8
#: parameters and 2 traces (the Na midpoint at 1e-3; 1e-2 truncates it to 1e-4), a factor
#: 10 below FD_TOL, which is kept.
SMITH_FD_STEPS = (1e-2, 1e-3)


@pytest.fixture(scope="module")
def smith(tmp_path_factory):
    if not SMITH.is_dir():
        pytest.skip(f"the real-model corpus is not here ({CORPUS}): no Smith L2/3 cell")
    path = tmp_path_factory.mktemp("smith_sens") / "LEMS_smith.xml"
    path.write_text(SMITH_LEMS)
    return Case(path, SMITH_PARAMS, 5.0, [SMITH], name="sens_smith",
                fd_steps=SMITH_FD_STEPS)


@pytest.mark.slow
def test_l23_cell_sensitivities_equal_jvp_and_finite_differences(smith):
    assert int(smith.m.N_NODES) > 800                    # the full morphology, not a reduction
    assert np.max(np.asarray(smith.rec["of/soma"])) > 0  # the run covers a spike
    _check_jvp(smith)
    _check_fd(smith, ["of/soma", "of/dend"])
