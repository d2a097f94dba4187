"""A LEMS ``<Simulation>`` and the ``<network>`` it targets → the IR's ``Simulation``.

Entry points: :func:`read_simulation` (on already loaded documents) and
:func:`load_simulation` (a file → model and simulation).  Quantity paths follow jNeuroML's
``LEMSQuantityPath`` (org.neuroml.export), which is what its NEURON export records; see
``docs/simulations.md``.  Networks with synaptic connections are refused for now.

Only the *shape* of a quantity path below the cell (``biophys/membraneProperties/...``) is
read here: whether it names a real variable of the cell is for the stage that knows the cell.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath, PureWindowsPath

from ..errors import ModelError, UnsupportedError
from ..ir.model import Model
from ..ir.simulation import (DEFAULT_FRACTION_ALONG, DEFAULT_SEGMENT, DEFAULT_WEIGHT,
                             EVENT_FORMATS, EventOutputFile, EventSelection, InputPlacement,
                             Instance, OutputColumn, OutputFile, Population, QuantityRef,
                             Simulation)
from .components import DOCUMENTATION, check_id
from .lems_types import Where, elements, local
from .units import UnitSystem

NETWORK_TYPES = ("network", "networkWithTemperature")

#: Network children that connect cells to each other: refused until synapses are supported.
CONNECTIONS = ("projection", "synapticConnection", "synapticConnectionWD",
               "continuousProjection", "electricalProjection")

#: Children with no effect on the simulated equations (plots, geometry, simulator hints).
_IGNORED_IN_SIMULATION = DOCUMENTATION | {"Display", "Meta"}
_IGNORED_IN_NETWORK = DOCUMENTATION | {"space", "region"}

#: Kinds of IR object (see ingest.model.kind_of) a population or an input may name.
_CELL_KINDS = ("cell", "input")             # "input": spike sources (spikeArray, ...)
_INPUT_KINDS = ("input",)

_ID = r"[A-Za-z0-9_]+"
_INT = r"[0-9]+"                            # not \d: it admits non-ASCII digits
_INDEXED = re.compile(rf"({_ID})\[({_INT})\]")
_PATH_ELEMENT = re.compile(rf"{_ID}|{_ID}:{_ID}:{_INT}")     # child id, or attachment
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CELL_TARGET = re.compile(rf"(?:\.\./)?(?:({_ID})\[({_INT})\]|({_ID})/({_INT})(?:/({_ID}))?)")


# ------------------------------------------------------------------------- quantity paths

def parse_quantity_path(text: str, *, cell_only: bool = False) -> tuple[QuantityRef, str | None]:
    """Split a LEMS quantity path; returns the reference and the cell component it names
    (``pop/0/CELL/v``; None for ``pop[0]/v``).  Raises ValueError (no location: the caller
    knows it).  ``cell_only``: the path selects a cell (EventSelection), no variable.

    Forms, as jNeuroML's LEMSQuantityPath reads them:
      ``pop[i]/a/b/var``            population, cell index, then the path in the cell
      ``pop/i/cell/a/b/var``        the same via a populationList-style path
      ``pop/i/cell/SEG/a/b/var``    SEG an integer (and not the last element): a segment id
    """
    parts = text.strip().split("/")
    if m := _INDEXED.fullmatch(parts[0]):
        pop, index, cell, rest = m[1], int(m[2]), None, parts[1:]
    elif len(parts) >= 3 and re.fullmatch(_INT, parts[1]):
        pop, index, cell, rest = parts[0], int(parts[1]), parts[2], parts[3:]
    else:
        raise ValueError(f"quantity path '{text}' does not start with a cell of a population "
                         "(pop[i]/... or pop/i/cell/...)")
    if cell is not None and not re.fullmatch(_ID, cell):
        raise ValueError(f"quantity path '{text}': '{cell}' is not a cell component id")
    segment = None
    if cell is not None and len(rest) >= 2 and re.fullmatch(_INT, rest[0]):
        segment, rest = int(rest[0]), rest[1:]
    return _finish_ref(text, pop, index, segment, rest, cell_only), cell


def _finish_ref(text, pop, index, segment, rest, cell_only) -> QuantityRef:
    if cell_only:
        if rest or segment is not None:
            raise ValueError(f"'{text}' must select a cell (pop[i] or pop/i/cell), "
                             "not a quantity inside it")
        return QuantityRef(pop, index, None, [], None, text)
    if not rest:
        raise ValueError(f"quantity path '{text}' names a cell but no variable")
    bad = [p for p in rest[:-1] if not _PATH_ELEMENT.fullmatch(p)]
    if bad or not _VARIABLE.fullmatch(rest[-1]):
        what = bad[0] if bad else rest[-1]
        raise ValueError(f"quantity path '{text}': '{what}' is not a valid path element")
    return QuantityRef(pop, index, segment, rest[:-1], rest[-1], text)


def parse_cell_target(text: str) -> tuple[str, int, str | None]:
    """An input's ``target``: ``pop[i]``, ``pop/i/cell`` or ``pop/i``, optionally behind
    ``../`` (an inputList's inputs are written relative to the list) → (pop, index, cell)."""
    m = _CELL_TARGET.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"target '{text}' is not a cell of a population "
                         "(pop[i], pop/i/cell or ../pop/i/cell)")
    if m[1] is not None:
        return m[1], int(m[2]), None
    return m[3], int(m[4]), m[5]


