"""Issue 5, demonstration (a), through both backends: ``tune`` recovers five perturbed
conductance densities of a multicompartment corpus cell (ACnet2's pyr_4_sym, 9 segments:
Na, Kdr, Ca, Kahp on the soma, the leak everywhere) to within 1 % from a target made with
the original values, with Adam on the exact gradient.

The protocol is three copies of the cell in one simulation, each under its own current step
(docs/tune.md, "Worked example"): a hyperpolarising step (the leak alone), a depolarising
step just below threshold (Na window current and Kdr against the leak) and a spike train
(spike shape and adaptation: Na, Kdr, Ca, Kahp).  In a spike train the five sensitivities
are nearly collinear (all shift the spike times): one cell under a hyperpolarising step and
then a spike train was still 2.7 % off after 200 epochs.  Settings: 180 epochs, --lr 0.03,
cosine schedule (constant rates end wherever the last oscillation of a rugged loss leaves
them: 0.5 % or 1.7 % off depending on rounding in the 15th digit of the start).  Measured:
all five within 0.05 %, 146 s for the whole test on 2 busy cores.

Through NEURON (15 shadow cells, one NEURON process for all epochs: backends/neuron/
session.py), 240 epochs: all five within 0.006 %; 70 s for the whole test on 2 cores at
load 7.5 with the mods already built, 217 s when it compiles them (two libraries).
"""

from __future__ import annotations

import json

import pytest

from conftest import ACNET, CORPUS
from nml_gradiff.cli import main
from nml_gradiff.ingest.simulation import load_simulation
from nml_gradiff.runtime.run import run_lems
from nml_gradiff.runtime.writeback import write_values

PROTOCOL = """<Lems>
    <Target component="sim"/>
    <Include file="Cells.xml"/>
    <Include file="Networks.xml"/>
    <Include file="Simulation.xml"/>
    <Include file="pyr_4_sym.cell.nml"/>
    <pulseGenerator id="hyper" delay="2ms" duration="60ms" amplitude="-0.3nA"/>
    <pulseGenerator id="sub" delay="2ms" duration="60ms" amplitude="0.15nA"/>
    <pulseGenerator id="spikes" delay="5ms" duration="40ms" amplitude="1.5nA"/>
    <network id="net" type="networkWithTemperature" temperature="6.3degC">
        <population id="pop" component="pyr_4_sym" size="3"/>
        <inputList id="in_hyper" population="pop" component="hyper">
            <input id="0" target="../pop/0/pyr_4_sym" destination="synapses"/>
        </inputList>
        <inputList id="in_sub" population="pop" component="sub">
            <input id="0" target="../pop/1/pyr_4_sym" destination="synapses"/>
        </inputList>
        <inputList id="in_spikes" population="pop" component="spikes">
            <input id="0" target="../pop/2/pyr_4_sym" destination="synapses"/>
        </inputList>
    </network>
    <Simulation id="sim" length="60ms" step="0.05ms" target="net">
        <OutputFile id="of" fileName="v.dat">
            <OutputColumn id="hyper" quantity="pop/0/pyr_4_sym/0/v"/>
            <OutputColumn id="sub" quantity="pop/1/pyr_4_sym/0/v"/>
            <OutputColumn id="spikes" quantity="pop/2/pyr_4_sym/0/v"/>
        </OutputFile>
    </Simulation>
</Lems>
"""

#: The corpus values (pyr_4_sym.cell.nml, S/cm2) and the factors of the perturbed start.
TRUE = {"pyr_4_sym/Ca_pyr_soma_group/condDensity": 0.01,
        "pyr_4_sym/Kahp_pyr_soma_group/condDensity": 0.0025,
        "pyr_4_sym/Kdr_pyr_soma_group/condDensity": 0.08,
        "pyr_4_sym/LeakConductance_pyr_all/condDensity": 0.0001420051,
        "pyr_4_sym/Na_pyr_soma_group/condDensity": 0.12}
FACTORS = [1.15, 0.85, 1.12, 0.82, 0.90]
#: Through NEURON, 180 epochs (the JAX test's) ended 0.75 % off (Kahp; loss 0.25): Adam's
#: path on this rugged loss depends on rounding (docs/tune.md), and this one was still
#: following the Ca-Kahp valley when the cosine rate reached 0.  240 epochs: 0.006 %.
EPOCHS_NEURON = 240


def _recover(tmp_path, backend: str, epochs: int) -> None:
    """Target from the original cell, perturbed start, ``tune --backend BACKEND``; the best
    epoch must be within 1 % of every original value."""
    lems = tmp_path / "LEMS_pyr_tune.xml"
    lems.write_text(PROTOCOL)
    model, _ = load_simulation(lems, include_dirs=[ACNET])
    assert {p.path: p.value for p in model.parameters() if p.path in TRUE} == TRUE
    run_lems(lems, backend, tmp_path / "target", include_dirs=[ACNET])
    start = {p: v * f for (p, v), f in zip(TRUE.items(), FACTORS)}
    perturbed = write_values(lems, model.parameters(), start, tmp_path / "perturbed",
                             include_dirs=[ACNET])
    # The copy is self-contained: the cell that came through -I now sits beside the LEMS
    # file, so no -I is needed (and the original could not be picked up through one).
    assert (perturbed.parent / "pyr_4_sym.cell.nml").is_file()
    out = tmp_path / "tuned"
    assert main(["tune", str(perturbed), "--backend", backend, "--params",
                 "pyr_4_sym/*/condDensity", "--target-trace",
                 str(tmp_path / "target" / "v.dat"), "--epochs", str(epochs), "--lr", "0.03",
                 "--schedule", "cosine", "-o", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    first, best = history["epochs"][0], history["epochs"][history["best_epoch"]]
    assert first["params"] == pytest.approx(start, rel=1e-12)
    assert best["loss"] < 1e-4 * first["loss"]
    for path, value in TRUE.items():
        assert best["params"][path] == pytest.approx(value, rel=0.01), path


@pytest.fixture
def acnet():
    if not ACNET.is_dir():
        pytest.skip(f"the real-model corpus is not here ({CORPUS}): no ACnet2 pyr_4_sym")


@pytest.mark.slow
def test_recovers_five_conductances_of_pyr_4_sym(tmp_path, acnet):
    """Measured: loss 6849 -> 0.0016 mV2 ms, every conductance within 0.05 %."""
    pytest.importorskip("jax")
    _recover(tmp_path, "jax", 180)


@pytest.mark.slow
def test_recovers_five_conductances_of_pyr_4_sym_through_neuron(tmp_path, acnet):
    """The same fit through NEURON's shadow cells (15 shadows: 3 cells x 5 conductances),
    NEURON's own trace as the target.  Measured: loss 6849 -> 1.8e-5 mV2 ms (epoch 236),
    every conductance within 0.006 %."""
    pytest.importorskip("neuron")
    _recover(tmp_path, "neuron", EPOCHS_NEURON)
