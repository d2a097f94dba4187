"""LEMS semantics: type resolution and flattening of component trees into mechanisms."""

from __future__ import annotations

import math
import textwrap

import pytest
import sympy

from nml_gradiff.errors import ModelError
from nml_gradiff.ingest.model import load_model
from nml_gradiff.ir.mechanism import symbol

NML = ('<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="doc">\n{body}\n'
       '</neuroml>\n')


def write(tmp_path, body, name="model.nml", lems=False):
    path = tmp_path / name
    text = f"<Lems>\n{body}\n</Lems>\n" if lems else NML.format(body=body)
    path.write_text(textwrap.dedent(text))
    return path


def evaluate(mech, expr, **values):
    """Evaluate an expression of a mechanism numerically, expanding derived quantities."""
    subs = {symbol(n): p.value for n, p in mech.parameters.items()}
    subs.update({symbol(k): v for k, v in values.items()})
    for name, d in mech.derived.items():          # in evaluation order
        subs[symbol(name)] = d.expr.xreplace(subs)
    return float(sympy.N(expr.xreplace(subs)))


HH_NA = """
<ionChannelHH id="na" conductance="10pS" species="na">
  <gateHHrates id="m" instances="3">
    <forwardRate type="HHExpLinearRate" rate="1per_ms" midpoint="-40mV" scale="10mV"/>
    <reverseRate type="HHExpRate" rate="4per_ms" midpoint="-65mV" scale="-18mV"/>
  </gateHHrates>
  <gateHHrates id="h" instances="1">
    <forwardRate type="HHExpRate" rate="0.07per_ms" midpoint="-65mV" scale="-20mV"/>
    <reverseRate type="HHSigmoidRate" rate="1per_ms" midpoint="-35mV" scale="10mV"/>
  </gateHHrates>
</ionChannelHH>
"""


def test_hh_channel_parameters_paths_and_units(tmp_path):
    model = load_model(write(tmp_path, HH_NA))
    mech = model.mechanisms["na"]
    assert mech.kind == "channel" and mech.ion == "na"
    params = {p.path: (p.value, p.unit) for p in mech.parameters.values()}
    assert params["na/m/forwardRate/midpoint"] == pytest.approx(-40.0) or \
        params["na/m/forwardRate/midpoint"][0] == pytest.approx(-40.0)
    value, unit = params["na/m/forwardRate/rate"]
    assert value == pytest.approx(1.0) and unit == "per_ms"
    assert params["na/h/reverseRate/scale"][1] == "mV"
    assert set(mech.states) == {"m_q", "h_q"}
    assert mech.reads["v"] == "mV"


def test_hh_rates_match_published_equations(tmp_path):
    mech = load_model(write(tmp_path, HH_NA)).mechanisms["na"]
    for v in (-80.0, -65.0, -40.0, -39.999999, 0.0, 30.0):
        alpha = evaluate(mech, symbol("m_alpha"), v=v)
        beta = evaluate(mech, symbol("m_beta"), v=v)
        x = (v + 40) / 10
        expect_alpha = 1.0 if abs(x) < 1e-12 else 0.1 * (v + 40) / (1 - math.exp(-x))
        assert alpha == pytest.approx(expect_alpha, rel=1e-9)
        assert beta == pytest.approx(4 * math.exp(-(v + 65) / 18), rel=1e-12)
    # d m/dt in 1/ms: (inf - q)/tau with tau in ms
    rhs = mech.states["m_q"].rhs
    v, q = -50.0, 0.3
    a, b = 0.1 * (v + 40) / (1 - math.exp(-(v + 40) / 10)), 4 * math.exp(-(v + 65) / 18)
    assert evaluate(mech, rhs, v=v, m_q=q) == pytest.approx(a * (1 - q) - b * q, rel=1e-9)


def test_hh_exp_linear_is_finite_at_its_singularity(tmp_path):
    mech = load_model(write(tmp_path, HH_NA)).mechanisms["na"]
    assert evaluate(mech, symbol("m_alpha"), v=-40.0) == pytest.approx(1.0)


def test_channel_current_and_initial_state(tmp_path):
    mech = load_model(write(tmp_path, HH_NA)).mechanisms["na"]
    (current,) = mech.currents
    assert current.ion == "na"
    assert set(mech.placement) == {"gmax", "erev"}
    value = evaluate(mech, current.expr, v=-20.0, m_q=0.5, h_q=0.5, gmax=0.12, erev=50.0)
    assert value == pytest.approx(0.12 * 0.125 * 0.5 * (-70.0))
    # the gate starts at its steady state inf(v)
    v = -65.0
    a, b = 0.1 * (v + 40) / (1 - math.exp(-(v + 40) / 10)), 4 * math.exp(-(v + 65) / 18)
    assert evaluate(mech, mech.states["m_q"].init, v=v) == pytest.approx(a / (a + b))


def test_q10_temperature_in_degC(tmp_path):
    body = HH_NA.replace('<gateHHrates id="h" instances="1">',
                         '<gateHHrates id="h" instances="1">\n'
                         '<q10Settings type="q10ExpTemp" q10Factor="3" experimentalTemp="6.3 degC"/>')
    mech = load_model(write(tmp_path, body)).mechanisms["na"]
    assert mech.reads["temperature"] == "degC"
    assert evaluate(mech, symbol("h_rateScale"), temperature=16.3) == pytest.approx(3.0)
    assert mech.parameter_by_path("na/h/q10Settings/experimentalTemp").value == \
        pytest.approx(6.3)