def check_output_path(path: str) -> str:
    """Refuse absolute paths and ``..`` that climbs out of the output folder (ValueError);
    return the path unchanged.  The runner still checks containment (symlinks)."""
    if not path.strip() or "\x00" in path:
        raise ValueError(f"invalid output file name {path!r}")
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).anchor:
        raise ValueError(f"output file '{path}' is an absolute path: outputs are written "
                         "relative to the simulation's output folder")
    depth = 0
    for part in re.split(r"[/\\]", path):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            raise ValueError(f"output file '{path}' climbs out of the output folder")
    return path


# ------------------------------------------------------------------------------ entry points

def read_simulation(documents, units: UnitSystem, target_id: str | None = None, *,
                    model: Model | None = None) -> Simulation:
    """Read the simulation ``target_id`` (default: the one ``<Target>`` names) from loaded
    documents (``xml.load(...).documents``; CoreTypes are skipped).  ``units`` is the unit
    system of the model (its own ``<Unit>``s included).  With ``model`` (from the same
    files) population components and inputs are also checked to be cells and inputs."""
    return _Reader(documents, units, model).read(target_id)


def load_simulation(path, include_dirs=(), allow_outside=False,
                    target_id: str | None = None) -> tuple[Model, Simulation]:
    """Load a LEMS simulation file: the model (mechanisms, cells) and its simulation.

    The XML is parsed once: the simulation is read from the same documents and unit system
    the model loader used.
    """
    from .model import Loader           # ingest.model imports this module's neighbours
    loader = Loader(path, include_dirs, allow_outside)
    model = loader.load()
    return model, read_simulation(loader.docs, loader.units, target_id, model=model)


# ------------------------------------------------------------------------------ the reader

def has_simulation(path, include_dirs=(), allow_outside=False) -> bool:
    """Whether the file names a simulation to run (a LEMS ``<Target>``)."""
    from . import xml
    root = xml.load(path, include_dirs=include_dirs, allow_outside=allow_outside).main.root
    return any(local(el) == "Target" for el in elements(root))


def _type_of(el) -> str:
    return el.get("type") or local(el)


def _describe(el) -> str:
    """``<projection id="p1">`` or, without an id, ``<synapticConnection from="a" to="b">``."""
    names = ("id",) if el.get("id") else ("from", "to", "synapse")
    attrs = "".join(f' {n}="{el.get(n)}"' for n in names if el.get(n) is not None)
    return f"<{local(el)}{attrs}>"


