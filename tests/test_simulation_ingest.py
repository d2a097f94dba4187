"""LEMS simulations and networks into the IR (ingest/simulation.py).

Small LEMS files are written into tmp_path around the project's own HH cell
(models/hh/hh_cell.nml); every error names file, line and element.  The corpus test reads
every LEMS_*.xml of ../shared/corpus: each reads or is refused with a listed reason.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from conftest import MODELS
from test_corpus_ingest import include_dirs

from nml_gradiff.errors import ModelError, UnsupportedError
from nml_gradiff.ingest import xml
from nml_gradiff.ingest.simulation import (check_output_path, load_simulation,
                                           parse_cell_target, parse_quantity_path,
                                           read_simulation)
from nml_gradiff.ingest.units import UnitSystem
from nml_gradiff.ir.simulation import Instance

NETWORK = """
    <network id="net" type="networkWithTemperature" temperature="6.3degC">
        <population id="pop" component="hh_cell" size="2"/>
        <population id="plist" component="hh_cell" type="populationList">
            <instance id="0"><location x="1" y="2" z="3"/></instance>
            <instance id="5"><location x="0" y="0" z="0"/></instance>
        </population>
        <explicitInput target="pop[0]" input="step"/>
        <inputList id="stims" population="pop" component="step2">
            <input id="0" target="../pop/1/hh_cell" destination="synapses" segmentId="0"
                   fractionAlong="0.25"/>
        </inputList>
        <inputList id="wstims" population="plist" component="step2">
            <inputW id="a" target="../plist/5/hh_cell" destination="synapses" weight="2.5"/>
        </inputList>
    </network>
"""

SIMULATION = """
    <Simulation id="sim1" length="100ms" step="0.01ms" target="net" seed="42">
        <Display id="d" title="v" timeScale="1ms" xmin="0" xmax="100" ymin="-80" ymax="40">
            <Line id="l" quantity="pop[0]/v" scale="1mV" color="#000000" timeScale="1ms"/>
        </Display>
        <OutputFile id="out_v" fileName="results/v.dat">
            <OutputColumn id="v0" quantity="pop[0]/v"/>
            <OutputColumn id="v1" quantity="pop/1/hh_cell/v"/>
            <OutputColumn id="v5" quantity="plist/5/hh_cell/0/v"/>
            <OutputColumn id="m"
                quantity="pop[0]/hh_biophysics/membraneProperties/naChans/hh_na/m/q"/>
            <OutputColumn id="g"
                quantity="pop[1]/hh_biophysics/membraneProperties/naChans/gDensity"/>
        </OutputFile>
        <EventOutputFile id="spikes" fileName="results/hh.spikes" format="TIME_ID">
            <EventSelection id="0" select="pop[0]" eventPort="spike"/>
            <EventSelection id="1" select="plist/5/hh_cell" eventPort="spike"/>
        </EventOutputFile>
    </Simulation>
"""


def lems_text(network=NETWORK, simulation=SIMULATION,
              target='<Target component="sim1"/>') -> str:
    return f"""<Lems>
    {target}
    <Include file="Cells.xml"/>
    <Include file="Networks.xml"/>
    <Include file="Simulation.xml"/>
    <Include file="hh_cell.nml"/>
    <pulseGenerator id="step" delay="20ms" duration="60ms" amplitude="0.1nA"/>
    <pulseGenerator id="step2" delay="10ms" duration="5ms" amplitude="0.2nA"/>
    {network}
    {simulation}
