"""``<cell>`` / ``<cell2CaPools>`` -> :class:`nml_gradiff.ir.cell.Cell`.

:func:`build_cell` reads one cell element: its morphology (:mod:`.morphology`: segments,
groups, sections) and biophysics (:mod:`.biophysics`: densities, species, per-group values),
either inline or referenced by id (``<cell morphology="m1" biophysicalProperties="b1">`` with
``<morphology id="m1">`` at the top level of this or another loaded file).

:func:`check_references` is the hook for the caller, who knows which channels and
concentration models exist: an unknown id is a ModelError naming the density or species.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from ..errors import ModelError, UnsupportedError
from ..ir.cell import Cell, InhomogeneousParameter, path_length
from .biophysics import CellContext, read_biophysics
from .components import check_id
from .lems_types import Where, elements, local
from .morphology import build_sections, read_morphology

_BIOPHYSICS = ("biophysicalProperties", "biophysicalProperties2CaPools")
_IGNORED = {"notes", "annotation", "property"}


def build_cell(el, *, file: str, units, documents: Iterable | None = None) -> Cell:
    """Build the IR of one morphological cell.

    ``documents``: the loaded files (:class:`nml_gradiff.ingest.xml.Document` objects or
    their root elements), searched for referenced ``<morphology>`` and
    ``<biophysicalProperties>``; the cell's own file is always searched.
    """
    tag = local(el)
    cell_id = el.get("id")
    if not cell_id:
        raise ModelError(f"<{tag}> without an id", file=file, line=el.sourceline, element=tag)
    check_id(cell_id, Where(file, el.sourceline), tag)
    index = _TopLevel(el, file, documents)
    morph_el, morph_file = _part(el, ("morphology",), "morphology", index, file)
    if morph_el is None:
        raise ModelError(f"cell '{cell_id}' has no morphology", file=file,
                         line=el.sourceline, element=tag)
    morph = read_morphology(morph_el, morph_file)
    sections = build_sections(morph, morph_file)
    cell = Cell(cell_id, el.get("type") or tag, morph.segments, morph.groups, sections,
                inhomogeneous_parameters=_inhomogeneous(morph, morph_file), source=file)
    _translate_to_group_start(cell, morph)
    bio_el, bio_file = _part(el, _BIOPHYSICS, "biophysicalProperties", index, file)
    if bio_el is not None:
        ctx = CellContext(cell_id, bio_file, units, morph.groups, morph.segments,
                          cell.inhomogeneous_parameters)
        cell.placements, cell.species, cell.properties = read_biophysics(ctx, bio_el)
        cell.parameters = ctx.parameters
    return cell


def check_references(cell: Cell, channels: Container[str],
                     concentration_models: Container[str] | None = None) -> None:
    """ModelError for a placement whose ``ionChannel`` is not in ``channels`` or a species
    whose ``concentrationModel`` is not in ``concentration_models`` (None: not checked)."""
    for p in cell.placements:
        if p.mechanism not in channels:
            raise ModelError(f"{p.kind} '{p.id}' of cell '{cell.id}' uses unknown ionChannel "
                             f"'{p.mechanism}'", file=p.file, line=p.line, element=p.kind)
    if concentration_models is None:
        return
    for sp in cell.species:
        if sp.concentration_model not in concentration_models:
            raise ModelError(f"species '{sp.id}' of cell '{cell.id}' uses unknown "
                             f"concentrationModel '{sp.concentration_model}'", file=sp.file,
                             line=sp.line, element="species")


# ---------------------------------------------------------------------------- look-ups

class _TopLevel:
    """(element name, id) -> (element, file) for the top-level elements of every file."""

    def __init__(self, el, file: str, documents: Iterable | None):
        self.found: dict[tuple[str, str], tuple[object, str]] = {}
        for doc in documents or ():
            root = getattr(doc, "root", doc)
            self._add(root, str(getattr(doc, "path", None) or root.base or file))
        # The cell's own file last, so that its definitions win over same-named ones.
        self._add(el.getroottree().getroot(), file)

    def _add(self, root, file: str) -> None:
        for child in elements(root):
            if child.get("id"):
                self.found[(local(child), child.get("id"))] = (child, file)

    def get(self, tags: tuple[str, ...], ref: str):
        for tag in tags:
            if (tag, ref) in self.found:
                return self.found[(tag, ref)]
        return None, None


def _part(el, tags: tuple[str, ...], attribute: str, index: _TopLevel, file: str):
    """The cell's morphology or biophysics element and its file: inline child or referenced
    by ``attribute``; (None, None) when it has neither."""
    inline = [c for c in elements(el) if local(c) in tags]
    _check_children(el, file)
    ref = el.get(attribute)
    where = {"file": file, "line": el.sourceline, "element": local(el)}
    if len(inline) > 1 or (inline and ref):
        raise ModelError(f"cell '{el.get('id')}' has more than one <{tags[0]}>", **where)
    if inline:
        return inline[0], file
    if ref is None:
        return None, None
    found, found_file = index.get(tags, ref)
    if found is None:
        raise ModelError(f"cell '{el.get('id')}' refers to unknown {attribute} '{ref}'",
                         **where)
    return found, found_file


def _check_children(el, file: str) -> None:
    for child in elements(el):
        tag = local(child)
        if tag not in ("morphology", *_BIOPHYSICS, *_IGNORED):
            raise UnsupportedError(f"<{tag}> in <{local(el)}>", file=file,
                                   line=child.sourceline, element=tag)


def _translate_to_group_start(cell: Cell, morph) -> None:
    """With ``<proximal translationStart="s"/>`` the variable is s at the group's most
    proximal point and grows with the path length from there, as jNeuroML's NEURON and
    NetPyNE exports compute it (NEURON's SubsetDomainIterator with proximal_style 1: the
    distance from the root minus its minimum over the group); without ``<proximal>`` it is
    the path length from the root.  The IR keeps one number: ``translation_start`` is the
    path length from the root at which the variable is 0."""
    starts = path_length(cell, 0.0)
    for group in morph.raw_groups.values():
        for param in group.inhomogeneous:
            if param.id in group.proximal and cell.groups.get(param.group):
                origin = min(starts[s] for s in cell.groups[param.group])
                param.translation_start = origin - param.translation_start


def _inhomogeneous(morph, file: str) -> dict[str, InhomogeneousParameter]:
    found: dict[str, InhomogeneousParameter] = {}
    for group in morph.raw_groups.values():
        for param in group.inhomogeneous:
            if param.id in found:
                raise ModelError(f"inhomogeneousParameter '{param.id}' is defined twice "
                                 f"(segmentGroups '{found[param.id].group}' and "
                                 f"'{group.id}')", file=file, line=group.line,
                                 element="inhomogeneousParameter")
            found[param.id] = param
    return found
