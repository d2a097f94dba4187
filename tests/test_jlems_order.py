"""jLEMS's update order (passes/jlems_order.py), checked against jLEMS's own output.

A point cell nests a child that requires the root's derived ``y`` twice over (root ->
middle -> leaf: two copies, each a step old) and once directly (root -> leaf); the root
integrates from its children's derived values, a time term and a flag set by an
OnCondition on ``y``.  jLEMS (jNeuroML 0.14, ``pynml LEMS_nested.xml -nogui``) wrote
:data:`JLEMS_X`; :func:`test_constants_are_jlems` re-runs it where pyNeuroML is installed.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from nml_gradiff.backends.neuron.emit import emit as neuron_emit
from nml_gradiff.errors import UnsupportedError
from nml_gradiff.ingest.model import load_model
from nml_gradiff.passes.jlems_order import jlems_order
from nml_gradiff.runtime.run import run_lems

NESTED = """<Lems>
  <Target component="sim1"/>
  <Include file="Cells.xml"/>
  <Include file="Networks.xml"/>
  <Include file="Simulation.xml"/>
  <ComponentType name="nestLeaf">
    <Requirement name="y" dimension="none"/>
    <Parameter name="k" dimension="per_time"/>
    <Exposure name="w" dimension="none"/>
    <Dynamics>
      <StateVariable name="z" dimension="none"/>
      <DerivedVariable name="w" dimension="none" value="z*z" exposure="w"/>
      <TimeDerivative variable="z" value="k*(y - z)"/>
    </Dynamics>
  </ComponentType>
  <ComponentType name="nestMiddle">
    <Requirement name="y" dimension="none"/>
    <Child name="leaf" type="nestLeaf"/>
    <Exposure name="w" dimension="none"/>
    <Dynamics>
      <DerivedVariable name="w" dimension="none" select="leaf/w" exposure="w"/>
    </Dynamics>
  </ComponentType>
  <ComponentType name="nestTop" extends="baseCell">
    <Parameter name="k" dimension="per_time"/>
    <Constant name="MSEC" dimension="time" value="1ms"/>
    <Child name="middle" type="nestMiddle"/>
    <Child name="leaf" type="nestLeaf"/>
    <Exposure name="x" dimension="none"/>
    <Exposure name="c" dimension="none"/>
    <Dynamics>
      <StateVariable name="x" dimension="none" exposure="x"/>
      <StateVariable name="c" dimension="none" exposure="c"/>
      <DerivedVariable name="y" dimension="none" value="1 + x"/>
      <DerivedVariable name="m" dimension="none" select="middle/w"/>
      <DerivedVariable name="l" dimension="none" select="leaf/w"/>
      <TimeDerivative variable="x" value="k*(0.5 - x - 0.3*m - 0.2*l + 0.2*t/MSEC + 0.4*c)"/>
      <OnStart>
        <StateAssignment variable="x" value="0.1"/>
        <StateAssignment variable="c" value="0"/>
      </OnStart>
      <OnCondition test="y .gt. 1.15 .and. c .lt. 0.5">
        <StateAssignment variable="c" value="1"/>
      </OnCondition>
    </Dynamics>
  </ComponentType>
  <nestTop id="top1" k="0.5per_ms">
    <middle><leaf k="0.7per_ms"/></middle>
    <leaf k="0.3per_ms"/>
  </nestTop>
  <network id="net1">
    <population id="pop" component="top1" size="1"/>
  </network>
  <Simulation id="sim1" length="1ms" step="0.1ms" target="net1">
    <OutputFile id="of" fileName="nested.dat">
      <OutputColumn id="x" quantity="pop[0]/x"/>
    </OutputFile>
  </Simulation>