class _Reader:
    def __init__(self, documents, units: UnitSystem, model: Model | None):
        self.docs = [d for d in documents if not getattr(d, "core", False)]
        if not self.docs:
            raise ModelError("no model files to read a simulation from")
        self.units = units
        self.model = model
        self._cell_target: str | None = None     # a Simulation that runs one cell directly
        # Top-level ids (the Loader checks they are unique); first definition wins.
        self.index: dict[str, tuple] = {}
        for doc in self.docs:
            for el in elements(doc.root):
                if el.get("id") is not None:
                    self.index.setdefault(el.get("id"), (el, str(doc.path)))

    # ---- errors and attributes -----------------------------------------------------------

    @staticmethod
    def _error(message: str, el, file: str, cls=ModelError) -> ModelError:
        return cls(message, file=file, line=el.sourceline, element=local(el))

    def _required(self, el, name: str, file: str) -> str:
        value = el.get(name)
        if value is None or not value.strip():
            raise self._error(f"<{local(el)}> needs a '{name}' attribute", el, file)
        return value.strip()

    def _id(self, el, file: str, seen: set | None = None) -> str:
        value = check_id(self._required(el, "id", file), Where(file, el.sourceline), local(el))
        if seen is not None:
            if value in seen:
                raise self._error(f"duplicate id '{value}'", el, file)
            seen.add(value)
        return value

    def _int(self, el, name: str, file: str, default=None) -> int:
        text = el.get(name)
        if text is None:
            if default is None:
                raise self._error(f"<{local(el)}> needs a '{name}' attribute", el, file)
            return default
        if not re.fullmatch(rf"\s*{_INT}\s*", text):
            raise self._error(f"{name}='{text}' is not a non-negative integer", el, file)
        return int(text)

    def _float(self, el, name: str, file: str, default: float) -> float:
        text = el.get(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise self._error(f"{name}='{text}' is not a number", el, file)
        return value

    def _quantity(self, el, name: str, dimension: str, file: str) -> float:
        q = self.units.parse_quantity(self._required(el, name, file), dimension, file=file,
                                      line=el.sourceline, element=local(el))
        return q.internal

    # ---- simulation ----------------------------------------------------------------------

    def read(self, target_id: str | None) -> Simulation:
        sim_el, file = self._simulation_element(target_id)
        sim = self._simulation_attributes(sim_el, file)
        self._cell_target = self._lone_cell(sim.target_network)
        if self._cell_target is not None:
            # A Simulation may run one cell directly (jLEMS does): a population of one,
            # named after the cell, and output paths relative to that cell ("Vs").
            pop = Population(self._cell_target, self._cell_target, 1)
            sim.populations[pop.id] = pop
        else:
            net_el, net_file = self._network_element(sim_el, file, sim.target_network)
            self._network(net_el, net_file, sim)
        self._outputs(sim_el, file, sim)
        return sim

    def _lone_cell(self, target: str) -> str | None:
        """``target`` when it names a cell (not a network), else None."""
        found = self.index.get(target)
        if found is None or _type_of(found[0]) in NETWORK_TYPES:
            return None
        return target if self._kind(target) == "cell" else None

    def _simulation_element(self, target_id: str | None):
        if target_id is None:
            target_el, target_file = self._target()
            target_id = self._required(target_el, "component", target_file)
        else:
            target_el, target_file = None, str(self.docs[-1].path)
        found = self.index.get(target_id)
        if found is None or _type_of(found[0]) != "Simulation":
            what = "no component" if found is None else f"a <{_type_of(found[0])}>"
            err = ModelError(f"the target '{target_id}' is {what}, not a <Simulation>",
                             file=target_file)
            if target_el is not None:
                err.located(line=target_el.sourceline, element="Target")
            raise err
        return found

    def _target(self):
        """The ``<Target>``: the one in the file the user named, else the only one."""
        main = str(self.docs[-1].path)
        found = [(el, str(d.path)) for d in self.docs for el in elements(d.root)
                 if local(el) == "Target"]
        chosen = [t for t in found if t[1] == main] or found
        if not chosen:
            raise ModelError("no <Target component=...> names the simulation to run: give "
                             "a LEMS file with a <Target> and a <Simulation> (LEMS_*.xml; "
                             "a cell file is run through one that includes it)", file=main)
        if len(chosen) > 1:
            el, file = chosen[1]
            raise self._error("more than one <Target>", el, file)
        return chosen[0]

    def _simulation_attributes(self, el, file: str) -> Simulation:
        length = self._quantity(el, "length", "time", file)
        step = self._quantity(el, "step", "time", file)
        if not (length > 0 and step > 0):
            raise self._error(f"length ({length} ms) and step ({step} ms) must be positive",
                              el, file)
        seed = None if el.get("seed") is None else self._int(el, "seed", file)
        return Simulation(id=self._id(el, file), length_ms=length, dt_ms=step,
                          target_network=self._required(el, "target", file),
                          temperature_degC=None, seed=seed, source_file=file)

    def _network_element(self, sim_el, file: str, net_id: str):
        found = self.index.get(net_id)
        if found is None:
            raise self._error(f"target network '{net_id}' is not defined", sim_el, file)
        if _type_of(found[0]) not in NETWORK_TYPES:
            raise self._error(f"simulation target '{net_id}' is a <{_type_of(found[0])}>, "
                              "not a network", sim_el, file, UnsupportedError)
        return found

    # ---- network -------------------------------------------------------------------------

    def _network(self, el, file: str, sim: Simulation) -> None:
        sim.temperature_degC = self._temperature(el, file)
        children = elements(el)
        # Populations first: inputs may be written before the population they target.
        for c in children:
            if local(c) in ("population", "populationList"):
                pop = self._population(c, file)
                if pop.id in sim.populations:
                    raise self._error(f"duplicate population '{pop.id}'", c, file)
                sim.populations[pop.id] = pop
        explicit, lists = 0, set()
        for c in children:
            tag = local(c)
            if tag == "explicitInput":
                sim.inputs.append(self._explicit_input(c, file, explicit, sim.populations))
                explicit += 1
            elif tag == "inputList":
                sim.inputs += self._input_list(c, file, sim.populations, lists)
            else:
                self._other_network_child(c, file, el)

    def _other_network_child(self, c, file: str, net) -> None:
        tag = local(c)
        if tag in CONNECTIONS:
            raise self._error(f"networks with synaptic projections: {_describe(c)} in "
                              f"network '{net.get('id')}'", c, file, UnsupportedError)
        if tag not in _IGNORED_IN_NETWORK and tag not in ("population", "populationList"):
            raise self._error(f"<{tag}> in a network", c, file, UnsupportedError)

    def _temperature(self, el, file: str) -> float | None:
        # networkWithTemperature requires it; a plain network may carry one all the same.
        if el.get("temperature") is None and _type_of(el) != "networkWithTemperature":
            return None
        return self._quantity(el, "temperature", "temperature", file)

    def _population(self, el, file: str) -> Population:
        pid = self._id(el, file)
        component = self._required(el, "component", file)
        self._check_kind(component, _CELL_KINDS, "a cell", el, file)
        instances, seen = [], set()
        for c in elements(el):
            if local(c) == "instance":
                instances.append(self._instance(c, file, seen))
            elif local(c) not in DOCUMENTATION:
                raise self._error(f"<{local(c)}> in a population", c, file)
        if not instances:
            return Population(pid, component, self._int(el, "size", file))
        # A populationList is its instances; jLEMS ignores its size (Ex26 has size 3 and
        # 9 instances), and so do we.
        return Population(pid, component, len(instances), instances)

    def _instance(self, el, file: str, seen: set) -> Instance:
        index = self._int(el, "id", file)
        if index in seen:
            raise self._error(f"duplicate instance id {index}", el, file)
        seen.add(index)
        loc = [c for c in elements(el) if local(c) == "location"]
        if not loc:
            return Instance(index)
        xyz = tuple(self._float(loc[0], a, file, math.nan) for a in "xyz")
        if any(math.isnan(v) for v in xyz):
            raise self._error("<location> needs x, y and z", loc[0], file)
        return Instance(index, xyz)

    def _check_kind(self, comp_id: str, kinds, what: str, el, file: str) -> None:
        """``comp_id`` is defined and, when the model is known, is ``what``."""
        if comp_id not in self.index:
            raise self._error(f"unknown component '{comp_id}'", el, file)
        kind = self._kind(comp_id)
        if kind is not None and kind not in kinds:
            raise self._error(f"'{comp_id}' is a {kind}, not {what}", el, file)

    def _kind(self, comp_id: str) -> str | None:
        """What the model made of ``comp_id`` ("cell", "input", "channel", ...); None when
        there is no model or it is an unsupported component (the backend refuses those)."""
        m = self.model
        if m is None or any(u.id == comp_id for u in m.unsupported):
            return None
        if comp_id in m.cells:
            return "cell"
        if comp_id in m.mechanisms:
            return m.mechanisms[comp_id].kind
        skipped = [s.component_type for s in m.skipped if s.id == comp_id]
        return f"<{skipped[0]}>" if skipped else "component without equations"

    # ---- inputs --------------------------------------------------------------------------

    def _explicit_input(self, el, file: str, k: int, pops) -> InputPlacement:
        inp = self._required(el, "input", file)
        self._check_kind(inp, _INPUT_KINDS, "an input", el, file)
        pop, index = self._cell(el, file, pops)
        return InputPlacement(f"explicitInput[{k}]", inp, pop, index,
                              destination=el.get("destination", "synapses"))

    def _input_list(self, el, file: str, pops, seen_lists: set) -> list[InputPlacement]:
        # The cell of each input comes from its target alone, as in jLEMS and jNeuroML's
        # NEURON export: the list's own population attribute is not used (two corpus models
        # name a population there that does not exist, and pass their OSB tests).
        lid = self._id(el, file, seen_lists)
        comp = self._required(el, "component", file)
        self._check_kind(comp, _INPUT_KINDS, "an input", el, file)
        out, seen = [], set()
        for c in elements(el):
            if local(c) in ("input", "inputW"):
                out.append(self._list_input(c, file, lid, comp, pops, seen))
            elif local(c) not in DOCUMENTATION:
                raise self._error(f"<{local(c)}> in an inputList", c, file)
        return out

    def _list_input(self, el, file, lid, comp, pops, seen) -> InputPlacement:
        iid = self._id(el, file, seen)
        pop, index = self._cell(el, file, pops)
        fraction = self._float(el, "fractionAlong", file, DEFAULT_FRACTION_ALONG)
        if not 0 <= fraction <= 1:
            raise self._error(f"fractionAlong={fraction} is outside [0, 1]", el, file)
        weight = DEFAULT_WEIGHT
        if local(el) == "inputW":
            weight = self._float(el, "weight", file, math.nan)
            if math.isnan(weight):
                raise self._error("<inputW> needs a 'weight' attribute", el, file)
        return InputPlacement(f"{lid}/{iid}", comp, pop, index,
                              self._int(el, "segmentId", file, DEFAULT_SEGMENT), fraction,
                              weight, el.get("destination", "synapses"), lid)

    def _cell(self, el, file: str, pops) -> tuple[str, int]:
        text = self._required(el, "target", file)
        try:
            pop, index, cell = parse_cell_target(text)
        except ValueError as exc:
            raise self._error(str(exc), el, file) from None
        # The cell id in pop/i/CELL is not checked: jNeuroML ignores it (a corpus model
        # names the wrong cell there) and the population says which cell it is.
        self._check_cell(text, pop, index, None, pops, el, file)
        return pop, index

    def _check_cell(self, text, pop_id, index, cell, pops, el, file) -> None:
        pop = pops.get(pop_id)
        if pop is None:
            raise self._error(f"'{text}': unknown population '{pop_id}'", el, file)
        if not pop.has_index(index):
            raise self._error(f"'{text}': population '{pop_id}' has no cell {index} "
                              f"(it has {pop.size})", el, file)
        if cell is not None and cell != pop.component:
            raise self._error(f"'{text}' names cell '{cell}', but population '{pop_id}' "
                              f"is made of '{pop.component}'", el, file)

    # ---- outputs -------------------------------------------------------------------------

    def _outputs(self, sim_el, file: str, sim: Simulation) -> None:
        seen: set = set()
        for c in elements(sim_el):
            tag = local(c)
            if tag == "OutputFile":
                sim.outputs.append(self._output_file(c, file, sim.populations, seen))
            elif tag == "EventOutputFile":
                sim.event_outputs.append(self._event_file(c, file, sim.populations, seen))
            elif tag not in _IGNORED_IN_SIMULATION:
                raise self._error(f"<{tag}> in a <Simulation>", c, file, UnsupportedError)

    def _output_path(self, el, file: str) -> str:
        name = self._required(el, "fileName", file)
        folder = (el.get("path") or "").strip()
        path = f"{folder.rstrip('/')}/{name}" if folder else name
        try:
            return check_output_path(path)
        except ValueError as exc:
            raise self._error(str(exc), el, file) from None

    def _output_file(self, el, file: str, pops, seen: set) -> OutputFile:
        out = OutputFile(self._id(el, file, seen), self._output_path(el, file))
        columns: set = set()
        for c in self._children(el, file, "OutputColumn"):
            ref = self._ref(c, "quantity", file, pops, cell_only=False)
            out.columns.append(OutputColumn(self._id(c, file, columns), ref))
        return out

    def _event_file(self, el, file: str, pops, seen: set) -> EventOutputFile:
        out = EventOutputFile(self._id(el, file, seen), self._output_path(el, file),
                              self._required(el, "format", file))
        if out.format not in EVENT_FORMATS:
            raise self._error(f"format='{out.format}': expected one of "
                              f"{', '.join(EVENT_FORMATS)}", el, file)
        selections: set = set()
        for c in self._children(el, file, "EventSelection"):
            ref = self._ref(c, "select", file, pops, cell_only=True)
            out.selections.append(EventSelection(self._id(c, file, selections), ref,
                                                 self._required(c, "eventPort", file)))
        return out

    def _children(self, el, file: str, tag: str) -> list:
        """The ``tag`` children of ``el``; anything else but documentation is an error."""
        for c in elements(el):
            if local(c) not in DOCUMENTATION and local(c) != tag:
                raise self._error(f"<{local(c)}> in <{local(el)}>", c, file)
        return [c for c in elements(el) if local(c) == tag]

    def _ref(self, el, name: str, file: str, pops, cell_only: bool) -> QuantityRef:
        text = self._required(el, name, file)
        if self._cell_target is not None:
            text = f"{self._cell_target}[0]" + (f"/{text}" if text.strip() else "")
        try:
            ref, cell = parse_quantity_path(text, cell_only=cell_only)
        except ValueError as exc:
            raise self._error(str(exc), el, file) from None
        self._check_cell(text, ref.population, ref.index, cell, pops, el, file)
        return ref


__all__ = ["read_simulation", "load_simulation", "parse_quantity_path", "parse_cell_target",
           "check_output_path"]