</Lems>
"""


@pytest.fixture
def folder(tmp_path) -> Path:
    # hh_cell.nml includes hh_channels.nml: both are our own models.
    for name in ("hh_cell.nml", "hh_channels.nml"):
        shutil.copy(MODELS / "hh" / name, tmp_path / name)
    return tmp_path


def write(folder: Path, replace: dict[str, str] | None = None, **parts) -> Path:
    text = lems_text(**parts)
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "LEMS_test.xml"
    path.write_text(text)
    return path


def read(path: Path, **kw):
    """read_simulation on the loaded documents, without a model (the light path)."""
    return read_simulation(xml.load(path).documents, UnitSystem.standard(), **kw)


# ------------------------------------------------------------------------------ reading

def test_reads_simulation_network_inputs_outputs(folder):
    model, sim = load_simulation(write(folder))
    assert "step" in model.mechanisms and "hh_cell" in model.cells
    assert (sim.id, sim.length_ms, sim.dt_ms, sim.target_network) == ("sim1", 100.0, 0.01, "net")
    assert sim.temperature_degC == pytest.approx(6.3)
    assert sim.seed == 42 and sim.source_file.endswith("LEMS_test.xml")
    pop, plist = sim.populations["pop"], sim.populations["plist"]
    assert (pop.component, pop.size, pop.instances) == ("hh_cell", 2, [])
    assert plist.size == 2
    assert plist.instances == [Instance(0, (1.0, 2.0, 3.0)), Instance(5, (0.0, 0.0, 0.0))]


def test_inputs(folder):
    sim = read(write(folder))
    explicit, listed, weighted = sim.inputs
    assert (explicit.id, explicit.input, explicit.population, explicit.cell_index) == \
        ("explicitInput[0]", "step", "pop", 0)
    # jNeuroML's defaults: segment 0, middle of the segment, weight 1
    assert (explicit.segment_id, explicit.fraction_along, explicit.weight) == (0, 0.5, 1.0)
    assert (listed.id, listed.input, listed.population, listed.cell_index) == \
        ("stims/0", "step2", "pop", 1)
    assert (listed.fraction_along, listed.input_list) == (0.25, "stims")
    assert (weighted.id, weighted.population, weighted.cell_index, weighted.weight) == \
        ("wstims/a", "plist", 5, 2.5)


def test_outputs(folder):
    sim = read(write(folder))
    (out,) = sim.outputs
    assert (out.id, out.path) == ("out_v", "results/v.dat")
    refs = {c.id: c.quantity for c in out.columns}
    assert list(refs) == ["v0", "v1", "v5", "m", "g"]
    assert (refs["v0"].population, refs["v0"].index, refs["v0"].variable) == ("pop", 0, "v")
    assert (refs["v5"].population, refs["v5"].index, refs["v5"].segment) == ("plist", 5, 0)
    assert refs["m"].path == ["hh_biophysics", "membraneProperties", "naChans", "hh_na", "m"]
    assert refs["g"].variable == "gDensity" and refs["g"].index == 1
    (events,) = sim.event_outputs
    assert (events.id, events.path, events.format) == ("spikes", "results/hh.spikes", "TIME_ID")
    selected = [(s.id, s.select.population, s.select.index, s.event_port)
                for s in events.selections]
    assert selected == [("0", "pop", 0, "spike"), ("1", "plist", 5, "spike")]
    assert events.selections[0].select.variable is None


def test_plain_network_without_temperature_and_explicit_target(folder):
    network = NETWORK.replace(' type="networkWithTemperature" temperature="6.3degC"', "")
    sim = read(write(folder, network=network, target=""), target_id="sim1")
    assert sim.temperature_degC is None


def test_plain_network_with_temperature_attribute(folder):
    network = NETWORK.replace(' type="networkWithTemperature"', "")
    assert read(write(folder, network=network)).temperature_degC == pytest.approx(6.3)


def test_simulation_as_component_and_no_seed(folder):
    simulation = (SIMULATION.replace("<Simulation ", '<Component type="Simulation" ')
                  .replace("</Simulation>", "</Component>").replace(' seed="42"', ""))
    sim = read(write(folder, simulation=simulation))
    assert sim.seed is None and sim.length_ms == 100.0


def test_the_models_own_lems_file_reads():
    model, sim = load_simulation(MODELS / "hh" / "LEMS_hh.xml")
    assert sim.inputs[0].input == "step" and model.mechanisms["step"].kind == "input"
    assert sim.event_outputs[0].selections[0].select.population == "pop"


# ------------------------------------------------------------------------ quantity paths

@pytest.mark.parametrize("text, population, index, segment, path, variable, cell", [
    ("pop[0]/v", "pop", 0, None, [], "v", None),
    ("hhpop/0/hhcell/v", "hhpop", 0, None, [], "v", "hhcell"),
    ("pop/0/cell/v", "pop", 0, None, [], "v", "cell"),
    ("CG_CML[0]/biophys/membraneProperties/naChans/gDensity", "CG_CML", 0, None,
     ["biophys", "membraneProperties", "naChans"], "gDensity", None),
    ("pop[0]/biophys/membraneProperties/Na_all/Na/m/q", "pop", 0, None,
     ["biophys", "membraneProperties", "Na_all", "Na", "m"], "q", None),
    ("pop/0/cell/3/v", "pop", 0, 3, [], "v", "cell"),
    ("pop/12/cell/3/biophys/membraneProperties/Na_all/Na/m/q", "pop", 12, 3,
     ["biophys", "membraneProperties", "Na_all", "Na", "m"], "q", "cell"),
    ("pop[0]/caConc", "pop", 0, None, [], "caConc", None),
    ("pasPop1[0]/synapses:nmdaSyn1:0/g", "pasPop1", 0, None, ["synapses:nmdaSyn1:0"], "g",
     None),
    ("pop0/1/MultiCompCell/2/synapses:AMPA:0/g", "pop0", 1, 2, ["synapses:AMPA:0"], "g",
     "MultiCompCell"),
    ("izhPop[0]/pulseGen0/i", "izhPop", 0, None, ["pulseGen0"], "i", None),
])
def test_quantity_path_forms(text, population, index, segment, path, variable, cell):
    ref, named_cell = parse_quantity_path(text)
    assert (ref.population, ref.index, ref.segment, ref.path, ref.variable) == \
        (population, index, segment, path, variable)
    assert named_cell == cell and ref.text == text


@pytest.mark.parametrize("text", [
    "Vs",                       # a variable of a non-network target
    "net1/hhpop[0]/v",          # network-qualified (Display-only in the corpus)
    "pop[0]", "pop/0/cell",     # a cell, no variable
    "pop[0]/", "pop[0]//v", "pop[x]/v", "pop[-1]/v", "pop[0]/a:b/v", "pop[0]/3",
    "pop/\u0663/cell/v",        # an Arabic-Indic digit is not an index
    "pop/0/ce ll/v",
])
def test_bad_quantity_paths(text):
    with pytest.raises(ValueError):
        parse_quantity_path(text)


def test_event_selection_paths():
    assert parse_quantity_path("pop[3]", cell_only=True)[0].index == 3
    ref, cell = parse_quantity_path("pop/2/cell", cell_only=True)
    assert (ref.population, ref.index, ref.variable, cell) == ("pop", 2, None, "cell")
    with pytest.raises(ValueError):
        parse_quantity_path("pop[0]/v", cell_only=True)


@pytest.mark.parametrize("text, expected", [
    ("pop[2]", ("pop", 2, None)), ("../pop/0/cell", ("pop", 0, "cell")),
    ("pop/1/cell", ("pop", 1, "cell")), ("../pop[4]", ("pop", 4, None)),
    ("pop/3", ("pop", 3, None)),
])
def test_cell_targets(text, expected):
    assert parse_cell_target(text) == expected


@pytest.mark.parametrize("text", ["pop", "pop[a]", "../../pop/0/cell", "pop/0/cell/v"])
def test_bad_cell_targets(text):
    with pytest.raises(ValueError):
        parse_cell_target(text)


@pytest.mark.parametrize("path", ["v.dat", "results/v.dat", "a/../b.dat", "./x/./y.dat"])
def test_output_paths_inside(path):
    assert check_output_path(path) == path


@pytest.mark.parametrize("path", ["/tmp/v.dat", "../v.dat", "a/../../v.dat", "C:\\v.dat",
                                  "\\\\server\\share\\v.dat", "a\\..\\..\\v.dat", " ", "a\x00"])
def test_output_paths_refused(path):
    with pytest.raises(ValueError):
        check_output_path(path)


# ------------------------------------------------------------------------------- errors

def assert_model_error(path: Path, match: str, element: str, **kw):
    """A ModelError (not an UnsupportedError) naming file, line and element."""
    with pytest.raises(ModelError, match=match) as info:
        read(path, **kw)
    err = info.value
    assert not isinstance(err, UnsupportedError), err
    assert err.file and Path(err.file).name == path.name
    assert err.line and err.element == element, (err.line, err.element)


@pytest.mark.parametrize("replace, match, element", [
    ({'target="net"': 'target="nonet"'}, "target network 'nonet' is not defined",
     "Simulation"),
    ({'target="pop[0]" input="step"': 'target="nopop[0]" input="step"'},
     "unknown population 'nopop'", "explicitInput"),
    ({'component="hh_cell" size="2"': 'component="nocell" size="2"'},
     "unknown component 'nocell'", "population"),
    ({'input="step"': 'input="nostep"'}, "unknown component 'nostep'", "explicitInput"),
    ({'component="step2">\n            <input ': 'component="nostep">\n            <input '},
     "unknown component 'nostep'", "inputList"),
    ({'target="pop[0]" input="step"': 'target="pop[5]" input="step"'},
     "population 'pop' has no cell 5", "explicitInput"),
    ({'quantity="pop[0]/v"/>\n            <OutputColumn id="v1"':
      'quantity="pop[5]/v"/>\n            <OutputColumn id="v1"'},
     "population 'pop' has no cell 5", "OutputColumn"),
    ({"plist/5/hh_cell/0/v": "plist/1/hh_cell/0/v"}, "population 'plist' has no cell 1",
     "OutputColumn"),
    ({'target="../plist/5/hh_cell"': 'target="../plist/2/hh_cell"'},
     "population 'plist' has no cell 2", "inputW"),
    ({"pop/1/hh_cell/v": "pop/1/other_cell/v"}, "names cell 'other_cell'", "OutputColumn"),
    ({'select="pop[0]"': 'select="pop[2]"'}, "has no cell 2", "EventSelection"),
    ({'quantity="pop[1]/hh': 'quantity="pop[1]//hh'}, "not a valid path element",
     "OutputColumn"),
    ({"pop/1/hh_cell/v": "Vs"}, "does not start with a cell", "OutputColumn"),
    ({'select="pop[0]"': 'select="pop[0]/v"'}, "must select a cell", "EventSelection"),
    ({'fileName="results/v.dat"': 'fileName="/tmp/v.dat"'}, "absolute path", "OutputFile"),
    ({'fileName="results/hh.spikes"': 'fileName="../../hh.spikes"'}, "climbs out",
     "EventOutputFile"),
    ({'format="TIME_ID"': 'format="TIMES"'}, "expected one of TIME_ID, ID_TIME",
     "EventOutputFile"),
    ({'length="100ms"': 'length="100"'}, "has no unit", "Simulation"),
    ({'step="0.01ms"': 'step="0.01mV"'}, "expected time", "Simulation"),
    ({'step="0.01ms"': 'step="-0.01ms"'}, "must be positive", "Simulation"),
    ({'seed="42"': 'seed="forty"'}, "not a non-negative integer", "Simulation"),
    ({'temperature="6.3degC"': 'temperature="6.3mV"'}, "expected temperature", "network"),
    ({'fractionAlong="0.25"': 'fractionAlong="1.5"'}, "outside \\[0, 1\\]", "input"),
    ({'weight="2.5"': 'weight="heavy"'}, "not a number", "inputW"),
    ({'id="v1"': 'id="v0"'}, "duplicate id 'v0'", "OutputColumn"),
    ({'id="spikes"': 'id="out_v"'}, "duplicate id 'out_v'", "EventOutputFile"),
    ({'id="plist"': 'id="pop"'}, "duplicate population 'pop'", "population"),
    ({'<instance id="5">': '<instance id="0">'}, "duplicate instance id 0", "instance"),
    ({'<OutputColumn id="v0"': '<OutputColumn id="v-0"'}, "invalid id", "OutputColumn"),
    ({'<OutputColumn id="g"': '<Record id="g"'}, "<Record> in <OutputFile>", "Record"),
])
def test_errors(folder, replace, match, element):
    assert_model_error(write(folder, replace), match, element)


def test_missing_target(folder):
    path = write(folder, target="")
    with pytest.raises(ModelError, match="no <Target") as info:
        read(path)
    assert info.value.file == str(path.resolve())


def test_target_not_a_simulation(folder):
    assert_model_error(write(folder, target='<Target component="net"/>'),
                       "'net' is a <networkWithTemperature>, not a <Simulation>", "Target")
    assert_model_error(write(folder, target='<Target component="nosim"/>'),
                       "'nosim' is no component", "Target")


@pytest.mark.parametrize("replace, match", [
    ({'component="hh_cell" size="2"': 'component="hh_na" size="2"'},
     "'hh_na' is a channel, not a cell"),
    ({'input="step"': 'input="hh_k"'}, "'hh_k' is a channel, not an input"),
])
def test_kinds_are_checked_with_a_model(folder, replace, match):
    with pytest.raises(ModelError, match=match) as info:
        load_simulation(write(folder, replace))
    assert info.value.line and info.value.element


# -------------------------------------------------------------------------- unsupported

@pytest.mark.parametrize("element", [
    '<projection id="proj" presynapticPopulation="pop" postsynapticPopulation="pop" '
    'synapse="syn"/>',
    '<synapticConnection from="pop[0]" to="pop[1]" synapse="syn" destination="synapses"/>',
    '<continuousProjection id="cp" presynapticPopulation="pop" '
    'postsynapticPopulation="pop"/>',
    '<electricalProjection id="gj" presynapticPopulation="pop" '
    'postsynapticPopulation="pop"/>',
])
def test_connections_are_unsupported(folder, element):
    network = NETWORK.replace("</network>", f"{element}\n    </network>")
    tag = element[1:].split()[0]
    with pytest.raises(UnsupportedError, match="networks with synaptic projections") as info:
        read(write(folder, network=network))
    assert info.value.element == tag and tag in str(info.value) and info.value.line


def test_other_network_children_are_unsupported(folder):
    network = NETWORK.replace("</network>", '<cellSet id="cs" select="pop"/>\n    </network>')
    with pytest.raises(UnsupportedError, match="<cellSet> in a network"):
        read(write(folder, network=network))


def test_target_that_is_not_a_network_is_unsupported(folder):
    """Without the model (the light path) a cell cannot be told from other components."""
    with pytest.raises(UnsupportedError, match="'hh_cell' is a <cell>, not a network"):
        read(write(folder, replace={'target="net"': 'target="hh_cell"'}))


CELL_SIMULATION = """
    <Simulation id="sim1" length="30ms" step="0.01ms" target="hh_cell">
        <OutputFile id="out_v" fileName="v.dat">
            <OutputColumn id="v" quantity="v"/>
            <OutputColumn id="m" quantity="hh_biophysics/membraneProperties/naChans/hh_na/m/q"/>
        </OutputFile>
    </Simulation>