</Lems>
"""

#: pop[0]/x at t = 0, 0.1, ..., 1 ms, as jLEMS wrote it (in single precision: compared to
#: its rounding, ``F32``).  Forward Euler of the flattened equations without this order
#: (measured with the JAX backend) gives 0.16237672 at 0.3 ms and sets the flag a step
#: early: 0.20243926 at 0.4 ms.
JLEMS_X = [0.1, 0.121, 0.14185017, 0.16238412, 0.18247671, 0.22202456, 0.25994608,
           0.29622835, 0.33086944, 0.3638568, 0.39518437]


@pytest.fixture
def nested(tmp_path):
    path = tmp_path / "LEMS_nested.xml"
    path.write_text(NESTED)
    return path


def test_flatten_keeps_the_component_tree(nested):
    mech = load_model(nested).mechanisms["top1"]
    assert mech.scopes["middle_leaf_"].parent == "middle_"
    assert mech.scopes["middle_"].parent == ""
    assert mech.scopes["middle_"].requirements == {"y"}
    assert mech.owner["middle_leaf_z"] == "middle_leaf_" and mech.owner["y"] == ""
    assert [e.scope for e in mech.events] == [""]


def test_copies_of_required_values_lag_a_step_each(nested):
    mech = jlems_order(load_model(nested).mechanisms["top1"])
    names = {s.name for s in mech.states["middle_leaf_z"].rhs.free_symbols}
    assert "y_jlems2" in names and "y" not in names     # middle's copy of y, then its own
    assert "y_jlems1" in {s.name for s in mech.states["leaf_z"].rhs.free_symbols}
    assert str(mech.states["y_jlems2"].each_step) == "y_jlems1"
    # the condition sees y as computed before the update, i.e. the register after it
    assert "y_jlems1" in {s.name for s in mech.events[0].condition.free_symbols}


F32 = 1.2e-7     # relative: a float32 rounding (half an ulp is at most 6e-8)


def _x(out):
    return np.loadtxt(out / "nested.dat")[:, 1]


def test_jax_reproduces_jlems(nested, tmp_path):
    out = tmp_path / "jax"
    run_lems(nested, "jax", out, backend_options={"integration": "jnml_neuron"})
    np.testing.assert_allclose(_x(out), JLEMS_X, rtol=F32, atol=0)


@pytest.mark.slow
def test_neuron_reproduces_jlems(nested, tmp_path):
    out = tmp_path / "neuron"
    run_lems(nested, "neuron", out, backend_options={"integration": "jnml_neuron"})
    np.testing.assert_allclose(_x(out), JLEMS_X, rtol=F32, atol=0)


@pytest.mark.slow
def test_constants_are_jlems(nested):
    pynml = shutil.which("pynml")
    if pynml is None or shutil.which("java") is None:
        pytest.skip("pyNeuroML (pynml) and java are needed to run jLEMS")
    subprocess.run([pynml, nested.name, "-nogui"], cwd=nested.parent, check=True,
                   capture_output=True, timeout=300)
    x = np.loadtxt(nested.parent / "nested.dat")[:, 1]
    np.testing.assert_allclose(x, JLEMS_X, rtol=0, atol=1e-12)


#: A point cell whose only state integrates its input current (no v of its own).
INPUT_CELL = """<Lems>
  <Target component="sim1"/>
  <Include file="Cells.xml"/>
  <Include file="Networks.xml"/>
  <Include file="Simulation.xml"/>
  <Include file="Inputs.xml"/>
  <ComponentType name="intCell" extends="baseCell">
    <Constant name="NA" dimension="current" value="1nA"/>
    <Constant name="MSEC" dimension="time" value="1ms"/>
    <Attachments name="synapses" type="basePointCurrent"/>
    <EventPort name="spike" direction="out"/>
    <Exposure name="x" dimension="none"/>
    <Dynamics>
      <StateVariable name="x" dimension="none" exposure="x"/>
      <DerivedVariable name="iSyn" dimension="current" select="synapses[*]/i" reduce="add"/>
      <TimeDerivative variable="x" value="iSyn/NA/MSEC"/>
      <OnStart><StateAssignment variable="x" value="0"/></OnStart>
    </Dynamics>
  </ComponentType>
  <intCell id="c1"/>
  <pulseGenerator id="p1" delay="0.3ms" duration="0.5ms" amplitude="1nA"/>
  <network id="net1">
    <population id="pop" component="c1" size="1"/>
    <explicitInput target="pop[0]" input="p1"/>
  </network>
  <Simulation id="sim1" length="1ms" step="0.1ms" target="net1">
    <OutputFile id="of" fileName="inp.dat">
      <OutputColumn id="x" quantity="pop[0]/x"/>
    </OutputFile>
  </Simulation>
</Lems>
"""


@pytest.mark.parametrize("integration", ["exact", "jnml_neuron"])
def test_neuron_refuses_inputs_it_would_lose(tmp_path, integration):
    # NEURON delivers inputs through the section's v, which this cell does not have: its
    # mod read them as 0 (x stayed 0 where jLEMS integrates the pulse to 0.5)
    path = tmp_path / "LEMS_inp.xml"
    path.write_text(INPUT_CELL)
    mech = load_model(path).mechanisms["c1"]
    with pytest.raises(UnsupportedError, match="inputs into the point cell c1"):
        neuron_emit(mech, integration=integration)
