"""NEURON sensitivities (shadow cells with companion mechanisms) against central finite
differences of NEURON's own primal, at the model's dt.

The shadows compute the exact derivative of NEURON's fixed-step update
(docs/neuron-gradients.md), so the only error left is that of the reference: a central
difference with relative step 1e-6 has a truncation error O(h^2) and a rounding error
O(eps/h).  Measured on these traces (spiking, where the sensitivities grow by orders of
magnitude around each spike) the disagreement is 2e-9 .. 7e-6 relative (max-norm); on HH
it falls 100x when the step is cut 10x, i.e. it is the reference's own truncation error
(docs/neuron-gradients.md has the table).  The
tolerance, 1e-4, is 25x above that floor and 10x below the goal of issue 5 (1e-3); the
same sensitivities read one sample off (the lag not undone) miss it by 6 % on the HH trace,
and issue 5 reports 17 % for the continuous sensitivity equations integrated beside the
primal, so the test tells an exact scheme from an approximate one.

Finite differences change a parameter through the plan's RANGE values (no rebuild).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nml_gradiff.backends.neuron.build import build
from nml_gradiff.backends.neuron.emit import neuron_name
from nml_gradiff.backends.neuron.plan import Planner
from nml_gradiff.backends.neuron.shadow_plan import ShadowPlanner, make_sens_plan, resolve
from nml_gradiff.errors import UnsupportedError
from nml_gradiff.ingest.simulation import load_simulation
from nml_gradiff.runtime.run import run_lems

from conftest import ACNET, CORPUS, MODELS, PYR_LEMS

pytest.importorskip("neuron")

HH = MODELS / "hh" / "LEMS_hh.xml"
REL_STEP = 1e-6
TOLERANCE = 1e-4


HH_PARAMS = ["hh_cell/naChans/condDensity", "hh_na/m/forwardRate/midpoint"]
#: gNa, a K gate's kinetics, the leak on every section, the KCa channel reading the pool,
#: the pool's own decay and the kinetics of the Ca channel that feeds it.
PYR_PARAMS = ["pyr_4_sym/Na_pyr_soma_group/condDensity", "Kdr_pyr/n/forwardRate/midpoint",
              "pyr_4_sym/LeakConductance_pyr_all/condDensity",
              "pyr_4_sym/Kahp_pyr_soma_group/condDensity", "Ca_conc/decayConstant",
              "Ca_pyr/m/forwardRate/midpoint"]


def _run_plan(data: dict, library: Path, tmp: Path) -> dict:
    plan_file, out = tmp / "plan.json", tmp / "out.npz"
    plan_file.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "nml_gradiff.backends.neuron.runner",
                           str(plan_file), str(library), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


def _perturbed(data: dict, model, target, rel: float) -> tuple[dict, float]:
    """The primal plan with the parameter scaled by (1 + rel), and the parameter's value."""
    data = copy.deepcopy({k: v for k, v in data.items() if k != "sensitivity"})
    value = (model.mechanisms[target.mechanism].parameters[target.symbol].value
             if target.placement is None else None)
    for ct in data["cell_types"].values():
        for pl in ct["placements"]:
            if target.placement is not None and pl["id"] == target.placement:
                value = max(abs(x) for x in pl["range"][target.symbol])
                pl["range"][target.symbol] = [x * (1 + rel) for x in pl["range"][target.symbol]]
            elif target.placement is None and pl["neuron_name"] == neuron_name(target.mechanism):
                n = len(next(iter(pl["range"].values())))
                pl["range"][target.symbol] = [value * (1 + rel)] * n
    return data, value


