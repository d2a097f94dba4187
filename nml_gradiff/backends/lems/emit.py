"""IR Model + Simulation + parameters -> LEMS files of the sensitivity-augmented model.

Two files (see docs/lems.md):

* ``<cell>_sens.xml``: a ComponentType extending ``baseCellMembPotCap`` whose Dynamics carry
  the compartment's states (:mod:`.system`) and, for every chosen parameter, their
  sensitivities (:mod:`nml_gradiff.passes.continuous`), and one Component of it with the
  model's parameter values;
* ``LEMS_<sim>_sens.xml``: the simulation: the same inputs, length and step as the source
  simulation, recording every state and sensitivity into ``<sim>_sens.dat``;

plus ``<sim>_sens.columns.json`` naming each column of that file with its SI unit and its
factor to internal units.

jLEMS integrates with forward Euler (every state from the derivatives at step n, measured
in tests/test_lems_backend.py), so the continuous sensitivity equations emitted here are
the exact derivative of the trajectory jLEMS computes.  jNeuroML's NEURON export steps v
one step ahead of the other states; ``simulator="jnml_neuron"`` (:data:`SIMULATORS`)
emits the reading of dv/dP that is exact there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import sympy

from ... import __version__
from ...errors import ModelError, UnsupportedError
from ...ir.mechanism import Parameter
from ...ir.model import Model
from ...ir.simulation import Simulation
from ...ir.units import CAPACITANCE, CURRENT, TIME, VOLTAGE, Dimension, internal_unit
from ...passes.continuous import sens_name, sensitivity_system
from ...templating import environment
from .printer import LemsPrinter, check_name, lems_variables
from .system import I_SYN, CellSystem, cell_system
from .units import LemsUnit, UnitTable, dimension_of_unit

__all__ = ["emit", "LemsFiles", "CURRENT_CLAMPS", "SENSITIVITY_UNITS", "SIMULATORS"]

#: How sensitivity states are declared: "si" with their own dimension (dim x / dim theta,
#: defined in the file where the core types have none), or "internal": dimensionless numbers
#: in internal units (mV per S/cm2, ...), which jNeuroML's NEURON export needs (it refuses
#: dimensions it does not know: "Dimension ... is not known to NEURON").
SENSITIVITY_UNITS = ("si", "internal")

#: Which simulator the emitted files are for (docs/lems.md, "Through jNeuroML's NEURON
#: export").  "jlems": every state, v included, advances by forward Euler from the values
#: at step n, so the sensitivity states are the derivative of the trajectory.
#: "jnml_neuron": jNeuroML's NEURON export, where NEURON advances v *before* the mod's
#: states, with the current the mod computed in the step before (from v[n] and the states
#: of step n-1).  The mod's states then hold (v[n+1], x[n]) at each update, so its state
#: S_v is dv/dP one step ahead of v; the recorded column is a DerivedVariable that the
#: export evaluates before the update, i.e. dv/dP at the row of v.  The export also
#: computes the first step's current in INITIAL before the states are assigned (all 0):
#: a state ``ready`` (0 there, 1 after) switches that current off, so the first step, too,
#: has the derivative the emitted initial values say.  Needs internal sensitivity units.
SIMULATORS = ("jlems", "jnml_neuron")
#: simulator jnml_neuron: the state that is 0 until INITIAL has assigned the others.
READY = "ready"
#: simulator jnml_neuron: the state dv/dP is named as the sensitivity of this (v one step
#: ahead), the recorded DerivedVariable keeps the name of dv/dP.
NEXT_V = "vnext"

#: Inputs that inject a current independent of v (their parameters are not differentiated).
CURRENT_CLAMPS = ("pulseGenerator", "sineGenerator", "rampGenerator")


@dataclass
class LemsFiles:
    files: dict[str, str]        # relative name -> text
    simulation: str              # the LEMS file to run
    output: str                  # the data file it writes
    columns: list[dict]


@dataclass
class _Quantity:
    """A declared state: LEMS name, dimension name, internal value name, unit."""

    name: str
    unit: LemsUnit
    internal: str
    rate: str = ""
    init: str = ""

    @property
    def dimension(self) -> str:
        return self.unit.dimension


def _fmt(x: float) -> str:
    return repr(float(x))


class _Emitter:
    def __init__(self, model: Model, sim: Simulation, params: list[Parameter], command: str,
                 sensitivity_units: str, simulator: str):
        self.model, self.sim, self.command = model, sim, command
        self.sensitivity_units, self.simulator = sensitivity_units, simulator
        self.pop, self.system = cell_system(model, sim)
        self.table = UnitTable()
        self.names = self._param_names(params)
        if simulator == "jnml_neuron":
            self._check_export_params()
        self.constants: dict[str, LemsUnit] = {}
        self.zeros: dict[str, LemsUnit] = {}        # Constant = 0 <unit> (unit with offset)
        self.internals: list[dict] = []

    # ---- parameters

    def _param_names(self, params: list[Parameter]) -> list[str]:
        names = []
        for p in params:
            name = self.system.name_of(p)
            if name is None:
                raise UnsupportedError(
                    f"parameter {p.path} does not enter the dynamics of cell "
                    f"{self.system.cell.id} as the LEMS backend emits them (input, "
                    "morphology, spike threshold or unused): choose parameters of the "
                    "channels, pools, capacitance or initial potential")
            names.append(name)
        return names

    def _check_export_params(self) -> None:
        """jNeuroML's NEURON export gives the section the capacitance of the component's
        ``C`` (a number fixed at emission) and injects the inputs into the section, so
        a change of the specific capacitance parameter alone does not scale the input's
        effect on v there: the export's trajectory is not the model's function of it."""
        cm = self.system.cm
        if isinstance(cm, sympy.Symbol) and str(cm) in self.names:
            raise UnsupportedError(
                f"parameter {self.system.params[str(cm)].path} (specific capacitance) with "
                "simulator jnml_neuron: jNeuroML's NEURON export sets the section's "
                "capacitance from the component's C, a number, so the exported model does "
                "not depend on it as the model does; use simulator jlems or --target neuron")

    def _constant(self, unit: LemsUnit) -> str:
        name = check_name(f"U_{unit.symbol}")
        self.constants[name] = unit
        return name

    def _quantity(self, name: str, dim: Dimension, scale: float | None = None) -> _Quantity:
        unit = self.table.internal(dim) if scale is None else self.table.unit(dim, scale)
        if unit.symbol == "":
            return _Quantity(name, unit, name)
        internal = check_name(f"{name}_{unit.symbol}" if scale is None else f"{name}_iu")
        if unit.offset:     # degC: (T - 0 degC) / 1 K
            step = self.table.unit(dim, unit.scale)
            zero = check_name(f"Z_{unit.symbol}")
            self.zeros[zero] = unit
            value = f"({name} - {zero}) / {self._constant(step)}"
        else:
            value = f"{name} / {self._constant(unit)}"
        self.internals.append({"name": internal, "value": value})
        return _Quantity(name, unit, internal)

    # ---- the Dynamics

    def build(self) -> dict:
        sys = self.system
        ode = sys.ode()
        sens = sensitivity_system(ode, self.names)
        printer_names: dict[str, str] = {}
        params = []
        for name, p in sys.params.items():
            q = self._quantity(name, dimension_of_unit(p.unit))
            printer_names[name] = q.internal
            value = _fmt(p.value) + q.unit.symbol
            params.append({"name": name, "dimension": q.dimension, "path": p.path,
                           "value": value})
        states = []
        for s in sys.states:
            q = self._quantity(check_name(s.name), s.dimension)
            printer_names[s.name] = q.internal
            states.append((s, q))
        sens_states = []
        for s, q in states:
            for name in self.names:
                p = sys.params[name]
                pdim = dimension_of_unit(p.unit)
                sname = check_name(sens_name(s.name, name))
                if self.sensitivity_units == "internal":
                    state = sname
                    if self.simulator == "jnml_neuron" and s.name == "v":
                        state = check_name(sens_name(NEXT_V, name))
                    sq = _Quantity(state, LemsUnit("none", "", 1.0), state)
                else:
                    sq = self._quantity(sname, s.dimension / pdim,
                                        q.unit.scale / internal_unit(pdim).scale)
                printer_names[sname] = sq.internal
                sens_states.append((s, name, sq))
        i_syn = self._quantity("iSyn", CURRENT)
        printer_names[I_SYN.name] = i_syn.internal
        if any(sympy.Symbol("t", real=True) in s.rhs.free_symbols for s in sys.states):
            t = self._quantity("t", TIME)
            printer_names["t"] = t.internal
        ms = self._constant(self.table.internal(TIME))
        outputs = [(f"rate:{s.name}", s.rhs) for s in sys.states]
        outputs += [(f"rate:{sq.name}", sens.rhs[s.name, p]) for s, p, sq in sens_states]
        outputs += [(f"init:{s.name}", s.init) for s in sys.states]
        outputs += [(f"init:{sq.name}", sens.init[s.name, p]) for s, p, sq in sens_states]
        self._check_no_clash(printer_names)
        variables, texts = lems_variables(outputs, LemsPrinter(printer_names), prefix="x")
        for s, q in states:
            self._finish(q, texts[f"rate:{s.name}"], texts[f"init:{s.name}"], ms)
        for s, p, sq in sens_states:
            self._finish(sq, texts[f"rate:{sq.name}"], texts[f"init:{sq.name}"], ms)
        v = next(q for s, q in states if s.name == "v")
        self._constant(self.table.internal(VOLTAGE))     # U_mV: the spike test uses it
        recorded = []
        if self.simulator == "jnml_neuron":
            recorded = self._export_v_sensitivities(v, sens_states, sens)
        return dict(parameters=params, states=[q for _, q in states],
                    sens_states=[sq for *_, sq in sens_states], variables=variables,
                    v_rate=v.rate, sens_pairs=sens_states, recorded=recorded)

    def _export_v_sensitivities(self, v: _Quantity, sens_states, sens) -> list[dict]:
        """simulator jnml_neuron (see :data:`SIMULATORS`): v and its sensitivities advance
        only once ``ready`` is 1, and each dv/dP is recorded through a DerivedVariable that
        reads the state one step behind (before INITIAL assigns it: its initial value)."""
        v.rate = f"{READY} * {v.rate}"
        out = []
        for s, p, sq in sens_states:
            if s.name != "v":
                continue
            sq.rate = f"{READY} * {sq.rate}"
            init = sens.init[s.name, p]
            if not isinstance(init, sympy.Number):
                raise ModelError(f"initial dv/d{p} is not a number: {init}")
            value = sq.name if init == 0 else f"{sq.name} + (1 - {READY}) * {_fmt(init)}"
            out.append({"name": check_name(sens_name(s.name, p)), "value": value})
        return out

    def _finish(self, q: _Quantity, rate: str, init: str, ms: str) -> None:
        if q.unit.symbol:
            u = self._constant(q.unit)
            q.rate, q.init = f"{u} * ({rate}) / {ms}", f"{u} * ({init})"
        else:
            q.rate, q.init = f"({rate}) / {ms}", init

    def _check_no_clash(self, names: dict[str, str]) -> None:
        used = list(names.values()) + list(names) + list(self.constants)
        clash = [n for n in used if n.startswith("x") and n[1:2] in ("c", "f", "s")
                 and n[2:].isdigit()]
        reserved = [n for n in ("spiking", "iMemb", READY) if n in names]
        if clash or reserved:
            raise UnsupportedError(f"model names {clash or reserved} clash with names the "
                                   "LEMS backend generates")

    # ---- files

    def _inputs(self) -> list[dict]:
        out, seen = [], set()
        for ip in self.sim.inputs:
            mech = self.model.mechanisms.get(ip.input)
            if mech is None or mech.component_type not in CURRENT_CLAMPS:
                kind = mech.component_type if mech else "unknown"
                raise UnsupportedError(f"input {ip.id} ({kind}) in the LEMS backend: only "
                                       f"the current clamps {', '.join(CURRENT_CLAMPS)}")
            if ip.weight != 1.0:
                raise UnsupportedError(f"input {ip.id} with weight {ip.weight} in the LEMS "
                                       "backend")
            if ip.input in seen:
                out.append({"id": ip.input, "placement_only": True})
                continue
            seen.add(ip.input)
            attrs = []
            for p in mech.parameters.values():
                attr = check_name(p.path.rsplit("/", 1)[-1])
                if attr == "weight":
                    continue
                attrs.append((attr, _fmt(p.value) + self.table.internal(
                    dimension_of_unit(p.unit)).symbol))
            out.append({"id": check_name(ip.input), "type": mech.component_type,
                        "attributes": attrs, "placement_only": False})
        return out

    def render(self, sim_file: str) -> LemsFiles:
        ctx = self.build()
        sys = self.system
        cell = check_name(sys.cell.id)
        sim_id = check_name(self.sim.id)
        type_name = f"{cell}_sens"
        cell_file = f"{cell}_sens.xml"
        out_file, columns_file = f"{sim_id}_sens.dat", f"{sim_id}_sens.columns.json"
        header = _comment(f"Generated by nml-gradiff {__version__} from {sim_file} "
                          f"({self.command}); sensitivities to: "
                          + ", ".join(self.system.params[n].path for n in self.names))
        cm = sys.params.get(str(sys.cm)) if isinstance(sys.cm, sympy.Symbol) else None
        cm_value = cm.value if cm is not None else float(sys.cm)
        cap = self.table.internal(CAPACITANCE)
        c_value = cm_value * sys.area_um2 * 1e-5       # uF/cm2 * um2 = 1e-5 nF
        dims = [{"name": n, "exponents": [(k, e) for k, e in zip("mltiknj", d.exponents) if e]}
                for n, d in sorted(self.table.new_dimensions.items())]
        units = [{"symbol": s, "dimension": d, "power": p, "scale": _fmt(sc)}
                 for s, (d, p, sc) in sorted(self.table.new_units.items())]
        constants = [{"name": n, "dimension": u.dimension, "value": f"1{u.symbol}"}
                     for n, u in sorted(self.constants.items())]
        constants += [{"name": n, "dimension": u.dimension, "value": f"0{u.symbol}"}
                      for n, u in sorted(self.zeros.items())]
        quantities = ctx["states"] + ctx["sens_states"]
        cell_text = environment("lems").get_template("cell.xml.j2").render(
            header=header, cell=sys.cell.id, type_name=type_name, area=_fmt(sys.area_um2),
            dimensions=dims, units=units, constants=constants,
            parameters=ctx["parameters"], exposures=quantities, states=ctx["states"],
            sens_states=ctx["sens_states"], internals=self.internals,
            variables=ctx["variables"], v_rate=ctx["v_rate"], component_id=cell,
            recorded=ctx["recorded"], ready=READY if ctx["recorded"] else None,
            capacitance=_fmt(c_value) + cap.symbol,
            spike_thresh=_fmt(sys.spike_thresh) + "mV")
        columns = self._columns(ctx)
        inputs = self._inputs()
        sim_text = environment("lems").get_template("simulation.xml.j2").render(
            header=header, file_name=f"LEMS_{sim_id}_sens.xml", out_file=out_file,
            columns_file=columns_file, sim_id=sim_id, cell_file=cell_file,
            inputs=[i for i in inputs if not i["placement_only"]],
            placements=inputs, network_id=check_name(self.sim.target_network),
            population=check_name(self.pop.id), component_id=cell,
            length=_fmt(self.sim.length_ms) + "ms", step=_fmt(self.sim.dt_ms) + "ms",
            columns=[{"id": c["name"], "quantity": c["name"]} for c in columns[1:]],
            spikes_file=f"{sim_id}_sens.spikes")
        sim_name = f"LEMS_{sim_id}_sens.xml"
        files = {cell_file: cell_text, sim_name: sim_text,
                 columns_file: json.dumps({"file": out_file, "simulator": self.simulator,
                                           "columns": columns, "notes": sys.notes},
                                          indent=1) + "\n"}
        return LemsFiles(files, sim_name, out_file, columns)

    def _columns(self, ctx) -> list[dict]:
        """One entry per column of the data file: what it is, the unit of the values in the
        file (SI, or internal for sensitivity_units="internal"), and the factor that turns
        them into internal units (NEURON's: mV, ms, S/cm2, ...)."""
        cols = [{"index": 0, "name": "t", "kind": "time", "unit": "s",
                 "to_internal": 1e3, "internal_unit": "ms"}]
        for q in ctx["states"]:
            cols.append({"index": len(cols), "name": q.name, "kind": "state",
                         "unit": _si(q, self.table), "to_internal": 1.0 / q.unit.scale,
                         "internal_unit": _internal_symbol(self.system, q.name)})
        for s, p, q in ctx["sens_pairs"]:
            prm = self.system.params[p]
            internal = f"({s.unit or '1'})/({prm.unit or '1'})"
            unit = internal if self.sensitivity_units == "internal" else _si(q, self.table)
            # the public name dx/dP (simulator jnml_neuron: dv/dP is a DerivedVariable)
            cols.append({"index": len(cols), "name": check_name(sens_name(s.name, p)),
                         "kind": "sensitivity",
                         "state": s.name, "parameter": prm.path, "unit": unit,
                         "to_internal": 1.0 / q.unit.scale, "internal_unit": internal})
        return cols


def _comment(text: str) -> str:
    """Text safe inside an XML comment ("--" is not allowed there)."""
    return re.sub(r"-{2,}", "-", text)


def _si(q: _Quantity, table: UnitTable) -> str:
    if q.unit.dimension == "none":
        return "1"
    dim = table.new_dimensions.get(q.unit.dimension) or table.standard.dimension(
        q.unit.dimension)
    return dim.si_symbol() or "1"


def _internal_symbol(system: CellSystem, name: str) -> str:
    return next(s.unit for s in system.states if s.name == name) or "1"


def emit(model: Model, sim: Simulation, params: list[Parameter], *, sim_file: str = "",
         command: str = "nml-gradiff convert --target lems",
         sensitivity_units: str | None = None, simulator: str = "jlems") -> LemsFiles:
    """The LEMS files of the single-compartment cell of ``sim`` with the sensitivities of
    its states to ``params``, for ``simulator`` (see the module docstring,
    :data:`SIMULATORS` and :data:`SENSITIVITY_UNITS`; the units default to "si" for jLEMS
    and "internal" for jNeuroML's NEURON export, which needs them)."""
    if not params:
        raise ModelError("the LEMS target needs --params GLOB... (which sensitivities to emit)")
    if simulator not in SIMULATORS:
        raise ModelError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    if sensitivity_units is None:
        sensitivity_units = "internal" if simulator == "jnml_neuron" else "si"
    if sensitivity_units not in SENSITIVITY_UNITS:
        raise ModelError(f"sensitivity units must be one of {SENSITIVITY_UNITS}, "
                         f"not {sensitivity_units!r}")
    if simulator == "jnml_neuron" and sensitivity_units != "internal":
        raise ModelError("simulator jnml_neuron needs sensitivity units 'internal' "
                         "(jNeuroML's NEURON export refuses dimensions it does not know)")
    return _Emitter(model, sim, params, command, sensitivity_units, simulator).render(sim_file)
