"""NEURON backend, mechanism half: the NMODL printer and IR -> .mod emission (no NEURON here;
compiling and running the output is tests/test_neuron_build.py).

Expected snippets are derived by hand from the NMODL grammar, not recorded from the output.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sympy

from nml_gradiff import __version__
from nml_gradiff.backends.neuron.emit import (Binding, emit, midstep_input, neuron_name,
                                              nmodl_unit, ohmic_conductance)
from nml_gradiff.backends.neuron.printer import (Block, NmodlPrinter, cse_assignments,
                                                 nmodl_number, tidy)
from nml_gradiff.errors import UnsupportedError
from nml_gradiff.ingest.model import load_model
from nml_gradiff.ir.functions import (ExpRelr, ExpRelrDerivative, ExpRelrPrime, Random,
                                      heaviside)
from nml_gradiff.ir.mechanism import Current, Mechanism, Parameter, State, symbol

MODELS = Path(__file__).resolve().parents[1] / "models"
x, y, v, a, b = (symbol(n) for n in "xyvab")

#: Small NeuroML components for the kinds other than HH channels (shared with
#: test_neuron_build.py, which compiles and runs them).
TEST_NML = """\
<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="nrn_backend_test">
  <ionChannelHH id="caLeak" conductance="10pS" species="ca"/>
  <ionChannelPassive id="nsLeak" conductance="10pS"/>
  <decayingPoolConcentrationModel id="pool" ion="ca" restingConc="1e-4 mM"
      decayConstant="20 ms" shellThickness="0.5 um"/>
  <pulseGenerator id="pulse" delay="10ms" duration="20ms" amplitude="0.1nA"/>
  <iafCell id="iaf" leakReversal="-70mV" thresh="-55mV" reset="-65mV" C="0.2nF"
      leakConductance="0.01uS"/>
  <expOneSynapse id="syn" gbase="1nS" erev="0mV" tauDecay="5ms"/>
  <ionChannelKS id="ks" conductance="10pS" species="k">
    <gateKS id="n" instances="1">
      <closedState id="c1"/>
      <openState id="o1"/>
      <vHalfTransition from="c1" to="o1" vHalf="-20mV" z="1.5" gamma="0.75" tau="3.2ms"
          tauMin="0.3ms"/>
    </gateKS>
  </ionChannelKS>
  <ionChannelHH id="kca" conductance="10pS" species="k">
    <gateHHtauInf id="c" instances="1">
      <timeCourse type="fixedTimeCourse" tau="2ms"/>
      <steadyState type="HHSigmoidVariable" rate="1" midpoint="-20mV" scale="5mV"/>
    </gateHHtauInf>
  </ionChannelHH>