def _errors(model, sim, params, tmp: Path, tstop: float | None = None, plan=None) -> dict:
    """Relative max-norm error of each (parameter, recording) against central FD."""
    plan = plan or make_sens_plan(model, sim, params)
    if tstop is not None:
        plan.data["tstop"] = tstop
    library = build(plan.mods)
    sens = _run_plan(plan.data, library, tmp)
    keys = list(plan.data["record"])
    errors = {}
    for j, path in enumerate(params):
        target = resolve(model, path)
        up, value = _perturbed(plan.data, model, target, REL_STEP)
        down, _ = _perturbed(plan.data, model, target, -REL_STEP)
        up, down = _run_plan(up, library, tmp), _run_plan(down, library, tmp)
        for i, key in enumerate(keys):
            fd = (up[f"r{i}"] - down[f"r{i}"]) / (2 * REL_STEP * value)
            assert np.max(np.abs(fd)) > 0, (path, key)
            errors[path, key] = np.max(np.abs(sens[f"S{i}"][:, j] - fd)) / np.max(np.abs(fd))
    return errors


@pytest.mark.slow
def test_hh_matches_finite_differences(tmp_path):
    model, sim = load_simulation(HH)
    errors = _errors(model, sim, HH_PARAMS, tmp_path, tstop=45.0)   # two spikes
    assert max(errors.values()) < TOLERANCE, errors


def test_gate_sensitivities_of_every_shadow_match_finite_differences(tmp_path):
    """Gate recordings: their sensitivities live in the ``sensjac_`` mod on the primal,
    one per shadow (sens_shared.py); each column against its own finite difference, so a
    shadow reading another's weights or POINTERs fails.  Three shadows, 20 ms, one spike."""
    model, sim = load_simulation(HH)
    planner = Planner(model, sim)
    planner.build()
    record = planner.plan.data["record"]
    where = next(iter(record.values()))
    for gate, mod in (("m_q", "hh_na"), ("n_q", "hh_k")):
        record[f"{gate}/q"] = {**{k: where[k] for k in ("population", "index", "section",
                                                        "x")},
                               "what": "range", "name": f"{gate}_{mod}"}
    params = ["hh_cell/naChans/condDensity", "hh_na/m/forwardRate/midpoint",
              "hh_cell/kChans/condDensity"]
    plan = ShadowPlanner(planner, params).build()
    refs = [r["ref"][0] for r in plan.data["sensitivity"]["record"].values()]
    assert refs == ["v", "jacobian", "jacobian"]
    assert {"sensjac_hh_na", "sensjac_hh_k", "sensjac_hh_leak"} <= set(plan.mods)
    errors = _errors(model, sim, params, tmp_path, tstop=20.0, plan=plan)
    assert max(errors.values()) < TOLERANCE, errors


#: A three-state kinetic-scheme K channel (NMODL KINETIC/sparse in NEURON).
KS_CHANNEL = """<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="ks_doc">
    <ionChannelKS id="k_ks" conductance="10pS" species="k">
        <gateKS id="n" instances="1">
            <closedState id="c1"/>
            <closedState id="c2"/>
            <openState id="o"/>
            <forwardTransition id="f1" from="c1" to="c2">
                <rate type="HHExpLinearRate" rate="0.2per_ms" midpoint="-55mV" scale="10mV"/>
            </forwardTransition>
            <reverseTransition id="r1" from="c1" to="c2">
                <rate type="HHExpRate" rate="0.125per_ms" midpoint="-65mV" scale="-80mV"/>
            </reverseTransition>
            <forwardTransition id="f2" from="c2" to="o">
                <rate type="HHExpLinearRate" rate="0.1per_ms" midpoint="-55mV" scale="10mV"/>
            </forwardTransition>
            <reverseTransition id="r2" from="c2" to="o">
                <rate type="HHExpRate" rate="0.25per_ms" midpoint="-65mV" scale="-80mV"/>
            </reverseTransition>
        </gateKS>
    </ionChannelKS>
</neuroml>
"""


