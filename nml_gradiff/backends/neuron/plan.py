"""IR Model + Simulation -> the mod files and the JSON plan that :mod:`.builder` builds.

The plan is plain data: which NEURON mechanism each placement uses and its RANGE values per
compartment, populations, inputs at (section, x), what to record, and the run settings.
Every quantity a LEMS file records is resolved here, or refused with ``unsupported:``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy

from ...errors import ModelError, UnsupportedError
from ...ir.cell import Cell
from ...ir.ion_binding import CELL_POOL_QUANTITIES, density_ion, is_second_pool_density
from ...ir.mechanism import Mechanism
from ...ir.model import Model
from ...ir.simulation import QuantityRef, Simulation
from .defaults import rounded_defaults
from .emit import Binding, dimensionless_input, emit
from .layout import cell_layout

#: NeuroML placement attribute -> RANGE name in our channel mods.
PLACEMENT_RANGE = {"condDensity": "gmax", "erev": "erev", "vShift": "vShift",
                   "permeability": "permeability"}

#: Internal unit -> factor to SI, for recorded quantities.
TO_SI = {"mV": 1e-3, "ms": 1e-3, "S_per_cm2": 1e4, "mA_per_cm2": 10.0, "mM": 1.0, "": 1.0,
         "nA": 1e-9, "uS": 1e-6, "per_ms": 1e3}

#: The elements that hold the densities, in a recording's path.
_MEMBRANE_PROPERTIES = ("membraneProperties", "membraneProperties2CaPools")

#: The area of the dummy section of a point cell, whose C equals cm * area at cm = 1 uF/cm2.
_UF_PER_CM2_UM2_IN_NF = 1e-5


@dataclass
class Plan:
    data: dict = field(default_factory=dict)
    mods: dict[str, str] = field(default_factory=dict)     # NEURON name -> mod text
    units: dict[str, float] = field(default_factory=dict)  # recording key -> factor to SI


def channel_binding(placement: dict) -> Binding:
    """Where a density of the layout (``layout.cell_layout``) meets NEURON: its ion, how its
    erev is found, whether it has a vShift.  Shared with the sensitivity planner, so that one
    (mechanism, binding) gives one primal mod."""
    ion = None if placement["ion"] == "non_specific" else placement["ion"]
    ion, concentrations = density_ion(placement["kind"], ion), {}
    if is_second_pool_density(placement["kind"]):
        # the second calcium pool's (ir/ion_binding.py): ica2, its Nernst potential from
        # ca2i/ca2o, as in jNeuroML's export (eca2)
        concentrations = {"caConc": f"{ion}i", "caConcExt": f"{ion}o"}
    extra = {"concentrations": concentrations} if concentrations else {}
    return Binding(ion=ion, erev=placement["erev_mode"],
                   vshift=placement["kind"] == "channelDensityVShift", **extra)


class Planner:
    def __init__(self, model: Model, sim: Simulation, integration: str = "exact",
                 memo: dict | None = None):
        self.model, self.sim = model, sim
        self.integration = integration          # emit.INTEGRATIONS
        # emitted mods kept by a caller across plans (tune: one emission for all epochs;
        # shadow_plan.make_sens_plan says what that asks of the caller)
        # (integration, mechanism, binding) -> (name, text); also what makes one plan emit
        # each distinct mod once: a cell places one channel on many sections with the same
        # binding, and emitting is the costly part of planning (sympy; Thalamocortical
        # cells: 846 placements, ~50 mods)
        self.memo = {} if memo is None else memo
        self.plan = Plan()
        self.layouts: dict[str, dict] = {}

    # ------------------------------------------------------------------ mechanisms

    def mechanism(self, mech_id: str, binding: Binding | None = None) -> str:
        mech = self.model.mechanisms.get(mech_id)
        if mech is None:
            reason = next((u.reason for u in self.model.unsupported if u.id == mech_id), None)
            raise (UnsupportedError(reason.removeprefix("unsupported: ")) if reason else
                   ModelError(f"no mechanism '{mech_id}' in the model"))
        key = (self.integration, mech_id, _binding_key(binding))
        if key not in self.memo:
            self.memo[key] = emit(mech, binding=binding, integration=self.integration)
        name, text = self.memo[key]
        self.plan.mods[name] = text
        return name

    def _channel(self, placement: dict) -> dict:
        binding = channel_binding(placement)
        name = self.mechanism(placement["mechanism"], binding)
        values = placement["values"]
        ranges = {PLACEMENT_RANGE[k]: v for k, v in values.items() if k in PLACEMENT_RANGE}
        return {"section": placement["section"], "neuron_name": name, "range": ranges,
                "id": placement["id"], "erev_mode": placement["erev_mode"]}

    def _species(self, species: dict) -> dict:
        name = self.mechanism(species["mechanism"], Binding(ion=species["ion"]))
        # The pool's mod has initialConcentration/initialExtConcentration only if its
        # ComponentType reads them (emit.py); Pospischil et al.'s custom
        # decayingPoolConcentrationModelPosp does not (it starts from its restingConc).
        # The species' values still set the ion's cai0/cao0 (_ion_defaults).
        reads = self.model.mechanisms[species["mechanism"]].reads
        values = {k: v for k, v in species["values"].items() if k in reads}
        return {"section": species["section"], "neuron_name": name, "range": values,
                "id": species["id"]}

    # ------------------------------------------------------------------ cells

    def cell_type(self, component: str) -> dict:
        if component in self.model.cells:
            return self._morphological(self.model.cells[component])
        mech = self.model.mechanisms.get(component)
        if mech is not None and mech.kind == "cell":
            return self._point_cell(mech)
        raise UnsupportedError(f"population of '{component}' in the NEURON backend")

    def _morphological(self, cell: Cell) -> dict:
        layout = cell_layout(cell)
        self.layouts[cell.id] = layout
        placements = [self._channel(p) for p in layout["placements"]]
        placements += [self._species(s) for s in layout["species"]]
        return {"kind": "morphological", "sections": layout["sections"],
                "placements": placements, "spike_thresh": layout["spike_thresh"]}

    def _point_cell(self, mech: Mechanism) -> dict:
        name = self.mechanism(mech.name)
        capacitance = next((p.value for p in mech.parameters.values() if p.unit == "nF"), 1.0)
        area = capacitance / _UF_PER_CM2_UM2_IN_NF
        return {"kind": "point", "neuron_name": name, "cm": 1.0,
                "diameter": math.sqrt(area / math.pi), "Csec": capacitance}

    # ------------------------------------------------------------------ locations

    def where(self, population: str, index: int, segment: int | None,
              fraction: float = 0.5) -> dict:
        component = self.sim.populations[population].component
        layout = self.layouts.get(component)
        if layout is None:                       # a point cell
            return {"population": population, "index": index, "section": "soma", "x": 0.5}
        seg = str(segment if segment is not None else 0)
        if seg not in layout["segments"]:
            raise ModelError(f"cell {component} has no segment {seg}",
                             file=self.sim.source_file)
        sec, x0, x1 = layout["segments"][seg]
        return {"population": population, "index": index, "section": sec,
                "x": x0 + fraction * (x1 - x0)}

    def inputs(self) -> list[dict]:
        out = []
        for inp in self.sim.inputs:
            name = self.mechanism(inp.input)
            loc = self.where(inp.population, inp.cell_index, inp.segment_id,
                             inp.fraction_along)
            self._check_input_target(inp)
            rng = {"weight": inp.weight} if inp.weight != 1.0 else {}
            if dimensionless_input(self.model.mechanisms[inp.input]):
                rng["Cdl"] = self._dimensionless_target(inp)
            out.append({**loc, "neuron_name": name, "range": rng})
        return out

    def _check_input_target(self, inp) -> None:
        """A point cell with a regime that holds v (dv/dt = 0: iafRefCell's refractory
        period) cannot take an input here: its v is the section's, which the input keeps
        charging during that regime (measured: v climbs 10 mV back from reset in a 5 ms
        refractory period, where LEMS and the JAX backend hold it)."""
        component = self.sim.populations[inp.population].component
        mech = self.model.mechanisms.get(component)
        if mech is not None and mech.kind == "cell" and holds_v(mech):
            raise UnsupportedError(
                f"the input {inp.input} into {component} ({mech.component_type}) in the "
                "NEURON backend: the cell holds v in one of its regimes (dv/dt = 0, e.g. "
                "refractory), which a NEURON section does not do while an input injects "
                "current; the JAX backend runs it")

    def _dimensionless_target(self, inp) -> float:
        """The capacitance (nF) that turns a dimensionless input's ``I`` (mV/ms of the
        target's dv/dt) into nA: a point cell's Csec.  A morphological target has no such
        convention in NeuroML."""
        cell_type = self.plan.data["cell_types"][self.sim.populations[inp.population].component]
        if cell_type["kind"] != "point":
            raise UnsupportedError(f"the dimensionless input {inp.input} on a cell that is "
                                   "not a point cell")
        return cell_type["Csec"]

    # ------------------------------------------------------------------ recordings

    def recording(self, ref: QuantityRef) -> dict:
        cell_type = self.plan.data["cell_types"][self.sim.populations[ref.population].component]
        loc = self.where(ref.population, ref.index, ref.segment)
        if cell_type["kind"] == "point":
            return self._point_recording(ref, loc, cell_type)
        if not ref.path and ref.variable == "v":
            self.plan.units[ref.text] = TO_SI["mV"]
            return {**loc, "what": "v"}
        if not ref.path and ref.variable == "caConc":
            self.plan.units[ref.text] = TO_SI["mM"]
            return {**loc, "what": "cai"}
        if not ref.path and ref.variable in CELL_POOL_QUANTITIES:
            return self._pool_recording(ref, loc)
        if len(ref.path) == 1 and self._input_index(ref) is not None:
            return self._input_recording(ref)
        return self._density_recording(ref, loc, cell_type)

    def _pool_recording(self, ref: QuantityRef, loc: dict) -> dict:
        """A cell2CaPools' ``caConc2``, or a cell's ``iCa``/``iCa2``: the calcium current
        into the pool, in nA, inward positive (NEURON's ``i<ion>`` is outward, per area: the
        runner multiplies by the compartment's area).  LEMS defines iCa as the ion's
        densities times the cell's surface area, a single-compartment definition; on a cell
        of many compartments this is the current of the compartment recorded (segment 0
        unless the path names one), as jNeuroML's NEURON export records it (the pool mod's
        ``iCa`` at that segment)."""
        ion, kind = CELL_POOL_QUANTITIES[ref.variable]  # caConc (cai) is recorded above
        if not any(sp["ion"] == ion for sp in self.layouts[self._component(ref)]["species"]):
            raise UnsupportedError(f"recording {ref.text}: the cell has no {ion} species, "
                                   f"so no {ion} pool for {ref.variable} to come from")
        if kind == "concentration":
            self.plan.units[ref.text] = TO_SI["mM"]
            return {**loc, "what": "range", "name": f"{ion}i"}
        self.plan.units[ref.text] = TO_SI["nA"]
        return {**loc, "what": "ion_current", "ion": ion}

    def _component(self, ref: QuantityRef) -> str:
        return self.sim.populations[ref.population].component

    def _input_index(self, ref: QuantityRef) -> int | None:
        """The input named by ``pop/i/cell/INPUT/var`` (its id or its input component)."""
        for k, inp in enumerate(self.sim.inputs):
            if (inp.population, inp.cell_index) == (ref.population, ref.index) and \
                    ref.path[0] in (inp.input, inp.id.split("/")[-1]):
                return k
        return None

    def _input_recording(self, ref: QuantityRef) -> dict:
        k = self._input_index(ref)
        mech = self.model.mechanisms[self.sim.inputs[k].input]
        unit = _unit_of(mech, ref.variable, ref.text)
        self.plan.units[ref.text] = TO_SI.get(unit, 1.0)
        return {"what": "input", "index": k, "name": ref.variable}

    def _point_recording(self, ref: QuantityRef, loc: dict, cell_type: dict) -> dict:
        mech = self.model.mechanisms[self.sim.populations[ref.population].component]
        if ref.variable is None:
            raise UnsupportedError(f"recording {ref.text}: a path that names no variable")
        if ref.path:
            # a child's variable (a channelPopulation's gate): its flattened name joins the
            # children's names, while a LEMS path may name a referenced component by its id
            # (.../kslow/a/inf for the child 'ionChannel'); we do not guess which is which
            raise UnsupportedError(f"recording {ref.text}: a variable of a component inside "
                                   f"the point cell {mech.name} ({'/'.join(ref.path)}); "
                                   "only the cell's own variables are recorded")
        if ref.variable == "v":
            self.plan.units[ref.text] = TO_SI["mV"]
            return {**loc, "what": "v"}
        unit = _unit_of(mech, ref.variable, ref.text)
        self.plan.units[ref.text] = TO_SI.get(unit, 1.0)
        return {**loc, "what": "point", "name": ref.variable}

    def _density_recording(self, ref: QuantityRef, loc: dict, cell_type: dict) -> dict:
        # BIOPHYS_ID/membraneProperties/DENSITY_ID[/CHANNEL_ID]/gate/.../variable
        # (membraneProperties2CaPools in a cell2CaPools)
        path = list(ref.path)
        for element in _MEMBRANE_PROPERTIES:
            if element in path:
                path = path[path.index(element) + 1:]
                break
        density = next((p for p in cell_type["placements"] if path and p["id"] == path[0]
                        and p["section"] == loc["section"]), None)
        if density is None:
            why = self._no_density(path, loc, cell_type)
            raise UnsupportedError(f"recording {ref.text}: {why}")
        mech_id = self._mechanism_id(density["id"])
        if len(path) > 1 and path[1] == mech_id:
            path = [path[0]] + path[2:]
        mech = self.model.mechanisms[mech_id]
        if ref.variable == "gDensity" and len(path) == 1:
            # gDensity = gmax * fopen: record fopen, scale by gmax where it is recorded
            gmax = density["range"]["gmax"]
            compartment = min(int(loc["x"] * len(gmax)), len(gmax) - 1)
            self.plan.units[ref.text] = TO_SI["S_per_cm2"] * gmax[compartment]
            return {**loc, "what": "gdensity", "mechanism": density["neuron_name"]}
        if ref.variable == "iDensity" and len(path) == 1:
            return self._idensity(ref, loc, density)
        if ref.variable == "erev" and len(path) == 1:
            return self._erev(ref, loc, density)
        var = "_".join(path[1:] + [ref.variable])
        unit = _unit_of(mech, var, ref.text)
        self.plan.units[ref.text] = TO_SI.get(unit, 1.0)
        return {**loc, "what": "range", "name": f"{var}_{density['neuron_name']}"}

    def _no_density(self, path: list[str], loc: dict, cell_type: dict) -> str:
        """Why ``path`` names no density of the cell at ``loc``, for the refusal."""
        if not path:
            return ("not a quantity of the cell that the NEURON backend records (v, caConc, "
                    "caConc2, iCa, iCa2, or a density's variables under membraneProperties)")
        if any(p["id"] == path[0] for p in cell_type["placements"]):
            return (f"the density {path[0]} is not on section {loc['section']}, where the "
                    "recorded segment lies")
        return f"the cell has no channel density '{path[0]}'"

    def _idensity(self, ref: QuantityRef, loc: dict, density: dict) -> dict:
        """iDensity = gmax * fopen * (v - erev), outward positive in NEURON, but LEMS's
        iDensity is inward positive: gDensity * (erev - v)."""
        rng = density["range"]
        if "erev" not in rng:
            # Nernst/GHK: the mod's RANGE ichan (outward, mA/cm2); LEMS is inward positive
            self.plan.units[ref.text] = -TO_SI["mA_per_cm2"]
            return {**loc, "what": "range", "name": f"ichan_{density['neuron_name']}"}
        compartment = min(int(loc["x"] * len(rng["gmax"])), len(rng["gmax"]) - 1)
        self.plan.units[ref.text] = TO_SI["mA_per_cm2"]
        return {**loc, "what": "idensity", "mechanism": density["neuron_name"],
                "gmax": rng["gmax"][compartment], "erev": rng["erev"][compartment]}

    def _erev(self, ref: QuantityRef, loc: dict, density: dict) -> dict:
        """A density's erev: the fixed RANGE PARAMETER, or the Nernst potential the mod
        computes (RANGE ``erev`` too, emit.py); GHK/GHK2 currents have none."""
        if density.get("erev_mode") not in ("fixed", "nernst"):
            raise UnsupportedError(f"recording {ref.text}: a {density.get('erev_mode')} "
                                   "density has no reversal potential")
        self.plan.units[ref.text] = TO_SI["mV"]
        return {**loc, "what": "range", "name": f"erev_{density['neuron_name']}"}

    def _mechanism_id(self, placement_id: str) -> str:
        for cell in self.model.cells.values():
            for p in cell.placements:
                if p.id == placement_id:
                    return p.mechanism
            for s in cell.species:
                if s.id == placement_id:
                    return s.concentration_model
        raise ModelError(f"no placement {placement_id}")

    # ------------------------------------------------------------------ everything

    def build(self) -> Plan:
        sim = self.sim
        self.plan.data = {
            "dt": sim.dt_ms, "tstop": sim.length_ms,
            "celsius": sim.temperature_degC if sim.temperature_degC is not None else 6.3,
            "cell_types": {p.component: self.cell_type(p.component)
                           for p in sim.populations.values()},
            "populations": [{"id": p.id, "component": p.component, "size": p.size}
                            for p in sim.populations.values()],
        }
        self.plan.data["ions"] = self._ion_defaults()
        self.plan.data["inputs"] = self.inputs()
        records = {c.quantity.text: self.recording(c.quantity)
                   for out in sim.outputs for c in out.columns}
        self.plan.data["record"] = records
        self.plan.data["spikes"] = {sel.select.text: self._spike_source(sel.select)
                                    for ev in sim.event_outputs for sel in ev.selections}
        # nocmodl rounds PARAMETER defaults to 6 digits: exact runs set those from Python
        self.plan.data["defaults"] = (rounded_defaults(self.plan.mods)
                                      if self.integration == "exact" else {})
        return self.plan

    def _spike_source(self, ref: QuantityRef) -> dict:
        cell_type = self.plan.data["cell_types"][self.sim.populations[ref.population].component]
        loc = self.where(ref.population, ref.index, ref.segment)
        thresh = cell_type.get("spike_thresh", 0.0)
        return {**loc, "point": cell_type["kind"] == "point", "threshold": thresh}

    def _ion_defaults(self) -> dict[str, dict]:
        """NEURON keeps one initial concentration per ion (``cai0_ca_ion``): take it from
        the species; two species of one ion with different values cannot be built."""
        ions: dict[str, dict] = {}
        for cell in self.model.cells.values():
            for sp in cell.species:
                value = {"i": sp.initial_concentration, "o": sp.initial_ext_concentration}
                if ions.setdefault(sp.ion, value) != value:
                    raise UnsupportedError(f"species of ion {sp.ion} with different initial "
                                           "concentrations in one model (NEURON has one "
                                           f"{sp.ion}i0_{sp.ion}_ion)")
        return ions


def holds_v(mech: Mechanism) -> bool:
    """Whether a point cell has a regime in which its v does not change (the flattener
    writes dv/dt per regime as a Piecewise; a regime without a TimeDerivative gives 0)."""
    v = mech.states.get("v")
    rhs = v.rhs if v is not None else None
    return isinstance(rhs, sympy.Piecewise) and any(e == 0 for e, _ in rhs.args)


def _binding_key(binding: Binding | None) -> tuple | None:
    """A hashable stand-in for a Binding (its concentrations are a dict): every field, so
    that two bindings that could give different mods never share one."""
    if binding is None:
        return None
    return tuple((f.name, _frozen(getattr(binding, f.name)))
                 for f in dataclasses.fields(binding))


def _frozen(value):
    if isinstance(value, Mapping):
        return tuple(sorted(value.items()))
    return value


def _unit_of(mech: Mechanism, name: str, text: str) -> str:
    for table in (mech.states, mech.derived):
        if name in table:
            return table[name].unit
    raise UnsupportedError(f"recording {text}: {mech.name} has no variable '{name}'")


def make_plan(model: Model, sim: Simulation, integration: str = "exact") -> Plan:
    return Planner(model, sim, integration).build()