</neuroml>
"""


@pytest.fixture(scope="session")
def hh():
    return load_model(MODELS / "hh" / "hh_channels.nml").mechanisms


@pytest.fixture(scope="session")
def test_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("nml") / "nrn_backend_test.nml"
    path.write_text(TEST_NML)
    return load_model(path).mechanisms


def body(text: str) -> str:
    """The mod file without its header (title, comment, UNITS): what the tests look at."""
    return text.split("(Mohm) = (megohm)\n}\n", 1)[1]


# ----------------------------------------------------------------------------- printer

P = NmodlPrinter()


@pytest.mark.parametrize("expr, nmodl", [
    (x ** 3, "x*x*x"),                        # small whole powers of a name: no pow()
    (x ** 5, "x^5"),                          # integer exponents stay integers
    (x ** -2, "1/(x*x)"),
    (y / x ** 2, "y/(x*x)"),                  # the product keeps the precedence of ^
    (sympy.exp(x ** 2), "exp(x*x)"),
    (sympy.sqrt(x), "sqrt(x)"),
    (1 / sympy.sqrt(x), "1/sqrt(x)"),
    ((a + b) ** 2, "(a + b)^2"),
    (x ** y, "power(x, y)"),                  # symbolic exponents: products when whole
    (x ** (y + 1), "power(x, y + 1)"),
    (x ** sympy.Float(1.5), "x^1.5"),
    (-x ** 5, "-x^5"),                        # NMODL: ^ binds tighter than unary minus
    (sympy.exp(x) * a, "a*exp(x)"),
    (sympy.log(x), "log(x)"),
    (sympy.Abs(x), "fabs(x)"),
    (sympy.tanh(x), "tanh(x)"),
    (x / 1000, "x/1000"),                     # one correctly rounded division
    (x / (1000 * y), "x/(1000*y)"),
    (-a + v, "v - a"),
    ((x + 1) / (y - 2), "(x + 1)/(y - 2)"),
    (sympy.pi * x, "PI*x"),
    (ExpRelr(-x), "exprelr(-x)"),
    (ExpRelrPrime(x), "exprelr_prime(x)"),
    (heaviside(x), "heaviside(x)"),
    (sympy.Eq(a, 0), "a == 0"),
    (sympy.Ne(a, b), "a != b"),
    (sympy.And(a > 1, b < 2), "(a > 1) && (b < 2)"),
    (sympy.Or(a >= 1, b <= 2), "(a >= 1) || (b <= 2)"),
    (sympy.Not(a > 1, evaluate=False), "!(a > 1)"),
])
def test_printer_expressions(expr, nmodl):
    assert P.code(expr) == nmodl


@pytest.mark.parametrize("expr, nmodl", [
    (x ** 3, "pow(x, 3)"),
    ((a + b) ** y, "pow(a + b, y)"),
    (x ** -2, "1/pow(x, 2)"),
])
def test_printer_powers_in_derivative_equations(expr, nmodl):
    # nocmodl's derivative-equation parser (cnexp, derivimplicit) rejects "^"
    assert P.code(expr, caret=False) == nmodl


@pytest.mark.parametrize("value, text", [
    (sympy.Float(0.1), "0.1"),
    (sympy.Float("1e-5"), "1e-05"),
    (sympy.Float("5.1821365534438923"), "5.182136553443892"),   # the double, all digits
    (sympy.Float(-65.0), "-65.0"),
    (sympy.Rational(1, 3), "0.3333333333333333"),
    (sympy.Integer(1000), "1000"),
    (sympy.Float(0.1, 24), "0.1"),            # extra precision rounds to the nearest double
])
def test_numbers_are_full_double_precision(value, text):
    assert nmodl_number(value) == text
    assert float(text) == float(value)        # reads back to the same double


def test_float32_values_are_not_used():
    # jNeuroML prints float32 (0.1 -> 0.10000000149011612 when widened); we never do
    assert P.code(sympy.Float(0.1) * x) == "0.1*x"


def test_printer_records_the_functions_it_needs():
    p = NmodlPrinter()
    p.code(ExpRelr(x) + heaviside(y))
    assert p.used == {"exprelr", "heaviside"}


@pytest.mark.parametrize("expr, what", [
    (Random.draw(x), "random"),
    (ExpRelrDerivative(2, x), "derivative of exprelr"),
    (sympy.gamma(x), "gamma"),
])
def test_printer_refuses(expr, what):
    with pytest.raises(UnsupportedError, match=what):
        P.code(expr)


def test_piecewise_becomes_if_else_on_the_target():
    block = Block(NmodlPrinter(), set(), indent=0)
    block.assign("y", sympy.Piecewise((1, v < -10), (x + 1, v < 20), (2, True)))
    assert block.lines == ["if (v < -10) {", "    y = 1", "} else if (v < 20) {",
                           "    y = x + 1", "} else {", "    y = 2", "}"]
    assert block.locals == []


def test_piecewise_inside_an_expression_goes_through_a_local():
    block = Block(NmodlPrinter(), {"tmp1"}, indent=0)
    block.assign("y", 2 * sympy.Piecewise((a, v > 0), (b, True)) + 1)
    assert block.lines == ["if (v > 0) {", "    tmp2 = a", "} else {", "    tmp2 = b", "}",
                           "y = 2*tmp2 + 1"]
    assert block.locals == ["tmp2"]


def test_piecewise_without_default_keeps_the_previous_value():
    block = Block(NmodlPrinter(), set(), indent=0)
    block.assign("y", sympy.Piecewise((a, v > 0)))
    assert block.lines == ["if (v > 0) {", "    y = a", "}",
                           ": no case holds: y keeps its previous value"]


def test_nested_piecewise_is_evaluated_only_in_its_branch():
    inner = sympy.Piecewise((a, x > 0), (b, True))
    block = Block(NmodlPrinter(), set(), indent=0)
    block.assign("y", sympy.Piecewise((inner * 2, v > 0), (0, True)))
    assert block.lines == ["if (v > 0) {", "    if (x > 0) {", "        tmp1 = a",
                           "    } else {", "        tmp1 = b", "    }", "    y = 2*tmp1",
                           "} else {", "    y = 0", "}"]


def test_min_max_become_piecewise():
    block = Block(NmodlPrinter(), set(), indent=0)
    block.assign("y", sympy.Max(a, b))
    assert "if (" in block.lines[0] and block.lines[-1] == "}"


def test_tidy_removes_unit_conversion_factors():
    assert tidy(1000 * (v / 1000 - a / 1000) / b) == (v - a) / b
    assert tidy(v / 1000 > a / 1000) == (v > a)
    assert tidy(sympy.Eq(x, 0)) == sympy.Eq(x, 0)
    assert sympy.simplify(tidy(1000 * a / (1000 * a + 1000 * b)) - a / (a + b)) == 0


def test_cse_shares_subexpressions_with_readable_temporaries():
    p = NmodlPrinter()
    e = sympy.exp((v - a) / b)
    out = cse_assignments([("p", 2 * e / (1 + e)), ("q", 3 / (1 + e))], set(), p)
    assert out[0] == ("cse1", e, True)
    names = [n for n, _, _ in out]
    assert names.index("cse1") < names.index("p") and "q" in names


def test_cse_is_skipped_when_it_does_not_shorten_the_code():
    out = cse_assignments([("p", a + b), ("q", a * b)], set(), NmodlPrinter())
    assert out == [("p", a + b, False), ("q", a * b, False)]


# ----------------------------------------------------------------------------- naming


@pytest.mark.parametrize("name, nrn", [
    ("hh_na", "hh_na"), ("hh", "nml_hh"), ("pas", "nml_pas"), ("IClamp", "nml_IClamp"),
    ("ExpSyn", "nml_ExpSyn"), ("na_ion", "nml_na_ion"), ("my_ion", "nml_my_ion"),
    ("2pore", "nml_2pore"), ("_x", "nml__x"), ("k-dr.1", "k_dr_1"), ("exp", "nml_exp"),
    ("v", "nml_v"),
])
def test_neuron_names(name, nrn):
    assert neuron_name(name) == nrn
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", nrn)


def test_reserved_variable_names_are_renamed():
    mech = Mechanism(name="odd", kind="channel", component_type="test")
    for n in ("area", "i", "exp", "t_lems"):
        mech.parameters[n] = Parameter(n, 1.0, "", "none", f"odd/{n}")
    mech.states["dt"] = State("dt", -symbol("dt") * symbol("area"), symbol("exp"), "", "none")
    mech.exposures["fopen"] = "dt"
    mech.reads["v"] = "mV"
    mech.currents.append(Current("non_specific", symbol("dt") * (symbol("v") - symbol("i"))))
    text = emit(mech)[1]
    assert "area_lems = 1.0" in text and "i_lems = 1.0" in text and "exp_lems = 1.0" in text
    assert "t_lems = 1.0" in text             # not reserved: unchanged
    assert "dt_lems' = -area_lems*dt_lems" in text
    assert "i = dt_lems*(v - i_lems)" in text


@pytest.mark.parametrize("unit, text", [
    ("mV", "mV"), ("per_ms", "/ms"), ("S_per_cm2", "S/cm2"), ("uS_per_mV", "uS/mV"),
    ("ohm_cm", "ohm cm"), ("kg_m2_per_s2", "kg m2/s2"), ("mol_per_m_per_A_per_s",
                                                        "mole/m/ampere/s"), ("", "1"),
    ("furlong", None),
])
def test_units(unit, text):
    assert nmodl_unit(unit) == text


# ----------------------------------------------------------------------------- channels


def test_hh_channel(hh):
    name, text = emit(hh["hh_na"])
    assert name == "hh_na"
    lines = [line.strip() for line in text.splitlines()]
    assert "SUFFIX hh_na" in lines
    assert "USEION na WRITE ina" in lines
    assert any(line.startswith("RANGE") and "gmax" in line for line in lines)
    assert "gmax = 0.0 (S/cm2)" in text and "erev = 0.0 (mV)" in text
    # closed form, so cnexp is exact for frozen v; rates() computes inf and tau first
    deriv = text.split("DERIVATIVE states {")[1].split("}")[0].split("\n")
    assert [d.strip() for d in deriv if d.strip()] == [
        "rates()", "m_q' = (m_inf - m_q)/m_tau", "h_q' = (h_inf - h_q)/h_tau"]
    assert "SOLVE states METHOD cnexp" in lines
    assert "m_q = m_inf" in lines and "h_q = h_inf" in lines
    assert "ina = fopen*gmax*(v - erev)" in lines
    assert "m_forwardRate_r = m_forwardRate_rate*exprelr(-m_forwardRate_x)" in lines
    assert "FUNCTION exprelr(x) {" in lines


def test_gate_powers_multiply_in_breakpoint(hh):
    """BREAKPOINT runs twice per step (NEURON's di/dv): a gate power there is a product for
    the model's instances, and pow() (through power()) only if instances is changed."""
    bp = _block(emit(hh["hh_na"])[1], "BREAKPOINT {")
    i = bp.index("if (m_instances == 3) {")
    assert bp[i:i + 5] == ["if (m_instances == 3) {", "m_fcond = m_q*m_q*m_q", "} else {",
                           "m_fcond = power(m_q, m_instances)", "}"]
    assert "h_fcond = h_q" in bp and "h_fcond = power(h_q, h_instances)" in bp
    assert "FUNCTION power(x, n) {" in emit(hh["hh_na"])[1]
    # the jNeuroML-like mode keeps its lagged gate powers in the DERIVATIVE block
    deriv = _block(emit(hh["hh_na"], integration="jnml_neuron")[1], "DERIVATIVE states {")
    assert "m_fcond = pow(m_q, m_instances)" in deriv


def test_ions_neuron_does_not_know_get_a_valence(tmp_path):
    """NEURON refuses, at start-up (auto-loading ./x86_64 in a converted model's folder), a
    library using an ion without a charge: Hay's Ih writes ``ihcn``."""
    path = tmp_path / "hcn.nml"
    path.write_text('<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="hcn">'
                    '<ionChannelHH id="ih" conductance="10pS" species="hcn"/>'
                    '<ionChannelHH id="cl" conductance="10pS" species="cl"/></neuroml>')
    mechs = load_model(path).mechanisms
    assert "USEION hcn WRITE ihcn VALENCE 1" in emit(mechs["ih"])[1]
    assert "USEION cl WRITE icl VALENCE -1" in emit(mechs["cl"])[1]
    assert "VALENCE" not in emit(mechs["ih"], binding=Binding(ion="k"))[1]


def test_exprelr_has_one_exp_per_call():
    from nml_gradiff.backends.neuron.printer import FUNCTION_DEFINITIONS
    body = FUNCTION_DEFINITIONS["exprelr"]
    code = [ln.split(":")[0] for ln in body.splitlines()]
    # one exp per branch, no log: the series branch has none
    assert all(ln.count("exp(") <= 1 for ln in code) and "log(" not in "".join(code)


def test_channels_never_read_neurons_reversal_potential(hh):
    for mech in hh.values():
        text = emit(mech)[1]
        assert not re.search(r"\bREAD\b.*\be(na|k)\b", text)
        assert re.search(r"^\s*erev = 0.0 \(mV\)", text, re.M)


def test_header_and_determinism(hh):
    text = emit(hh["hh_k"], command="nml-gradiff convert hh_channels.nml")[1]
    head = text.split("ENDCOMMENT")[0]
    assert head.startswith("TITLE hh_k: channel hh_k (ionChannelHH)")
    assert "hh_channels.nml" in head and f"nml-gradiff {__version__}" in head
    assert "command: nml-gradiff convert hh_channels.nml" in head
    again = load_model(MODELS / "hh" / "hh_channels.nml").mechanisms["hh_k"]
    assert emit(again, command="nml-gradiff convert hh_channels.nml")[1] == text


def test_passive_channel(hh):
    text = body(emit(hh["hh_leak"])[1])
    assert "NONSPECIFIC_CURRENT i" in emit(hh["hh_leak"])[1]
    assert "i = fopen*gmax*(v - erev)" in text
    assert "STATE" not in text and "DERIVATIVE" not in text


def test_nonlinear_state_is_stepped_as_the_step_map():
    """A right-hand side not linear in its state: the whole update is a PROCEDURE doing the
    StepMap's simultaneous step (forward Euler for q, exponential Euler for the linear g),
    not derivimplicit; jnml_neuron keeps its own integration."""
    mech = Mechanism(name="cubic", kind="channel", component_type="test")
    mech.states["q"] = State("q", -symbol("q") ** 3 + symbol("v") / 100, sympy.Integer(0),
                             "", "none")
    mech.states["g"] = State("g", (symbol("v") / 100 - symbol("g")) / 3, sympy.Integer(0),
                             "", "none")
    mech.exposures["fopen"] = "q"
    mech.reads["v"] = "mV"
    mech.currents.append(Current("non_specific", symbol("q") * symbol("v")))
    text = emit(mech)[1]
    assert "SOLVE states\n" in text and "derivimplicit" not in text.replace(
        "not derivimplicit", "")
    assert "PROCEDURE states() {\n    LOCAL dq, dg\n" in text
    assert "dq = dt*(v/100 - (q*q*q))" in text
    assert "dg = dt*(v - 100*g)/(300*exprelr(-dt/3))" in text
    # simultaneous: both increments from the old values, then both states move
    assert text.index("dg = ") < text.index("q = dq + q") < text.index("g = dg + g")
    assert "SOLVE states METHOD euler" in emit(mech, integration="jnml_neuron")[1]


def test_kinetic_scheme(test_model):
    text = body(emit(test_model["ks"])[1])
    assert "SOLVE kin METHOD sparse" in text
    assert "~ n_c1_occupancy <-> n_o1_occupancy (n_transitions_rf, n_transitions_rr)" in text
    assert "CONSERVE n_c1_occupancy + n_o1_occupancy = 1" in text
    assert "SOLVE kin STEADYSTATE sparse" in text.split("BREAKPOINT")[0]


def test_binding_concentrations_and_ion(test_model, hh):
    kca = test_model["kca"]
    kca.reads["caConc"] = "mM"     # as a Ca-dependent channel would
    kca.derived["c_steadyState_x"].expr *= symbol("caConc")
    name, text = emit(kca, binding=Binding(concentrations={"caConc": "ca2i"}))
    assert name == "kca_ca2i"
    assert "USEION ca2 READ ca2i VALENCE 2" in text
    assert "USEION k WRITE ik" in text
    assert emit(kca)[0] == "kca" and "USEION ca READ cai" in emit(kca)[1]


@pytest.mark.parametrize("mode", ["nernst", "ghk", "ghk2"])
def test_binding_erev_modes(test_model, mode):
    name, text = emit(test_model["caLeak"], binding=Binding(erev=mode))
    assert name == f"caLeak_{mode}"
    assert "USEION ca READ cai, cao WRITE ica" in text
    params = text.split("PARAMETER {")[1].split("}")[0]
    assert "erev" not in params               # the placement's erev is not used
    assert "if (cao > 0) {" in text
    if mode == "nernst":
        assert "log(cao/cai)" in text
    if mode == "ghk":
        assert "permeability = 0 (cm/s)" in text and "gmax" not in text


INSTANTANEOUS_NML = """\
<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="inst_test">
  <ionChannelHH id="inst" conductance="10pS" species="na">
    <gateHHInstantaneous id="m" instances="1">
      <steadyState type="HHSigmoidVariable" rate="1" midpoint="-20mV" scale="5mV"/>
    </gateHHInstantaneous>
  </ionChannelHH>
</neuroml>
"""


def test_conductance_hint_for_ohmic_currents_only(hh, test_model, tmp_path):
    """NEURON's CONDUCTANCE hint (one BREAKPOINT evaluation a step, di/dv = gchan) where the
    current is gmax*fopen*(v - erev) with fopen free of v: fixed and Nernst reversal
    potentials; not GHK/GHK2 (nonlinear in v), not an instantaneous gate (fopen reads v),
    not under jnml_neuron (jNeuroML's mods use the difference quotient)."""
    na = emit(hh["hh_na"])[1]
    bp = na.split("BREAKPOINT {")[1].split("\n}")[0]
    assert "    CONDUCTANCE gchan USEION na\n    gchan = fopen*gmax\n" in bp
    assert "gchan (S/cm2)" in na and re.search(r"RANGE .*\bgchan\b", na)
    leak = body(emit(test_model["nsLeak"])[1])
    assert "    CONDUCTANCE gchan\n" in leak               # NONSPECIFIC_CURRENT: no USEION
    nernst = emit(test_model["caLeak"], binding=Binding(erev="nernst"))[1]
    assert "CONDUCTANCE gchan USEION ca" in nernst
    assert "if (cao > 0) {\n        gchan = fopen*gmax\n    } else {\n        gchan = 0" \
        in nernst
    for mode in ("ghk", "ghk2"):
        text = emit(test_model["caLeak"], binding=Binding(erev=mode))[1]
        assert "CONDUCTANCE" not in text and "gchan" not in text
    assert "CONDUCTANCE" not in emit(hh["hh_na"], integration="jnml_neuron")[1]
    path = tmp_path / "inst.nml"
    path.write_text(INSTANTANEOUS_NML)
    inst = load_model(path).mechanisms["inst"]
    assert ohmic_conductance(inst) is None
    assert "CONDUCTANCE" not in emit(inst)[1]
    assert ohmic_conductance(hh["hh_na"]) is not None


def test_binding_rejects_nonsense():
    with pytest.raises(ValueError):
        Binding(erev="goldman")
    with pytest.raises(ValueError):
        Binding(concentrations={"caConc": "ica"})


# ----------------------------------------------------------------------------- other kinds


def test_concentration_pool(test_model):
    name, text = emit(test_model["pool"])
    lines = [line.strip() for line in text.splitlines()]
    assert "SUFFIX pool" in lines
    assert "USEION ca READ ica WRITE cai" in lines
    assert "area (um2)" in text and "cai (mM)" in text.split("STATE {")[1]
    assert "iCa = -area*ica/100" in lines     # LEMS nA into the cell from NEURON's mA/cm2 out
    assert "cai = initialConcentration" in lines
    deriv = text.split("DERIVATIVE states {")[1]
    assert "cai' = 5.182136553443892*iCa/shellVolume - (cai - restingConc)/decayConstant" \
        in deriv
    breakpoint = text.split("BREAKPOINT {")[1].split("\n}")[0]
    assert "if (cai < 0) {" in breakpoint and "cai = 0" in breakpoint


def test_point_cell(test_model):
    name, text = emit(test_model["iaf"])
    lines = [line.strip() for line in text.splitlines()]
    assert "POINT_PROCESS iaf" in lines and "NONSPECIFIC_CURRENT i" in lines
    assert "Csec = 0.2 (nF)" in text
    assert "i = -Csec*iMemb/C" in lines      # NEURON integrates v with cm*area = Csec
    assert "iSyn = 0" in lines               # synapses are point processes of their own
    receive = text.split("NET_RECEIVE (nc_weight) {")[1]
    assert "v = leakReversal" in receive      # the initial v, at the flag 2 event
    assert "if (v > thresh) {" in receive and "v = reset" in receive
    assert "net_event(t)" in receive and "net_send(dt, 1)" in receive
    assert "net_send(0, 2)" in text.split("INITIAL {")[1].split("}")[0]


def test_input_is_an_electrode_current(test_model):
    text = emit(test_model["pulse"])[1]
    lines = [line.strip() for line in text.splitlines()]
    assert "ELECTRODE_CURRENT i" in lines and "i = i_lems" in lines
    assert "i_lems = amplitude*weight" in lines
    assert "if ((t >= delay) && (t < delay + duration)) {" in lines
    # its OnConditions test t alone: in BREAKPOINT (mid-step t), in file order, then i
    bp = _block(text, "BREAKPOINT {")
    conds = [bp.index(c) for c in ("if (t < delay) {",
                                   "if ((t >= delay) && (t < delay + duration)) {",
                                   "if (t >= delay + duration) {")]
    assert conds == sorted(conds) and bp.index("i = i_lems") > conds[-1]
    assert "NET_RECEIVE" not in text and "net_send" not in text and "dt (ms)" not in text


#: Every LEMS input with OnConditions (NeuroML2 CoreTypes Inputs.xml) that is not a synapse.
INPUTS_NML = """<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="inputs">
  <sineGenerator id="sine" delay="10ms" phase="0" duration="50ms" amplitude="0.1nA"
      period="20ms"/>
  <rampGeneratorDL id="ramp" delay="10ms" duration="50ms" startAmplitude="0.1"
      finishAmplitude="0.2" baselineAmplitude="0"/>
  <voltageClamp id="vc" delay="10ms" duration="50ms" targetVoltage="-20mV"
      simpleSeriesResistance="1e6ohm"/>
  <voltageClampTriple id="vc3" active="1" delay="10ms" duration="50ms"
      conditioningVoltage="-70mV" testingVoltage="-20mV" returnVoltage="-70mV"
      simpleSeriesResistance="1e6ohm"/>
  <spikeGenerator id="sg" period="10ms"/>
</neuroml>
"""


def test_which_inputs_switch_at_mid_step(tmp_path, test_model):
    """docs/neuron.md, "LEMS OnConditions of inputs": an input whose conditions read only t
    and parameters, whose states only events set, and whose assigned values read no state,
    tests them in BREAKPOINT; anything else (a spike generator: an ODE clock that emits
    spikes) keeps the self-event every dt in NET_RECEIVE."""
    path = tmp_path / "inputs.nml"
    path.write_text(INPUTS_NML)
    mechs = load_model(path).mechanisms
    assert {n: midstep_input(m) for n, m in mechs.items()} == {
        "sine": True, "ramp": True, "vc": True, "vc3": True, "sg": False}
    sine = emit(mechs["sine"])[1]
    assert "sin(" in "".join(_block(sine, "BREAKPOINT {")) and "NET_RECEIVE" not in sine
    vc = _block(emit(mechs["vc"])[1], "BREAKPOINT {")
    assert "i_lems = weight*(targetVoltage - v)/simpleSeriesResistance" in vc   # di/dv seen
    sg = emit(mechs["sg"])[1]
    assert "net_send(dt, 1)" in sg and "net_event(t)" in _block(sg, "NET_RECEIVE (nc_weight) {")
    # the rule, one condition broken at a time, on the pulse generator
    pulse = test_model["pulse"]
    assert midstep_input(pulse)

    def with_event(k, **change):
        events = list(pulse.events)
        events[k] = dataclasses.replace(events[k], **change)
        return dataclasses.replace(pulse, events=events)
    k = next(j for j, e in enumerate(pulse.events) if e.assign.get("i", 0) != 0)  # i = amp
    cases = [with_event(k, condition=symbol("v") > 0),                  # reads v
             with_event(k, assign={"i": symbol("i") + symbol("amplitude")}),   # reads a state
             with_event(k, emits=True),                                  # a spike
             dataclasses.replace(pulse, kind="synapse")]
    assert not any(midstep_input(m) for m in cases)
    assert all("net_send(dt, 1)" in emit(m)[1] for m in cases[:2])


def test_synapse(test_model):
    text = emit(test_model["syn"])[1]
    lines = [line.strip() for line in text.splitlines()]
    assert "NONSPECIFIC_CURRENT i" in lines and "i = -i_lems" in lines
    receive = text.split("NET_RECEIVE (nc_weight) {")[1]
    assert "if (flag == 0) {" in receive and "nc_weight" in receive


def test_unsupported_kinds_and_requirements(test_model):
    mech = test_model["nsLeak"]
    odd = Mechanism(name="x", kind="component", component_type="pulseGeneratorDL")
    with pytest.raises(UnsupportedError, match="component mechanism"):
        emit(odd)
    mech2 = Mechanism(**{**mech.__dict__, "reads": {**mech.reads, "iDensityCa": "mA_per_cm2"}})
    with pytest.raises(UnsupportedError, match="requirement iDensityCa"):
        emit(mech2)


def test_every_kind_is_deterministic(test_model):
    for mech in test_model.values():
        assert emit(mech)[1] == emit(mech)[1]


DETERMINISM_RUN = """
import hashlib, sys
from nml_gradiff.ingest.model import load_model
from nml_gradiff.backends.neuron.emit import emit
h = hashlib.sha256()
for path in sys.argv[1:]:
    for mech in load_model(path).mechanisms.values():
        h.update(emit(mech)[1].encode())
print(h.hexdigest())
"""


def test_same_bytes_in_another_process(tmp_path):
    """Same input, same bytes, whatever Python's hash seed (the build cache relies on it)."""
    model = tmp_path / "t.nml"
    model.write_text(TEST_NML)
    paths = [str(MODELS / "hh" / "hh_channels.nml"), str(model)]
    digests = set()
    for seed in ("0", "1", "4", "7", "12"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", DETERMINISM_RUN, *paths], env=env,
                              capture_output=True, text=True, check=True)
        digests.add(proc.stdout.strip())
    assert len(digests) == 1


# ----------------------------------------------------------------------------- integrations


def _block(text: str, head: str) -> list[str]:
    return [ln.strip() for ln in text.split(head)[1].split("\n}")[0].splitlines() if ln.strip()]


def test_jnml_neuron_integration_mirrors_jneuroml_mods(hh):
    """jNeuroML's exported mods: ``q' = rate_q`` with the rate from a PROCEDURE (nocmodl
    turns that cnexp into ``q = q + dt*rate``), and ``fcond = q^n`` computed in that
    PROCEDURE, before the update: the current uses the gates of the step before."""
    text = emit(hh["hh_na"], integration="jnml_neuron")[1]
    assert "SOLVE states METHOD euler" in text and "cnexp" not in text
    deriv = _block(text, "DERIVATIVE states {")
    fopen = deriv.index("fopen = m_fcond*h_fcond") if "fopen = m_fcond*h_fcond" in deriv \
        else next(i for i, ln in enumerate(deriv) if ln.startswith("fopen = "))
    assert deriv[0] == "rates()" and fopen < deriv.index("m_q' = (m_inf - m_q)/m_tau")
    breakpoint = _block(text, "BREAKPOINT {")
    assert not any(ln.startswith("fopen = ") for ln in breakpoint)
    assert "ina = fopen*gmax*(v - erev)" in breakpoint
    initial = _block(text, "INITIAL {")       # as jNeuroML: before the states are set
    assert next(i for i, ln in enumerate(initial) if ln.startswith("fopen = ")) \
        < initial.index("m_q = m_inf")
    assert emit(hh["hh_na"])[1] != text and "METHOD cnexp" in emit(hh["hh_na"])[1]
    with pytest.raises(ValueError):
        emit(hh["hh_na"], integration="rk4")


@pytest.mark.corpus
def test_jnml_neuron_integration_keeps_the_model_arithmetic(corpus):
    """jNeuroML's mods compute ``inf = alpha/(alpha + beta)``.  Our shared subexpression
    ``cse = 1/(alpha + beta)``, ``inf = cse*alpha`` is 1 ulp below 1.0 where the quotient is
    1.0, and a forward-Euler gate past its stability limit grows that ulp into a spike
    (Pospischil's Na test ``three`` fired at 528.65 ms instead of 699.25)."""
    na = load_model(corpus / "OpenSourceBrain+PospischilEtAl2008/NeuroML2/channels/Na/"
                    "Na.channel.nml").mechanisms["Na"]
    exact = _block(emit(na)[1], "PROCEDURE rates() {")
    assert any(re.fullmatch(r"m_inf = cse\d+\*m_alpha", ln) for ln in exact)  # shared
    rates = _block(emit(na, integration="jnml_neuron")[1], "PROCEDURE rates() {")
    assert "m_inf = m_alpha/(m_alpha + m_beta)" in rates
    assert not any("cse" in ln for ln in rates)


def test_jnml_neuron_integration_leaves_point_cells_with_v_alone(test_model):
    assert emit(test_model["iaf"], integration="jnml_neuron") == emit(test_model["iaf"])
    pool = emit(test_model["pool"], integration="jnml_neuron")[1]
    assert "SOLVE states METHOD euler" in pool


POINT_CELL_LEMS = """\
<Lems>
  <Include file="Cells.xml"/>
  <ionChannelPassive id="passive" conductance="10pS"/>
  <ionChannelHH id="k" conductance="10pS">
    <gateHHrates id="n" instances="4">
      <forwardRate type="HHExpLinearRate" rate="0.1per_ms" midpoint="-55mV" scale="10mV"/>
      <reverseRate type="HHExpRate" rate="0.125per_ms" midpoint="-65mV" scale="-80mV"/>
    </gateHHrates>
  </ionChannelHH>
  <pointCellCondBased id="pc" C="10pF" v0="-65mV" thresh="20mV">
    <channelPopulation id="leak" ionChannel="passive" number="300" erev="-54.3mV"/>
    <channelPopulation id="kChans" ionChannel="k" number="36000" erev="-77mV"/>
  </pointCellCondBased>
</Lems>
"""


def test_point_cell_computes_rates_before_the_currents_that_use_them(tmp_path):
    """Regression (Ex1, pointCellCondBased ran away to -180 mV): the leak current comes from
    rates() (it depends on v only) and iChannels from it; with rates() after iChannels the
    current was a call stale, and NEURON's di/dv (BREAKPOINT at v + 0.001, then at v)
    garbage."""
    path = tmp_path / "pc.xml"
    path.write_text(POINT_CELL_LEMS)
    text = emit(load_model(path).mechanisms["pc"])[1]
    bp = _block(text, "BREAKPOINT {")
    assert bp.count("rates()") == 1
    assert bp.index("rates()") < next(i for i, ln in enumerate(bp)
                                      if ln.startswith("iChannels = "))


def test_nernst_channel_exposes_its_own_current(test_model):
    """iDensity of a channelDensityNernst/GHK has no fixed erev to compute it from where it
    is recorded: the mod keeps the channel's current in RANGE ichan (NEURON's ica sums every
    calcium channel)."""
    for mode in ("nernst", "ghk", "ghk2"):
        text = emit(test_model["caLeak"], binding=Binding(erev=mode))[1]
        assert re.search(r"RANGE .*\bichan\b", text)
        bp = _block(text, "BREAKPOINT {")
        assert "ica = ichan" in bp and bp.index("ica = ichan") > bp.index("if (cao > 0) {")
    assert "ichan" not in emit(test_model["caLeak"])[1]


def test_dimensionless_input_scales_by_the_target_capacitance(tmp_path):
    """pulseGeneratorDL's I is added to a dimensionless cell's dv/dt in mV/ms: as an electrode
    current into a section of capacitance Cdl nF that is I*Cdl nA."""
    path = tmp_path / "dl.nml"
    path.write_text('<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="dl">'
                    '<pulseGeneratorDL id="iA" delay="10ms" duration="90ms" amplitude="14"/>'
                    '</neuroml>')
    text = emit(load_model(path).mechanisms["iA"])[1]
    assert "ELECTRODE_CURRENT i" in text and "Cdl = 1 (nF)" in text
    assert "i = Cdl*I" in _block(text, "BREAKPOINT {")
