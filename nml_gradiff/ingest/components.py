"""LEMS/NeuroML component instances: the tree of XML elements, typed.

A NeuroML element such as ``<ionChannelHH id="naChan" conductance="10pS" species="na">`` is
a LEMS component of type ``ionChannelHH``; its child elements fill the ``Child``/``Children``
slots its type declares (``<gateHHrates id="m">`` goes to ``gates``; ``<forwardRate
type="HHExpRate">`` is the ``forwardRate`` child).  This module builds that tree and checks
every element lands in a slot; it does not interpret any equation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ModelError
from .lems_types import ResolvedType, TypeRegistry, Where, elements, local

#: Valid NeuroML ids (the XSD's NmlId, non-empty).  They end up in generated code, so
#: nothing else gets through; one that starts with a digit (spike "0", segment "12") is
#: prefixed where it becomes a name (see Component.label).
ID_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")

#: Documentation elements: allowed anywhere, never part of the equations.
DOCUMENTATION = {"notes", "annotation", "property", "Annotation", "Notes"}

#: Attributes that carry no model meaning for us.
_IGNORED_ATTRIBUTES = {"id", "type", "metaid", "neuroLexId", "description"}


@dataclass
class Component:
    id: str | None
    type: ResolvedType
    attributes: dict[str, str]
    where: Where
    slot: str | None = None                 # the parent's Child/Children slot it fills
    children: list["Component"] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The name this component contributes to parameter paths."""
        return self.id if self.id is not None else (self.slot or self.type.name)

    @property
    def name_part(self) -> str:
        """The name this component contributes to symbol names: its label, made a valid
        identifier by prefixing the slot when the id starts with a digit (spike "0")."""
        label = self.label
        return f"{self.slot or 'c'}{label}" if label[0].isdigit() else label

    def in_slot(self, slot: str) -> list["Component"]:
        return [c for c in self.children if c.slot == slot]


def check_id(value: str, where: Where, element: str) -> str:
    if not ID_PATTERN.match(value):
        raise where.error(f"invalid id {value!r}: NeuroML ids are letters, digits and _ "
                          "(they are used as names in generated code)", element=element)
    return value


def _type_name_of(el) -> str:
    # <Component type="x">, <forwardRate type="HHExpRate">, <gate type="gateHHrates">
    return el.get("type") or local(el)


def _slot_for(parent: ResolvedType, tag: str, child_type: ResolvedType) -> str | None:
    if tag in parent.child or tag in parent.children:
        return tag
    for slot, slot_type in {**parent.children, **parent.child}.items():
        if child_type.is_a(slot_type) or not slot_type:
            return slot
    return None


def build(el, registry: TypeRegistry, file: str | None,
          parent: ResolvedType | None = None, index: dict | None = None,
          referenced: tuple[str, ...] = ()) -> Component:
    """Build the component tree rooted at XML element ``el``.

    ``index`` maps top-level ids to ``(element, file)``: a ``ComponentReference`` attribute
    (``ionChannel="na"``, ``synapse1="AMPA"``) then brings the referenced component in as a
    child in a slot named after the reference.
    """
    where = Where(file, el.sourceline)
    tag = local(el)
    type_name = _type_name_of(el)
    if type_name not in registry:
        # A slot element without a type attribute takes its slot's declared type.
        if parent is not None and tag in parent.child and not el.get("type"):
            type_name = parent.child[tag]
        else:
            raise where.error(f"unknown ComponentType '{type_name}'", element=tag)
    ctype = registry.resolve(type_name, where)
    comp_id = el.get("id")
    if comp_id is not None:
        check_id(comp_id, where, tag)
    attributes = {k: v for k, v in el.attrib.items()
                  if k not in _IGNORED_ATTRIBUTES and "}" not in k}
    comp = Component(comp_id, ctype, attributes, where)
    seen_ids: dict[str, int] = {}
    for c in elements(el):
        if local(c) in DOCUMENTATION:
            continue
        child = build(c, registry, file, ctype, index, referenced)
        child.slot = _slot_for(ctype, local(c), child.type)
        if child.slot is None:
            raise ModelError(f"<{local(c)}> (type {child.type.name}) is not allowed inside "
                             f"a {ctype.name}", file=file, line=c.sourceline, element=local(c))
        if child.id is not None:
            if child.id in seen_ids:
                raise ModelError(f"duplicate id '{child.id}' (first at line "
                                 f"{seen_ids[child.id]})", file=file, line=c.sourceline,
                                 element=local(c))
            seen_ids[child.id] = c.sourceline
        comp.children.append(child)
    comp.children += _references(comp, registry, index or {}, referenced)
    return comp


def _references(comp: Component, registry, index: dict, referenced) -> list[Component]:
    out = []
    for name in comp.type.references:
        target = comp.attributes.get(name)
        if target is None or target not in index:
            continue
        if target in referenced:
            raise comp.where.error("component references form a cycle: "
                                   + " -> ".join(referenced + (target,)))
        el, file = index[target]
        child = build(el, registry, file, None, index, referenced + (target,))
        child.slot, child.id = name, None       # labelled by the reference: synapse1_...
        out.append(child)
    return out
