"""LEMS ComponentType definitions: reading them from XML and resolving ``extends``.

A :class:`TypeDef` holds one ComponentType as written; :class:`TypeRegistry` resolves the
inheritance chain into a :class:`ResolvedType`, the merged view the flattener works from.

Inheritance rules (jLEMS's): declarations (Parameter, Child, Exposure, ...) accumulate down
the chain, a redeclaration replacing the inherited one; a type that has a ``<Dynamics>`` of its
own replaces the inherited Dynamics *as a whole* (``iafRefCell`` redefines the Dynamics of
``iafCell`` and must not inherit its reset-on-threshold condition).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from ..errors import ModelError


def local(el) -> str:
    """Element name without namespace (NeuroML and LEMS files differ in namespaces)."""
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def elements(el):
    """Child elements, skipping comments and processing instructions."""
    return [c for c in el if isinstance(c.tag, str)]


@dataclass
class Where:
    """Where a definition came from, for error messages."""

    file: str | None = None
    line: int | None = None

    def error(self, message: str, element: str | None = None) -> ModelError:
        return ModelError(message, file=self.file, line=self.line, element=element)


@dataclass
class Case:
    condition: str | None       # None: the default case
    value: str


@dataclass
class DerivedVar:
    name: str
    dimension: str
    value: str | None = None            # expression text
    select: str | None = None           # path such as "gates[*]/fcond"
    reduce: str | None = None           # "add" or "multiply"
    required: bool = True
    cases: list[Case] | None = None     # ConditionalDerivedVariable
    where: Where = field(default_factory=Where)


@dataclass
class Assignment:
    variable: str
    value: str


@dataclass
class Handler:
    """OnCondition (test set), OnEvent (port set), OnStart or OnEntry (neither)."""

    kind: str                       # "condition", "event", "start", "entry"
    test: str | None = None
    port: str | None = None
    assignments: list[Assignment] = field(default_factory=list)
    event_out: list[str] = field(default_factory=list)
    transition: str | None = None   # regime to go to
    where: Where = field(default_factory=Where)
    ignored: list[str] = field(default_factory=list)


@dataclass
class KineticSchemeDef:
    name: str
    nodes: str
    state_variable: str
    edges: str
    edge_source: str
    edge_target: str
    forward_rate: str
    reverse_rate: str


@dataclass
class Regime:
    name: str
    initial: bool
    time_derivatives: dict[str, str] = field(default_factory=dict)
    handlers: list[Handler] = field(default_factory=list)


@dataclass
class Dynamics:
    state_variables: dict[str, str] = field(default_factory=dict)     # name -> dimension
    time_derivatives: dict[str, str] = field(default_factory=dict)    # name -> expression
    derived: dict[str, DerivedVar] = field(default_factory=dict)
    handlers: list[Handler] = field(default_factory=list)
    regimes: list[Regime] = field(default_factory=list)
    kinetic: list[KineticSchemeDef] = field(default_factory=list)
    exposed_as: dict[str, str] = field(default_factory=dict)          # variable -> exposure


@dataclass
class TypeDef:
    """One ``<ComponentType>`` as written (no inheritance applied)."""

    name: str
    extends: str | None
    where: Where
    parameters: dict[str, str] = field(default_factory=dict)            # name -> dimension
    derived_parameters: dict[str, tuple[str, str]] = field(default_factory=dict)
    constants: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (dim, value)
    properties: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)                  # param -> value text
    child: dict[str, str] = field(default_factory=dict)                  # slot -> type
    children: dict[str, str] = field(default_factory=dict)               # slot -> type
    attachments: dict[str, str] = field(default_factory=dict)
    exposures: dict[str, str] = field(default_factory=dict)
    requirements: dict[str, str] = field(default_factory=dict)
    texts: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)            # ComponentReference
    paths: set[str] = field(default_factory=set)
    event_ports: dict[str, str] = field(default_factory=dict)
    instance_requirements: dict[str, str] = field(default_factory=dict)
    dynamics: Dynamics | None = None


@dataclass
class ResolvedType(TypeDef):
    """A TypeDef with its whole ``extends`` chain merged in; ``lineage`` lists the chain."""

    lineage: tuple[str, ...] = ()
    # jLEMS's evaluation order of the derived variables over the chain, DerivedVariables and
    # ConditionalDerivedVariables apart (it evaluates the first first); see _extend_order
    plain_order: tuple[str, ...] = ()
    conditional_order: tuple[str, ...] = ()

    def is_a(self, type_name: str) -> bool:
        return type_name in self.lineage


# --------------------------------------------------------------------------- reading XML

def _where(el, file) -> Where:
    return Where(file=file, line=el.sourceline)


def _attr(el, name, file, default=None, required=False):
    value = el.get(name, default)
    if required and value is None:
        raise ModelError(f"missing attribute '{name}'", file=file, line=el.sourceline,
                         element=local(el))
    return value


def _read_handler(el, kind, file) -> Handler:
    h = Handler(kind=kind, test=el.get("test"), port=el.get("port"), where=_where(el, file))
    for c in elements(el):
        tag = local(c)
        if tag == "StateAssignment":
            h.assignments.append(Assignment(_attr(c, "variable", file, required=True),
                                            _attr(c, "value", file, required=True)))
        elif tag == "EventOut":
            h.event_out.append(_attr(c, "port", file, required=True))
        elif tag == "Transition":
            h.transition = _attr(c, "regime", file, required=True)
        elif tag == "DerivedVariable":
            # Not part of LEMS (Bahl et al.'s cad.nml has one).  A derived variable is
            # recomputed from its own definition every step, so an assignment to it in a
            # handler has no effect; jLEMS, and jNeuroML's exports built on it, ignore it.
            h.ignored.append(tag)
        else:
            raise ModelError(f"unknown element <{tag}> in <{local(el)}>", file=file,
                             line=c.sourceline, element=tag)
    return h


_HANDLER_KINDS = {"OnCondition": "condition", "OnEvent": "event", "OnStart": "start",
                  "OnEntry": "entry"}


def _read_derived(el, file) -> DerivedVar:
    dv = DerivedVar(name=_attr(el, "name", file, required=True),
                    dimension=el.get("dimension", "none"), value=el.get("value"),
                    select=el.get("select"), reduce=el.get("reduce"),
                    required=el.get("required", "true") != "false", where=_where(el, file))
    if local(el) == "ConditionalDerivedVariable":
        dv.cases = [Case(c.get("condition"), _attr(c, "value", file, required=True))
                    for c in elements(el) if local(c) == "Case"]
    return dv


def _read_dynamics_item(dyn: Dynamics, regime: Regime | None, c, file) -> None:
    tag = local(c)
    target_derivs = regime.time_derivatives if regime else dyn.time_derivatives
    target_handlers = regime.handlers if regime else dyn.handlers
    if tag == "StateVariable":
        name = _attr(c, "name", file, required=True)
        dyn.state_variables[name] = c.get("dimension", "none")
        if c.get("exposure"):
            dyn.exposed_as[name] = c.get("exposure")
    elif tag == "TimeDerivative":
        target_derivs[_attr(c, "variable", file, required=True)] = _attr(
            c, "value", file, required=True)
    elif tag in ("DerivedVariable", "ConditionalDerivedVariable"):
        dv = _read_derived(c, file)
        dyn.derived[dv.name] = dv
        if c.get("exposure"):
            dyn.exposed_as[dv.name] = c.get("exposure")
    elif tag in _HANDLER_KINDS:
        target_handlers.append(_read_handler(c, _HANDLER_KINDS[tag], file))
    elif tag == "KineticScheme":
        dyn.kinetic.append(KineticSchemeDef(
            name=c.get("name", "ks"), nodes=_attr(c, "nodes", file, required=True),
            state_variable=_attr(c, "stateVariable", file, required=True),
            edges=_attr(c, "edges", file, required=True),
            edge_source=_attr(c, "edgeSource", file, required=True),
            edge_target=_attr(c, "edgeTarget", file, required=True),
            forward_rate=_attr(c, "forwardRate", file, required=True),
            reverse_rate=_attr(c, "reverseRate", file, required=True)))
    elif tag == "Regime" and regime is None:
        r = Regime(name=_attr(c, "name", file, required=True),
                   initial=c.get("initial", "false") == "true")
        for rc in elements(c):
            _read_dynamics_item(dyn, r, rc, file)
        dyn.regimes.append(r)
    else:
        raise ModelError(f"unknown element <{tag}> in <Dynamics>", file=file,
                         line=c.sourceline, element=tag)


def _read_dynamics(el, file) -> Dynamics:
    dyn = Dynamics()
    for c in elements(el):
        _read_dynamics_item(dyn, None, c, file)
    return dyn


def _read_declaration(td: TypeDef, c, file) -> None:
    tag = local(c)
    name = c.get("name")
    simple = {"Parameter": td.parameters, "Exposure": td.exposures,
              "Requirement": td.requirements}
    if tag in simple:
        simple[tag][_attr(c, "name", file, required=True)] = c.get("dimension", "none")
    elif tag == "DerivedParameter":
        td.derived_parameters[name] = (c.get("dimension", "none"),
                                       _attr(c, "value", file, required=True))
    elif tag == "Constant":
        td.constants[name] = (c.get("dimension", "none"), _attr(c, "value", file, required=True))
    elif tag == "Property":
        td.properties[name] = (c.get("dimension", "none"), c.get("defaultValue"))
    elif tag == "Fixed":
        td.fixed[_attr(c, "parameter", file, required=True)] = _attr(c, "value", file,
                                                                     required=True)
    elif tag == "Child":
        td.child[name] = _attr(c, "type", file, required=True)
    elif tag == "Children":
        td.children[name] = c.get("type", "")
    elif tag == "Attachments":
        td.attachments[name] = _attr(c, "type", file, required=True)
    elif tag == "Text":
        td.texts.add(name)
    elif tag == "Link":
        td.links[name] = c.get("type", "")
    elif tag == "ComponentReference":
        td.references[name] = c.get("type", "")
    elif tag == "Path":
        td.paths.add(name)
    elif tag == "EventPort":
        td.event_ports[name] = c.get("direction", "in")
    elif tag == "InstanceRequirement":
        td.instance_requirements[name] = c.get("type", "")
    elif tag == "Dynamics":
        td.dynamics = _read_dynamics(c, file)
    elif tag in _IGNORED_DECLARATIONS:
        pass
    else:
        raise ModelError(f"unknown element <{tag}> in <ComponentType {td.name}>", file=file,
                         line=c.sourceline, element=tag)


# Declarations that describe simulation structure or documentation, not equations of one
# mechanism.  Structure/Simulation are handled by the simulation ingest, not here.
_IGNORED_DECLARATIONS = {"Structure", "Simulation", "About", "Meta",
                         "IndexParameter", "ComponentRequirement"}


def read_component_type(el, file: str | None) -> TypeDef:
    td = TypeDef(name=_attr(el, "name", file, required=True), extends=el.get("extends"),
                 where=_where(el, file))
    for c in elements(el):
        _read_declaration(td, c, file)
    return td


# --------------------------------------------------------------------------- registry

_MERGED_DICTS = ("parameters", "derived_parameters", "constants", "properties", "fixed",
                 "child", "children", "attachments", "exposures", "requirements", "links",
                 "references", "event_ports", "instance_requirements")


class TypeRegistry:
    """All ComponentTypes known to one model (CoreTypes first, then the model's own)."""

    def __init__(self):
        self.types: dict[str, TypeDef] = {}
        self._resolved: dict[str, ResolvedType] = {}

    def copy(self) -> "TypeRegistry":
        """A registry with the same types, to extend without touching this one (TypeDefs
        are never changed after reading, so they are shared)."""
        other = TypeRegistry()
        other.types = dict(self.types)
        other._resolved = dict(self._resolved)
        return other

    def add(self, td: TypeDef, *, replace_core: bool = False) -> None:
        old = self.types.get(td.name)
        if old is not None and not replace_core:
            raise td.where.error(
                f"ComponentType '{td.name}' is already defined at "
                f"{old.where.file}:{old.where.line}", element="ComponentType")
        self.types[td.name] = td
        if self._resolved:
            # only types whose chain includes td change
            self._resolved = {n: r for n, r in self._resolved.items() if td.name not in r.lineage}

    def __contains__(self, name: str) -> bool:
        return name in self.types

    def resolve(self, name: str, where: Where | None = None) -> ResolvedType:
        if name not in self._resolved:
            self._resolved[name] = self._merge(name, where or Where(), ())
        return self._resolved[name]

    def _merge(self, name: str, where: Where, seen: tuple[str, ...]) -> ResolvedType:
        if name in seen:
            raise where.error("ComponentType inheritance cycle: " + " -> ".join(seen + (name,)))
        td = self.types.get(name)
        if td is None:
            raise where.error(f"unknown ComponentType '{name}'")
        if td.extends is None:
            base = ResolvedType(name=name, extends=None, where=td.where)
        else:
            base = self._merge(td.extends, td.where, seen + (name,))
        merged = ResolvedType(name=name, extends=td.extends, where=td.where,
                              lineage=(name,) + base.lineage)
        for attr in _MERGED_DICTS:
            setattr(merged, attr, {**getattr(base, attr), **getattr(td, attr)})
        merged.texts = base.texts | td.texts
        merged.paths = base.paths | td.paths
        merged.dynamics = td.dynamics if td.dynamics is not None else base.dynamics
        own = td.dynamics.derived.values() if td.dynamics is not None else ()
        merged.plain_order = _extend_order(base.plain_order,
                                           [d.name for d in own if d.cases is None])
        merged.conditional_order = _extend_order(base.conditional_order,
                                                 [d.name for d in own if d.cases is not None])
        return merged


def _extend_order(base: tuple[str, ...], names: list[str]) -> tuple[str, ...]:
    """jLEMS's order of derived variables for a type declaring ``names`` over a base with
    the order ``base``, as measured with jNeuroML 0.14's jLEMS (docs/omv-neuron.md,
    "PinskyRinzel"): a type that redefines all of its base's variables uses its own order;
    one that redefines some keeps the base's order, a redefined variable in its base's
    place, and appends its new ones."""
    own = tuple(dict.fromkeys(names))
    if set(base) <= set(own):
        return own
    return base + tuple(n for n in own if n not in base)