def test_custom_rate_reads_concentration(tmp_path):
    body = """
    <Include file="Channels.xml"/>
    <ComponentType name="caRate" extends="baseVoltageConcDepRate">
      <Constant name="TIME_SCALE" dimension="time" value="1 ms"/>
      <Constant name="CONC_SCALE" dimension="concentration" value="1 mM"/>
      <Dynamics>
        <DerivedVariable name="r" exposure="r" dimension="per_time"
                         value="2 * (caConc / CONC_SCALE) / TIME_SCALE"/>
      </Dynamics>
    </ComponentType>
    <ionChannelHH id="kca" conductance="1pS" species="k">
      <gateHHrates id="c" instances="1">
        <forwardRate type="caRate"/>
        <reverseRate type="HHExpRate" rate="1per_ms" midpoint="0mV" scale="10mV"/>
      </gateHHrates>
    </ionChannelHH>
    """
    mech = load_model(write(tmp_path, body, "m.xml", lems=True)).mechanisms["kca"]
    assert mech.reads["caConc"] == "mM"
    assert evaluate(mech, symbol("c_alpha"), v=0.0, caConc=0.01) == pytest.approx(0.02)


def test_point_cell_events_and_regimes(tmp_path):
    body = ('<iafRefCell id="iaf" leakReversal="-50mV" thresh="-55mV" reset="-70mV" '
            'C="0.2nF" leakConductance="0.01uS" refract="2ms"/>')
    mech = load_model(write(tmp_path, body)).mechanisms["iaf"]
    assert mech.kind == "cell"
    assert {"v", "lastSpikeTime", "regime"} <= set(mech.states)
    assert mech.states["v"].unit == "mV"
    spikes = [e for e in mech.events if e.emits]
    assert len(spikes) == 1 and "regime" in spikes[0].assign
    assert spikes[0].assign["v"] == mech.parameters["reset"].value or \
        spikes[0].assign["v"] == symbol("reset")
    # dv/dt in mV/ms while integrating (regime index 1): iMemb/C, iMemb in nA, C in nF
    rhs = mech.states["v"].rhs
    value = evaluate(mech, rhs, v=-60.0, regime=1, synapses_i=0.0)
    assert value == pytest.approx(0.01 * (-50 + 60) / 0.2)
    assert evaluate(mech, rhs, v=-60.0, regime=0, synapses_i=0.0) == 0.0


def test_izhikevich2007_units(tmp_path):
    body = ('<izhikevich2007Cell id="izh" v0="-60mV" C="100 pF" k="0.7 nS_per_mV" '
            'vr="-60 mV" vt="-40 mV" vpeak="35 mV" a="0.03 per_ms" b="-2 nS" c="-50 mV" '
            'd="100 pA"/>')
    mech = load_model(write(tmp_path, body)).mechanisms["izh"]
    rhs_v = mech.states["v"].rhs
    # C dv/dt = k (v-vr)(v-vt) - u ; with C=100 pF, k = 0.7 nS/mV, u in nA
    v, u = -50.0, 0.05
    expect = (0.7e-3 * (v + 60) * (v + 40) - u) / 0.1    # nA / nF = mV/ms
    assert evaluate(mech, rhs_v, v=v, u=u, synapses_i=0.0) == pytest.approx(expect)


def test_ks_channel_kinetic_scheme(tmp_path):
    body = """
    <ionChannelKS id="ks" conductance="10pS" species="k">
      <gateKS id="n" instances="1">
        <closedState id="c1"/>
        <openState id="o1"/>
        <forwardTransition id="t1" from="c1" to="o1">
          <rate type="HHExpRate" rate="1per_ms" midpoint="0mV" scale="10mV"/>
        </forwardTransition>
        <reverseTransition id="t2" from="c1" to="o1">
          <rate type="HHExpRate" rate="2per_ms" midpoint="0mV" scale="-10mV"/>
        </reverseTransition>
      </gateKS>
    </ionChannelKS>
    """
    mech = load_model(write(tmp_path, body)).mechanisms["ks"]
    (scheme,) = mech.kinetic
    assert scheme.states == ["n_c1_occupancy", "n_o1_occupancy"]
    assert mech.states["n_o1_occupancy"].init is None
    rhs = mech.states["n_o1_occupancy"].rhs
    assert evaluate(mech, rhs, v=0.0, n_c1_occupancy=0.5, n_o1_occupancy=0.5) == \
        pytest.approx(1 * 0.5 - 2 * 0.5)


@pytest.mark.parametrize("body, message", [
    ('<ionChannelHH id="a" conductance="1pS"/><ionChannelHH id="a" conductance="1pS"/>',
     "duplicate id 'a'"),
    ('<ionChannelHH id="bad-id" conductance="1pS"/>', "invalid id"),
    ('<ionChannelHH id="c" conductance="1mV"/>', "voltage"),
    ('<ionChannelHH id="c" conductance="1 furlongs"/>', "unknown unit"),
    ('<noSuchType id="x"/>', "unknown ComponentType 'noSuchType'"),
    ('<ionChannelHH id="c"/>', "missing parameter 'conductance'"),
])
def test_bad_components(tmp_path, body, message):
    with pytest.raises(ModelError, match=message) as info:
        load_model(write(tmp_path, body))
    assert info.value.file and info.value.line


def test_undefined_symbol(tmp_path):
    body = """
    <ComponentType name="broken" extends="baseVoltageDepRate">
      <Dynamics>
        <DerivedVariable name="r" exposure="r" dimension="per_time" value="nothing * 2"/>
      </Dynamics>
    </ComponentType>
    <ionChannelHH id="c" conductance="1pS">
      <gateHHrates id="g" instances="1">
        <forwardRate type="broken"/><reverseRate type="broken"/>
      </gateHHrates>
    </ionChannelHH>
    """
    with pytest.raises(ModelError, match="undefined symbol 'nothing'"):
        load_model(write(tmp_path, body, "m.xml", lems=True))
