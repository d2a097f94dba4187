"""Morphological cells into the IR: segments, groups, sections, densities, parameter paths.

Fixtures are small hand-written NeuroML cells written into tmp_path; the corpus test reads
every <cell> of ../shared/corpus and checks counts recounted here with lxml alone.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import sympy
from lxml import etree

from nml_gradiff.errors import ModelError, UnsupportedError
from nml_gradiff.ingest import xml
from nml_gradiff.ingest.cell import build_cell, check_references
from nml_gradiff.ingest.lems_types import elements, local
from nml_gradiff.ingest.units import UnitSystem
from nml_gradiff.ir.cell import lateral_area, path_length, segment_length

NS = "http://www.neuroml.org/schema/neuroml2"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
UNITS = UnitSystem.standard()


def write(tmp_path: Path, body: str, name: str = "cell.nml") -> Path:
    path = tmp_path / name
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<neuroml xmlns="{NS}" '
                    f'id="doc_{path.stem.replace(".", "_")}">\n{body}\n</neuroml>\n')
    return path


def load_cell(tmp_path: Path, body: str, cell_id: str | None = None):
    path = write(tmp_path, body)
    model = xml.load(path)
    cells = [e for e in elements(model.main.root) if local(e) in ("cell", "cell2CaPools")]
    el = cells[0] if cell_id is None else next(e for e in cells if e.get("id") == cell_id)
    return build_cell(el, file=str(model.main.path), units=UNITS, documents=model.documents)


def seg(sid, parent=None, prox=None, dist=(0, 10, 0, 2), fraction=None, name=None):
    """A <segment>; prox/dist are (x, y, z, diameter)."""
    out = f'<segment id="{sid}"' + (f' name="{name}"' if name else "") + ">"
    if parent is not None:
        f = f' fractionAlong="{fraction}"' if fraction is not None else ""
        out += f'<parent segment="{parent}"{f}/>'
    for tag, p in (("proximal", prox), ("distal", dist)):
        if p is not None:
            out += f'<{tag} x="{p[0]}" y="{p[1]}" z="{p[2]}" diameter="{p[3]}"/>'
    return out + "</segment>\n"


def cell_xml(segments: str, groups: str = "", membrane: str = "", intra: str = "",
             cell_id: str = "c1", tag: str = "cell") -> str:
    bio = ""
    if membrane or intra:
        mp = "membraneProperties2CaPools" if tag == "cell2CaPools" else "membraneProperties"
        ip = "intracellularProperties2CaPools" if tag == "cell2CaPools" else \
            "intracellularProperties"
        bp = "biophysicalProperties2CaPools" if tag == "cell2CaPools" else \
            "biophysicalProperties"
        bio = f'<{bp} id="bio"><{mp}>{membrane}</{mp}><{ip}>{intra}</{ip}></{bp}>'
    return (f'<{tag} id="{cell_id}"><morphology id="m_{cell_id}">\n{segments}{groups}'
            f'</morphology>{bio}</{tag}>')


#: A branched test tree (lengths in um):
#:   0 soma (0,0,0)-(0,10,0)            length 10
#:   1 dend on 0   (0,10,0)-(0,30,0)    length 20
#:   2 dend on 1   (0,30,0)-(0,50,0)    length 20   (branch point: 3 and 4 both on 2)
#:   3 on 2        (0,50,0)-(10,50,0)   length 10
#:   4 on 2        (0,50,0)-(-30,50,0)  length 30
#:   5 on 4        (-30,50,0)-(-30,90,0) length 40
TREE = (seg(0, prox=(0, 0, 0, 10), dist=(0, 10, 0, 10), name="soma")
        + seg(1, 0, prox=(0, 10, 0, 2), dist=(0, 30, 0, 2), name="d1")
        + seg(2, 1, dist=(0, 50, 0, 2), name="d2")
        + seg(3, 2, dist=(10, 50, 0, 1), name="left")
        + seg(4, 2, dist=(-30, 50, 0, 1), name="right")
        + seg(5, 4, dist=(-30, 90, 0, 1), name="tip"))


def group(gid, *parts, lex=None):
    attr = f' neuroLexId="{lex}"' if lex else ""
    return f'<segmentGroup id="{gid}"{attr}>' + "".join(parts) + "</segmentGroup>\n"


def members(*ids):
    return "".join(f'<member segment="{i}"/>' for i in ids)


def include(*names):
    return "".join(f'<include segmentGroup="{n}"/>' for n in names)


def density(did, group_id="all", channel="pas", cond="1 mS_per_cm2", erev="-70mV",
            ion="non_specific", kind="channelDensity", extra=""):
    g = f' segmentGroup="{group_id}"' if group_id else ""
    return (f'<{kind} id="{did}" ionChannel="{channel}" condDensity="{cond}" erev="{erev}"'
            f' ion="{ion}"{g}{extra}/>\n')


# ------------------------------------------------------------------------ segment groups

def test_member_only_groups_get_their_densities(tmp_path):
    cell = load_cell(tmp_path, cell_xml(TREE, group("odd", members(1, 3, 5)),
                                        density("odd_pas", "odd")))
    assert cell.groups["odd"] == [1, 3, 5]
    assert cell.groups["all"] == [0, 1, 2, 3, 4, 5]
    (p,) = cell.placements
    assert p.segments == [1, 3, 5] and p.group == "odd"
    assert p.values == {"condDensity": pytest.approx(0.001), "erev": -70.0}


def test_include_chains_resolve_recursively(tmp_path):
    groups = (group("a", members(0), include("b")) + group("b", members(1), include("c"))
              + group("c", members(5)) + group("everything", include("all")))
    cell = load_cell(tmp_path, cell_xml(TREE, groups))
    assert cell.groups["a"] == [0, 1, 5]
    assert cell.groups["b"] == [1, 5]
    assert cell.groups["everything"] == [0, 1, 2, 3, 4, 5]


def test_path_groups_follow_the_tree_between_both_ends(tmp_path):
    groups = (group("leaf_to_leaf", '<path><from segment="3"/><to segment="5"/></path>')
              + group("down", '<path><from segment="1"/><to segment="4"/></path>')
              + group("from_root", '<path><to segment="3"/></path>'))
    cell = load_cell(tmp_path, cell_xml(TREE, groups))
    assert cell.groups["leaf_to_leaf"] == [2, 3, 4, 5]    # up to the branch point, down again
    assert cell.groups["down"] == [1, 2, 4]
    assert cell.groups["from_root"] == [0, 1, 2, 3]


def test_subtree_groups(tmp_path):
    groups = (group("below2", '<subTree><from segment="2"/></subTree>')
              + group("below4", '<subTree><from segment="4"/></subTree>')
              + group("above5", '<subTree><to segment="5"/></subTree>'))
    cell = load_cell(tmp_path, cell_xml(TREE, groups))
    assert cell.groups["below2"] == [2, 3, 4, 5]
    assert cell.groups["below4"] == [4, 5]
    assert cell.groups["above5"] == [0, 1, 2, 4, 5]


# ------------------------------------------------------------------------------ geometry

def test_missing_proximal_is_the_parents_distal_point(tmp_path):
    cell = load_cell(tmp_path, cell_xml(TREE))
    s2 = cell.segments[2]
    assert s2.proximal == cell.segments[1].distal          # same point and diameter
    assert segment_length(s2) == 20


def test_missing_proximal_at_fraction_along_is_interpolated(tmp_path):
    segs = (seg(0, prox=(0, 0, 0, 10), dist=(0, 20, 0, 6))
            + seg(1, 0, dist=(5, 16, 0, 1), fraction=0.8))
    cell = load_cell(tmp_path, cell_xml(segs))
    p = cell.segments[1].proximal
    assert (p.x, p.y, p.z) == pytest.approx((0, 16, 0))
    assert p.diameter == pytest.approx(0.2 * 10 + 0.8 * 6)


def test_spherical_soma_has_sphere_area_and_length_diameter(tmp_path):
    segs = (seg(0, prox=(0, 0, 0, 10), dist=(0, 0, 0, 10))
            + seg(1, 0, prox=(0, 5, 0, 1), dist=(0, 25, 0, 1)))
    cell = load_cell(tmp_path, cell_xml(segs))
    soma = cell.segments[0]
    assert soma.is_sphere
    assert lateral_area(soma) == pytest.approx(4 * math.pi * 5 ** 2)
    assert segment_length(soma) == 10
    assert path_length(cell, 0.0)[1] == pytest.approx(10)    # attaches at the far end


def test_frustum_area(tmp_path):
    segs = seg(0, prox=(0, 0, 0, 2), dist=(0, 3, 0, 10))
    cell = load_cell(tmp_path, cell_xml(segs))
    r1, r2, length = 1, 5, 3
    assert lateral_area(cell.segments[0]) == pytest.approx(
        math.pi * (r1 + r2) * math.hypot(length, r2 - r1))


def test_path_lengths_on_a_branched_tree(tmp_path):
    cell = load_cell(tmp_path, cell_xml(TREE))
    assert path_length(cell, 0.0) == pytest.approx({0: 0, 1: 10, 2: 30, 3: 50, 4: 50, 5: 80})
    assert path_length(cell, 1.0) == pytest.approx({0: 10, 1: 30, 2: 50, 3: 60, 4: 80,
                                                    5: 120})
    assert path_length(cell, 0.5)[5] == pytest.approx(100)


# ------------------------------------------------------------------------------ sections

def test_fraction_along_08_attaches_inside_the_parent_section(tmp_path):
    segs = (seg(0, prox=(0, 0, 0, 4), dist=(0, 10, 0, 4))
            + seg(1, 0, dist=(0, 40, 0, 4))               # same section: lengths 10 + 30
            + seg(2, 1, prox=(0, 34, 0, 1), dist=(10, 34, 0, 1), fraction=0.8))
    groups = (group("trunk", members(0, 1), lex="sao864921383")
              + group("side", members(2), lex="sao864921383"))
    cell = load_cell(tmp_path, cell_xml(segs, groups))
    side = next(s for s in cell.sections if s.name == "side")
    assert side.parent == "trunk"
    assert side.parent_x == pytest.approx((10 + 0.8 * 30) / 40)
    assert path_length(cell)[2] == pytest.approx(34)


def test_cable_groups_become_sections_with_their_nseg(tmp_path):
    groups = (group("soma_sec", members(0), '<property tag="numberInternalDivisions" '
                    'value="3"/>', lex="sao864921383")
              # members listed distal first: the section still runs proximal -> distal
              + group("trunk", members(2, 1), '<annotation><property tag='
                      '"numberInternalDivisions" value="7"/></annotation>', lex="sao864921383")
              + group("b1", members(3), lex="sao864921383")
              + group("b2", members(4, 5), lex="sao864921383"))
    cell = load_cell(tmp_path, cell_xml(TREE, groups))
    by_name = {s.name: s for s in cell.sections}
    assert [s.name for s in cell.sections] == ["soma_sec", "trunk", "b1", "b2"]
    assert by_name["soma_sec"].nseg == 3 and by_name["trunk"].nseg == 7
    assert by_name["b1"].nseg == 1
    assert by_name["trunk"].segments == [1, 2]
    assert (by_name["trunk"].parent, by_name["trunk"].parent_x) == ("soma_sec", 1.0)
    assert (by_name["b2"].parent, by_name["b2"].segments) == ("trunk", [4, 5])


def test_branched_cable_group_is_an_error(tmp_path):
    groups = group("bad", members(2, 3, 4), lex="sao864921383")
    with pytest.raises(ModelError, match="'bad' is not one unbranched cable") as err:
        load_cell(tmp_path, cell_xml(TREE, groups))
    assert err.value.file and err.value.line


def test_layout_without_cable_groups_uses_unbranched_runs(tmp_path):
    groups = group("soma_group", members(0)) + group("dends", members(1, 2, 3, 4, 5))
    cell = load_cell(tmp_path, cell_xml(TREE, groups))
    layout = [(s.name, s.segments, s.parent, s.parent_x, s.nseg) for s in cell.sections]
    assert layout == [
        ("soma", [0], None, 0.0, 1),             # region change soma_group -> dends
        ("d1", [1, 2], "soma", 1.0, 2),          # unbranched run up to the branch point
        ("left", [3], "d1", 1.0, 1),
        ("right", [4, 5], "d1", 1.0, 2),
    ]


def test_layout_breaks_runs_at_fraction_along_not_1(tmp_path):
    segs = (seg(0, prox=(0, 0, 0, 4), dist=(0, 10, 0, 4))
            + seg(1, 0, prox=(0, 5, 0, 1), dist=(0, 25, 0, 1), fraction=0.5))
    cell = load_cell(tmp_path, cell_xml(segs))
    assert [(s.segments, s.parent, s.parent_x) for s in cell.sections] == [
        ([0], None, 0.0), ([1], "seg0", 0.5)]


# ---------------------------------------------------------------------------- biophysics

def test_two_channels_on_one_ion_keep_their_own_erev(tmp_path):
    membrane = (density("k_fast", channel="kf", erev="-90mV", ion="k")
                + density("k_slow", channel="ks", erev="-75mV", ion="k"))
    cell = load_cell(tmp_path, cell_xml(TREE, membrane=membrane))
    erevs = {p.id: (p.ion, p.values["erev"]) for p in cell.placements}
    assert erevs == {"k_fast": ("k", -90.0), "k_slow": ("k", -75.0)}


def test_every_density_kind_and_its_parameter_paths(tmp_path):
    membrane = (
        density("cd", ion="na", channel="na")
        + '<channelDensityVShift id="vs" ionChannel="na" condDensity="2 S_per_m2" '
          'erev="50mV" vShift="-5mV" ion="na"/>'
        + '<channelDensityNernst id="nernst" ionChannel="cal" condDensity="1 mS_per_cm2" '
          'ion="ca" segmentGroup="soma_group"/>'
        + '<channelDensityGHK id="ghk" ionChannel="cal" permeability="1e-6 m_per_s" '
          'ion="ca"/>'
        + '<channelDensityGHK2 id="ghk2" ionChannel="cal" condDensity="1 mS_per_cm2" '
          'ion="ca"/>'
        + '<channelPopulation id="pop" ionChannel="na" number="12" erev="50mV" ion="na" '
          'segment="3"/>'
        + '<specificCapacitance value="1.5 uF_per_cm2"/>'
        + '<specificCapacitance value="2 uF_per_cm2" segmentGroup="soma_group"/>'
        + '<initMembPotential value="-70mV"/><spikeThresh value="-20mV"/>')
    intra = ('<species id="ca" ion="ca" concentrationModel="pool" initialConcentration='
             '"5e-5 mM" initialExtConcentration="2 mM" segmentGroup="soma_group"/>'
             '<resistivity value="0.2 kohm_cm"/>')
    cell = load_cell(tmp_path, cell_xml(TREE, group("soma_group", members(0)), membrane,
                                        intra))
    paths = {p.path: p.value for p in cell.parameters}
    assert paths == pytest.approx({
        "c1/cd/condDensity": 0.001, "c1/cd/erev": -70.0,
        "c1/vs/condDensity": 2e-4, "c1/vs/erev": 50.0, "c1/vs/vShift": -5.0,
        "c1/nernst/condDensity": 0.001, "c1/ghk/permeability": 1e-4,
        "c1/ghk2/condDensity": 0.001, "c1/pop/number": 12, "c1/pop/erev": 50.0,
        "c1/specificCapacitance/all": 1.5, "c1/specificCapacitance/soma_group": 2.0,
        "c1/initMembPotential/all": -70.0, "c1/spikeThresh/all": -20.0,
        "c1/ca/soma_group/initialConcentration": 5e-5,
        "c1/ca/soma_group/initialExtConcentration": 2.0,
        "c1/resistivity/all": 200.0})
    modes = {p.id: p.erev_mode for p in cell.placements}
    assert modes == {"cd": "fixed", "vs": "fixed", "nernst": "nernst", "ghk": "ghk",
                     "ghk2": "ghk2", "pop": "fixed"}
    assert next(p for p in cell.placements if p.id == "pop").segments == [3]
    # later entries win where groups overlap; defaults where nothing is said
    assert cell.cm(0) == 2.0 and cell.cm(4) == 1.5
    assert cell.ra(5) == 200.0 and cell.init_v(2) == -70.0 and cell.spike_thresh(0) == -20.0
    (sp,) = cell.species
    assert (sp.ion, sp.concentration_model, sp.segments) == ("ca", "pool", [0])


def test_parameters_are_shared_objects(tmp_path):
    cell = load_cell(tmp_path, cell_xml(TREE, membrane=density("leak")))
    next(p for p in cell.parameters if p.path == "c1/leak/condDensity").value = 0.5
    assert cell.placements[0].values["condDensity"] == 0.5


def test_defaults_without_biophysics(tmp_path):
    cell = load_cell(tmp_path, cell_xml(TREE))
    assert (cell.cm(0), cell.ra(0), cell.init_v(0), cell.spike_thresh(0)) == \
        (1.0, 35.4, -65.0, 0.0)
    assert cell.parameters == [] and cell.placements == []


INHOMOGENEOUS = group("dends", members(1, 2, 4, 5),
                      '<inhomogeneousParameter id="pl" variable="p" '
                      'metric="Path Length from root"><proximal translationStart="{start}"/>'
                      '</inhomogeneousParameter>')


def nonuniform(value, kind="channelDensityNonUniform", parameter="condDensity"):
    erev = ' erev="-45mV"' if kind == "channelDensityNonUniform" else ""
    ion = "ca" if kind != "channelDensityNonUniform" else "hcn"
    return (f'<{kind} id="ih" ionChannel="ih" ion="{ion}"{erev}><variableParameter '
            f'parameter="{parameter}" segmentGroup="dends"><inhomogeneousValue '
            f'inhomogeneousParameter="pl" value="{value}"/></variableParameter></{kind}>')


def test_inhomogeneous_density_at_known_path_lengths(tmp_path):
    groups = INHOMOGENEOUS.format(start=0)
    # value in SI (S/m2) of p in um; internal is S/cm2 = SI * 1e-4
    cell = load_cell(tmp_path, cell_xml(TREE, groups, nonuniform("2*p + 10")))
    (p,) = cell.placements
    assert p.segments == [1, 2, 4, 5] and p.kind == "channelDensityNonUniform"
    values = cell.placement_values(p, "condDensity")
    # <proximal translationStart="0"/>: p = 0 where the group starts (segment 1's proximal
    # point, 10 um from the root), as jNeuroML's NEURON export computes it
    midpoints = {1: 10, 2: 30, 4: 55, 5: 90}
    assert values == pytest.approx({s: (2 * d + 10) * 1e-4 for s, d in midpoints.items()})
    assert p.values["erev"] == -45.0
    assert sympy.simplify(p.values["condDensity"] - (2e-4 * sympy.Symbol("p", real=True)
                                                     + 1e-3)) == 0
    # every number of the expression is a parameter, in order of appearance
    consts = {q.path: q.value for q in cell.parameters if "/condDensity/" in q.path}
    assert consts == {"c1/ih/condDensity/c0": 2.0, "c1/ih/condDensity/c1": 10.0}
    next(q for q in cell.parameters if q.path == "c1/ih/condDensity/c0").value = 4.0
    assert cell.placement_values(p, "condDensity")[5] == pytest.approx((4 * 90 + 10) * 1e-4)


def test_inhomogeneous_without_proximal_is_the_path_length_from_the_root(tmp_path):
    groups = INHOMOGENEOUS.replace('<proximal translationStart="{start}"/>', "")
    cell = load_cell(tmp_path, cell_xml(TREE, groups, nonuniform("2*p + 10")))
    values = cell.placement_values(cell.placements[0], "condDensity")
    midpoints = {1: 20, 2: 40, 4: 65, 5: 100}
    assert values == pytest.approx({s: (2 * d + 10) * 1e-4 for s, d in midpoints.items()})


def test_nonuniform_density_reaches_the_neuron_layout(tmp_path):
    """The varying condDensity is in Placement.inhomogeneous only: the NEURON layout once
    dropped it, leaving the mod's default gmax (BahlEtAl2012's apical kfast, kslow, nat, ih)."""
    from nml_gradiff.backends.neuron.layout import cell_layout
    groups = INHOMOGENEOUS.format(start=0)
    cell = load_cell(tmp_path, cell_xml(TREE, groups, nonuniform("2*p + 10")))
    placed = [p for p in cell_layout(cell)["placements"] if p["id"] == "ih"]
    assert placed and all("condDensity" in p["values"] for p in placed)
    by_segment = {}
    for p in placed:
        for value, present in zip(p["values"]["condDensity"], p["values"]["present"]):
            if present:
                by_segment.setdefault(p["section"], []).append(value)
    found = sorted(v for vs in by_segment.values() for v in vs)
    # values at compartment centres: sections d1+d2 (40 um from the group start, 2
    # compartments: p = 10, 30) and right+tip (70 um from p = 40: p = 57.5, 92.5)
    assert found == pytest.approx(sorted((2 * d + 10) * 1e-4 for d in (10, 30, 57.5, 92.5)))


def test_inhomogeneous_translation_start_and_heaviside(tmp_path):
    groups = INHOMOGENEOUS.format(start=-5)
    membrane = nonuniform("1e-4 * H(p - 50) + 2.", kind="channelDensityNonUniformNernst")
    cell = load_cell(tmp_path, cell_xml(TREE, groups, membrane))
    values = cell.placement_values(cell.placements[0], "condDensity")
    # p = -5 at the group's start (10 um from the root): p = path length - 15, so
    # segment 4's midpoint (65 um) has p = 50 exactly: H(0) = 1/2
    assert values[4] == pytest.approx((0.5e-4 + 2) * 1e-4)
    assert values[5] == pytest.approx((1e-4 + 2) * 1e-4)
    assert values[2] == pytest.approx(2e-4)
    assert cell.placements[0].erev_mode == "nernst"


def test_inhomogeneous_ghk_permeability(tmp_path):
    groups = INHOMOGENEOUS.format(start=0)
    membrane = nonuniform("1e-6", kind="channelDensityNonUniformGHK", parameter="permeability")
    cell = load_cell(tmp_path, cell_xml(TREE, groups, membrane))
    values = cell.placement_values(cell.placements[0], "permeability")
    assert list(values.values()) == pytest.approx([1e-4] * 4)     # m/s -> cm/s


def test_cell2capools(tmp_path):
    membrane = ('<channelDensityNernstCa2 id="ca2chan" ionChannel="cal2" condDensity='
                '"1 mS_per_cm2" ion="ca2"/>')
    intra = ('<species id="ca2" ion="ca2" concentrationModel="pool2" initialConcentration='
             '"5e-5 mM" initialExtConcentration="2 mM"/>')
    cell = load_cell(tmp_path, cell_xml(TREE, "", membrane, intra, tag="cell2CaPools"))
    assert cell.component_type == "cell2CaPools"
    assert [(p.kind, p.erev_mode, p.ion) for p in cell.placements] == [
        ("channelDensityNernstCa2", "nernst", "ca2")]
    assert cell.species[0].parameters["initialConcentration"].path == \
        "c1/ca2/all/initialConcentration"


def test_referenced_morphology_and_biophysics(tmp_path):
    write(tmp_path, f'<morphology id="shared_morph">{TREE}'
                    f'{group("soma_group", members(0))}</morphology>', "morph.nml")
    body = ('<include href="morph.nml"/>'
            '<biophysicalProperties id="bio"><membraneProperties>'
            + density("leak", "soma_group") + '</membraneProperties></biophysicalProperties>'
            '<cell id="ref" morphology="shared_morph" biophysicalProperties="bio"/>')
    cell = load_cell(tmp_path, body)
    assert len(cell.segments) == 6 and cell.placements[0].segments == [0]


def test_check_references_hook(tmp_path):
    cell = load_cell(tmp_path, cell_xml(TREE, membrane=density("leak", channel="pas")))
    check_references(cell, {"pas"})
    with pytest.raises(ModelError, match="unknown ionChannel 'pas'") as err:
        check_references(cell, {"kdr"})
    assert err.value.line is not None and err.value.file.endswith("cell.nml")


# ---------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("segments, groups, membrane, message", [
    (TREE, "", density("leak", "nowhere"), "unknown segmentGroup 'nowhere'"),
    (TREE, group("a", include("b")) + group("b", include("a")), "",
     "segmentGroup includes form a cycle: a -> b -> a"),
    (TREE + seg(9, 42), "", "", "segment 9 has unknown parent segment 42"),
    (TREE, group("g", members(77)), "", "unknown member segment 77"),
    (TREE + seg(9, prox=(0, 0, 0, 1)), "", "", "exactly one root segment"),
    (TREE, group("g", include("missing")), "", "unknown segmentGroup 'missing'"),
    (TREE + seg(0, 1), "", "", "duplicate segment id 0"),
    (TREE, "", density("leak", cond="1 mV"), "is a voltage, expected conductanceDensity"),
    (TREE, INHOMOGENEOUS.format(start=0), nonuniform("q * 2"), "uses ['q']"),
])
def test_bad_inputs_are_model_errors_with_a_location(tmp_path, segments, groups, membrane,
                                                     message):
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("]", r"\]")) \
            as err:
        load_cell(tmp_path, cell_xml(segments, groups, membrane))
    assert not isinstance(err.value, UnsupportedError)
    assert err.value.file.endswith("cell.nml") and err.value.line, str(err.value)


def test_parent_cycle_is_an_error(tmp_path):
    segs = seg(0, prox=(0, 0, 0, 1)) + seg(1, 2) + seg(2, 1)
    with pytest.raises(ModelError, match="cycle"):
        load_cell(tmp_path, cell_xml(segs))


def test_duplicate_parameter_path_is_an_error(tmp_path):
    membrane = density("leak") + density("leak")
    with pytest.raises(ModelError, match="'c1/leak/condDensity' is defined twice"):
        load_cell(tmp_path, cell_xml(TREE, membrane=membrane))


@pytest.mark.parametrize("groups, membrane, what", [
    (INHOMOGENEOUS.format(start=0).replace(
        "</inhomogeneousParameter>", '<distal normalizationEnd="1"/></inhomogeneousParameter>'),
     nonuniform("p"), "unsupported: inhomogeneousParameter 'pl' with <distal "
                      "normalizationEnd>"),
    ("", '<channelDensity id="x" ionChannel="pas" condDensity="1 S_per_m2" erev="0mV" '
         'ion="non_specific"><variableParameter parameter="condDensity" segmentGroup="all"/>'
         '</channelDensity>', "unsupported: <variableParameter> in <channelDensity>"),
    ("", '<reversalPotential id="x"/>',
     "unsupported: <reversalPotential> in <membraneProperties>"),
])
def test_unsupported_constructs(tmp_path, groups, membrane, what):
    with pytest.raises(UnsupportedError) as err:
        load_cell(tmp_path, cell_xml(TREE, groups, membrane))
    assert str(err.value.message).startswith(what)


# ---------------------------------------------------------------------------------- corpus

#: Placement elements, listed here rather than imported so the count is independent.
_PLACEMENT_TAGS = {"channelDensity", "channelDensityVShift", "channelDensityNernst",
                   "channelDensityNernstCa2", "channelDensityGHK", "channelDensityGHK2",
                   "channelDensityNonUniform", "channelDensityNonUniformNernst",
                   "channelDensityNonUniformGHK", "channelPopulation"}
_CABLE = "sao864921383"


def _corpus_cells():
    if not CORPUS.is_dir():
        pytest.skip(f"real-model corpus not found at {CORPUS} (see ARCHITECTURE.md, Tests)")
    for path in sorted(CORPUS.rglob("*")):
        if path.suffix not in (".nml", ".xml") or not path.is_file():
            continue
        root = etree.parse(str(path), etree.XMLParser(huge_tree=True)).getroot()
        for el in root:
            if isinstance(el.tag, str) and etree.QName(el).localname in (
                    "cell", "cell2CaPools") and el.get("type") in (None, "cell",
                                                                   "cell2CaPools"):
                yield path, el.get("id")


def _recount(model, cell_el) -> dict:
    """Segments, cable groups and placements of a cell, counted with lxml alone."""
    tops = {(etree.QName(e).localname, e.get("id")): e for d in model.documents
            for e in d.root if isinstance(e.tag, str)}
    morph = cell_el.find("{*}morphology")
    if morph is None:
        morph = tops[("morphology", cell_el.get("morphology"))]
    bio = [c for c in cell_el if isinstance(c.tag, str)
           and etree.QName(c).localname.startswith("biophysicalProperties")]
    if not bio and cell_el.get("biophysicalProperties"):
        bio = [tops.get(("biophysicalProperties", cell_el.get("biophysicalProperties")))]
    placements = sum(1 for b in bio if b is not None for e in b.iter()
                     if isinstance(e.tag, str)
                     and etree.QName(e).localname in _PLACEMENT_TAGS)
    return {"segments": len(morph.findall("{*}segment")),
            "cables": len([g for g in morph.findall("{*}segmentGroup")
                           if g.get("neuroLexId") == _CABLE]),
            "placements": placements}


@pytest.mark.corpus
def test_every_corpus_cell_builds():
    start, built = time.time(), 0
    for path, cell_id in _corpus_cells():
        model = xml.load(path, allow_outside=True)     # the corpus is trusted test data
        el = next(e for e in elements(model.main.root) if e.get("id") == cell_id
                  and local(e) in ("cell", "cell2CaPools"))
        cell = build_cell(el, file=str(model.main.path), units=UNITS,
                          documents=model.documents)
        expected = _recount(model, el)
        print(f"{path.relative_to(CORPUS)} {cell_id}: {len(cell.segments)} segments, "
              f"{len(cell.sections)} sections, {len(cell.placements)} placements")
        assert len(cell.segments) == expected["segments"], cell_id
        assert len(cell.placements) == expected["placements"], cell_id
        if expected["cables"] and sum(len(s.segments) for s in cell.sections
                                      if s.cable_group) == len(cell.segments):
            assert len(cell.sections) == expected["cables"], cell_id
        assert sorted(s for sec in cell.sections for s in sec.segments) == \
            sorted(cell.segments), f"{cell_id}: every segment in exactly one section"
        for p in cell.placements:
            assert p.segments, f"{cell_id}: {p.id} placed nowhere"
        built += 1
    assert built >= 50, f"only {built} cells found in the corpus"
    print(f"{built} cells in {time.time() - start:.1f} s")


def _corpus_cell(relative: str, cell_id: str):
    path = CORPUS / relative
    if not path.is_file():
        pytest.skip(f"corpus file {path} not found")
    model = xml.load(path, allow_outside=True)
    el = next(e for e in elements(model.main.root) if e.get("id") == cell_id)
    return build_cell(el, file=str(model.main.path), units=UNITS,
                      documents=model.documents), el


@pytest.mark.corpus
def test_acnet2_pyramidal_cell():
    cell, el = _corpus_cell("OpenSourceBrain+ACnet2/neuroConstruct/generatedNeuroML2/"
                            "pyr_4_sym.cell.nml", "pyr_4_sym")
    assert len(cell.segments) == 9 == len(el.findall(".//{*}segment"))
    assert len(cell.sections) == 9


@pytest.mark.corpus
@pytest.mark.slow
def test_hay_l5pc():
    cell, el = _corpus_cell("OpenSourceBrain+L5bPyrCellHayEtAl2011/neuroConstruct/"
                            "generatedNeuroML2/L5PC.cell.nml", "L5PC")
    assert len(cell.segments) == 4069 == len(el.findall(".//{*}segment"))
    cables = [g for g in el.iter("{*}segmentGroup") if g.get("neuroLexId") == _CABLE]
    assert len(cell.sections) == len(cables) == 196
    ih = next(p for p in cell.placements if p.id == "Ih_apical_dends")
    values = cell.placement_values(ih, "condDensity")
    mids = path_length(cell, 0.5)
    # Hay et al. 2011: gIhbar = 0.0002 * (-0.8696 + 2.087 * exp(x * 0.00278)) S/cm2 (x in um);
    # <proximal translationStart="0"/>: x = 0 where apical_dends starts (jNeuroML's NEURON
    # export: SubsetDomainIterator, proximal_style 1), not at the root as in Hay's hoc
    start = min(path_length(cell, 0.0)[k] for k in cell.groups["apical_dends"])
    assert start > 0
    s = max(ih.segments, key=lambda k: mids[k])
    x = mids[s] - start
    assert values[s] == pytest.approx(2e-4 * (2.087 * math.exp(x / 359.65) - 0.8696))
    assert {sp.group for sp in cell.species} == {"soma_group", "apical_dends"}