"""


def test_a_simulation_may_target_one_cell(folder):
    """As in jLEMS: one cell, no network; output paths are relative to the cell
    (PinskyRinzel's twoCompartment/LEMS_Figure3.xml)."""
    model, sim = load_simulation(write(folder, simulation=CELL_SIMULATION))
    pop = sim.populations["hh_cell"]
    assert list(sim.populations) == ["hh_cell"] and (pop.component, pop.size) == ("hh_cell", 1)
    assert sim.inputs == [] and sim.temperature_degC is None
    v, m = sim.outputs[0].columns
    assert (v.quantity.population, v.quantity.index, v.quantity.variable) == ("hh_cell", 0, "v")
    assert m.quantity.path == ["hh_biophysics", "membraneProperties", "naChans", "hh_na", "m"]


# ------------------------------------------------------------------------------- corpus

_PROJECTIONS = "networks with synaptic projections"

#: LEMS files refused today, with the reason (issue 3 adds networks with synapses).
UNSUPPORTED = {
    **{f"NeuroML+NeuroML2/LEMSexamples/LEMS_NML2_{name}.xml": _PROJECTIONS for name in (
        "Ex3_Net", "Ex6_NMDA", "Ex7_STP", "Ex11_STDP", "Ex12_Net2", "Ex13_Instances",
        "Ex14_PyNN", "Ex16_Inputs", "Ex19_GapJunctions", "Ex19a_GapJunctionInstances",
        "Ex20_AnalogSynapses", "Ex20a_AnalogSynapsesHH", "Ex21_CurrentBasedSynapses",
        "Ex23_Spiketimes", "Ex25_MultiComp", "Ex26_Weights", "Ex27_MultiSynapses")},
    "OpenSourceBrain+ACnet2/neuroConstruct/generatedNeuroML2/LEMS_MediumNet.xml": _PROJECTIONS,
    "OpenSourceBrain+ACnet2/neuroConstruct/generatedNeuroML2/LEMS_StimuliTest.xml":
        _PROJECTIONS,
    "OpenSourceBrain+IzhikevichModel/NeuroML2/LEMS_SmallNetwork.xml": _PROJECTIONS,
    "OpenSourceBrain+SmithEtAl2013-L23DendriticSpikes/NeuroML2/LEMS_testSyns.xml":
        _PROJECTIONS,
    "OpenSourceBrain+WangBuzsaki1996/NeuroML2/LEMS_ComponentType/LEMS_Fig1_C.xml":
        _PROJECTIONS,
    # A simulation whose target is a tissue rather than a network or a cell.
    "NeuroML+NeuroML2/LEMSexamples/LEMS_NML2_Ex17_Tissue.xml": "not a network",
}


def test_corpus_simulations(corpus, capsys):
    files = sorted(corpus.rglob("LEMS_*.xml"))
    failures, refused, read_ok = [], Counter(), 0
    for path in files:
        rel = path.relative_to(corpus).as_posix()
        expected = UNSUPPORTED.get(rel)
        try:
            load_simulation(path, include_dirs=include_dirs(path))
        except UnsupportedError as exc:
            if expected is None or expected not in str(exc):
                failures.append(f"{rel}: {exc}")
            refused[expected or "unlisted"] += 1
            continue
        except ModelError as exc:
            failures.append(f"{rel}: {exc}")
            continue
        read_ok += 1
        if expected is not None:
            failures.append(f"{rel}: listed as unsupported ({expected}) but reads")
    with capsys.disabled():
        print(f"\ncorpus simulations: {read_ok} of {len(files)} LEMS files read; "
              f"refused as unsupported: {dict(refused)}")
    assert not failures, "\n".join(failures)
    assert read_ok > 0