@pytest.mark.slow
def test_kinetic_scheme_matches_finite_differences(tmp_path):
    """The HH cell plus a kinetic-scheme K channel (2 mS/cm2): still spiking."""
    (tmp_path / "ks_k.nml").write_text(KS_CHANNEL)
    (tmp_path / "hh_channels.nml").write_text((HH.parent / "hh_channels.nml").read_text())
    cell = (HH.parent / "hh_cell.nml").read_text()
    cell = cell.replace('<include href="hh_channels.nml"/>',
                        '<include href="hh_channels.nml"/><include href="ks_k.nml"/>')
    cell = cell.replace('<channelDensity id="leak"',
                        '<channelDensity id="ksChans" ionChannel="k_ks" condDensity="2mS_per_cm2"'
                        ' erev="-77mV" ion="k"/><channelDensity id="leak"')
    (tmp_path / "hh_cell.nml").write_text(cell)
    (tmp_path / "LEMS_ks.xml").write_text(HH.read_text())
    model, sim = load_simulation(tmp_path / "LEMS_ks.xml")
    params = ["hh_cell/ksChans/condDensity", "k_ks/n/f2/rate/midpoint"]
    errors = _errors(model, sim, params, tmp_path, tstop=45.0)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.fixture(scope="module")
def pyr_model(tmp_path_factory):
    if not ACNET.is_dir():
        pytest.skip(f"the real-model corpus is not here ({CORPUS}): no ACnet2 pyr_4_sym")
    path = tmp_path_factory.mktemp("pyr") / "LEMS_pyr.xml"
    path.write_text(PYR_LEMS)
    return load_simulation(path, include_dirs=[ACNET])


@pytest.mark.slow
@pytest.mark.corpus
def test_branched_cell_with_calcium_matches_finite_differences(pyr_model, tmp_path):
    """ACnet2's pyr_4_sym: 9 sections, a Ca pool read by a KCa channel."""
    model, sim = pyr_model
    errors = _errors(model, sim, PYR_PARAMS, tmp_path)
    assert max(errors.values()) < TOLERANCE, errors


def test_run_writes_sens_npz(tmp_path):
    lems = tmp_path / "LEMS_hh.xml"
    for f in HH.parent.glob("*.*ml"):
        (tmp_path / f.name).write_text(f.read_text())
    written = run_lems(lems, "neuron", tmp_path / "out", param_globs=HH_PARAMS)
    npz = next(p for p in written if p.name.endswith(".sens.npz"))
    data = np.load(npz)
    T = len(data["t"])
    assert list(data["params"]) == HH_PARAMS[::-1]       # the model's order
    assert list(data["quantities"]) == ["pop[0]/v"]
    assert data["values"].shape == (T, 1) and data["sens"].shape == (T, 1, 2)
    assert data["sens"][0].tolist() == [[0.0, 0.0]]          # S(0) = 0
    assert np.abs(data["sens"][:, 0, 0]).max() > 0
    # values in SI (V), sensitivities per parameter unit of inspect --params (S/cm2)
    assert -0.1 < data["values"][0, 0] < 0


@pytest.mark.parametrize("path, reason", [
    ("hh_cell/specificCapacitance/all", "cell properties"),
    ("step/amplitude", "sensitivity with respect to step/amplitude"),
])
def test_unsupported_parameters_are_refused(path, reason):
    model, sim = load_simulation(HH)
    with pytest.raises(UnsupportedError, match=reason) as info:
        make_sens_plan(model, sim, [path])
    assert str(info.value).startswith("unsupported:")


def test_convert_writes_companions_and_a_standalone_loader(tmp_path):
    """``convert --target neuron --params``: companion mods, the plan's shadows and the
    standalone loader (run as a script, it imports its modules from the output folder)."""
    from nml_gradiff.cli import main
    out = tmp_path / "out"
    assert main(["convert", str(HH), "--target", "neuron", "--params", *HH_PARAMS,
                 "-o", str(out)]) == 0
    folder = out / "LEMS_hh"
    mods = {p.name: p.read_text() for p in (folder / "mods").glob("*.mod")}
    assert {"sens_hh_na.mod", "sens_hh_k.mod", "sens_hh_leak.mod"} <= set(mods)
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["sensitivity"]["params"] == HH_PARAMS[::-1]
    library = build({n.removesuffix(".mod"): t for n, t in mods.items()})
    proc = subprocess.run([sys.executable, "nmlg_runner.py", "plan.json", str(library),
                           str(tmp_path / "o.npz")], cwd=folder, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = np.load(tmp_path / "o.npz")
    assert data["S0"].shape == (len(data["t"]), 2)
    assert data["S0"][0].tolist() == [0.0, 0.0] and np.abs(data["S0"]).max() > 0
