"""Files -> IR: the front half of the compiler in one call, :func:`load_model`."""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import UnsupportedError
from ..ir.model import Model, Skipped, Unsupported
from . import xml
from .cell import build_cell, check_references
from .components import Component, build, check_id
from .flatten import Flattener
from .internal_units import add_channel_current, to_mechanism
from .lems_types import TypeRegistry, Where, elements, local, read_component_type
from .units import UnitSystem

#: Elements of a LEMS/NeuroML file that are definitions or plumbing, not components.
_NOT_COMPONENTS = {"ComponentType", "Dimension", "Unit", "Include", "include", "Target",
                   "Constant", "notes", "annotation", "property", "Annotation"}

#: Kinds of mechanism, by the core type a component's type descends from (first match wins).
_KINDS = [("baseIonChannel", "channel"), ("concentrationModel", "concentration"),
          ("baseSynapse", "synapse"), ("baseSynapseDL", "synapse"),
          ("basePointCurrent", "input"), ("basePointCurrentDL", "input"),
          ("baseSpikeSource", "input"), ("baseCell", "cell")]

#: Morphological cells: their own ingest (sections, densities) builds them, not the flattener.
_MORPHOLOGICAL = ("cell", "cell2CaPools")

#: Simulations, networks and the parts of a morphological cell defined at the top level (a
#: cell refers to them by id): the simulation and cell ingests read them, not the flattener.
_STRUCTURE = ("Simulation", "network", "networkWithTemperature", "morphology",
              "biophysicalProperties", "biophysicalProperties2CaPools")


def kind_of(comp: Component) -> str:
    for base, kind in _KINDS:
        if comp.type.is_a(base):
            return kind
    return "component"


class Loader:
    """Reads one model (with its includes) into the IR."""

    def __init__(self, path: str | Path, include_dirs=(), allow_outside=False):
        self.path = Path(path)
        loaded = xml.load(self.path, include_dirs=include_dirs, allow_outside=allow_outside)
        self.docs = [d for d in loaded.documents if not getattr(d, "core", False)]
        self.units = UnitSystem.standard()
        self.registry = _core_registry().copy()
        self._core_names = set(self.registry.types)
        self._ids: dict[str, Where] = {}

    def load(self) -> Model:
        for doc in self.docs:
            self._definitions(doc)
        model = Model(source=str(self.path))
        self.index = {el.get("id"): (el, str(doc.path)) for doc in self.docs
                      for el in elements(doc.root) if el.get("id") is not None
                      and local(el) not in _NOT_COMPONENTS}
        for doc in self.docs:
            for el in elements(doc.root):
                if local(el) not in _NOT_COMPONENTS:
                    self._component(model, el, str(doc.path))
        self._check_cells(model)
        return model

    def _check_cells(self, model: Model) -> None:
        """Every density names a channel, every species a concentration model we know."""
        channels = {n for n, m in model.mechanisms.items() if m.kind == "channel"}
        pools = {n for n, m in model.mechanisms.items() if m.kind == "concentration"}
        missing = {u.id for u in model.unsupported}
        for cell in model.cells.values():
            check_references(cell, channels | missing, pools | missing)

    def _definitions(self, doc) -> None:
        for el in elements(doc.root):
            tag = local(el)
            if tag in ("Dimension", "Unit"):
                self.units.add_from_lems(el)
            elif tag == "ComponentType":
                td = read_component_type(el, str(doc.path))
                # A model that ships its own copy of a CoreTypes file redefines core types;
                # jNeuroML takes the later definition, and so do we.
                self.registry.add(td, replace_core=td.name in self._core_names)

    def _component(self, model: Model, el, file: str) -> None:
        where = Where(file, el.sourceline)
        type_name = el.get("type") or local(el)
        if type_name not in self.registry:
            raise where.error(f"unknown ComponentType '{type_name}'", element=local(el))
        ctype = self.registry.resolve(type_name, where)
        comp_id = el.get("id")
        if comp_id is not None:
            check_id(comp_id, where, local(el))
            self._unique(comp_id, where, local(el))
        # Only components with equations are built into a tree here; cells with a
        # morphology and networks/simulations have stages of their own.
        if any(ctype.is_a(m) for m in _MORPHOLOGICAL):
            model.cells[comp_id] = build_cell(el, file=file, units=self.units,
                                              documents=self.docs)
        elif ctype.dynamics is None or any(ctype.is_a(s) for s in _STRUCTURE):
            model.skipped.append(Skipped(comp_id, ctype.name))
        else:
            try:
                comp = build(el, self.registry, file, index=self.index,
                             referenced=(comp_id,) if comp_id else ())
                self._mechanism(model, comp, file)
            except UnsupportedError as exc:
                model.unsupported.append(Unsupported(comp_id, ctype.name, str(exc)))

    def _unique(self, comp_id: str, where: Where, element: str) -> None:
        if comp_id in self._ids:
            first = self._ids[comp_id]
            raise where.error(f"duplicate id '{comp_id}' (first defined at "
                              f"{first.file}:{first.line})", element=element)
        self._ids[comp_id] = where

    def _mechanism(self, model: Model, comp: Component, file: str) -> None:
        if comp.id is None:
            raise comp.where.error("a top-level component needs an id",
                                   element=comp.type.name)
        kind = kind_of(comp)
        flat = Flattener(self.units, comp).flatten()
        try:
            mech = to_mechanism(flat, self.units, name=comp.id, kind=kind, source=file)
            if kind == "channel":
                add_channel_current(mech, self.units)
        except ValueError as exc:
            raise comp.where.error(str(exc), element=comp.type.name) from None
        model.mechanisms[comp.id] = mech


@functools.lru_cache(maxsize=1)
def _core_registry() -> TypeRegistry:
    """The NeuroML2 CoreTypes, read once per process (every model starts from them)."""
    registry = TypeRegistry()
    for doc in xml.load_core():
        for el in elements(doc.root):
            if local(el) == "ComponentType":
                registry.add(read_component_type(el, str(doc.path)))
    return registry


def load_model(path, include_dirs=(), allow_outside=False) -> Model:
    """Parse ``path`` and everything it includes into a :class:`~nml_gradiff.ir.model.Model`."""
    return Loader(path, include_dirs, allow_outside).load()

