"""Shared test fixtures: where the real-model corpus lives."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/corpus beside the checkout (the published models the conformance tests use).
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
MODELS = Path(__file__).resolve().parents[1] / "models"
#: ACnet2's generated NeuroML2 folder (pyr_4_sym: a small multicompartment cell).
ACNET = CORPUS / "OpenSourceBrain+ACnet2" / "neuroConstruct" / "generatedNeuroML2"

#: A LEMS simulation of ACnet2's pyr_4_sym (9 sections) under two current steps: it spikes
#: at the soma.  Include its folder (ACNET) with -I / include_dirs.
PYR_LEMS = """<Lems>
    <Target component="sim"/>
    <Include file="Cells.xml"/>
    <Include file="Networks.xml"/>
    <Include file="Simulation.xml"/>
    <Include file="pyr_4_sym.cell.nml"/>
    <pulseGenerator id="soma_stim" delay="5ms" duration="20ms" amplitude="1.5nA"/>
    <pulseGenerator id="dend_stim" delay="12ms" duration="4ms" amplitude="0.2nA"/>
    <network id="net" type="networkWithTemperature" temperature="6.3degC">
        <population id="pop" component="pyr_4_sym" size="1"/>
        <inputList id="in_soma" population="pop" component="soma_stim">
            <input id="0" target="../pop/0/pyr_4_sym" destination="synapses"/>
        </inputList>
        <inputList id="in_dend" population="pop" component="dend_stim">
            <input id="0" target="../pop/0/pyr_4_sym" destination="synapses" segmentId="4"
                   fractionAlong="0.7"/>
        </inputList>
    </network>
    <Simulation id="sim" length="40ms" step="0.025ms" target="net">
        <OutputFile id="of" fileName="v.dat">
            <OutputColumn id="soma" quantity="pop/0/pyr_4_sym/0/v"/>
            <OutputColumn id="apical4" quantity="pop/0/pyr_4_sym/4/v"/>
            <OutputColumn id="basal2" quantity="pop/0/pyr_4_sym/8/v"/>
        </OutputFile>
    </Simulation>
</Lems>
"""


def corpus_repos() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_dir()) if CORPUS.is_dir() else []


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the real-model corpus is not here ({CORPUS}); it lives beside the "
                    "checkout as ../shared/corpus in CI")
    return CORPUS
