"""IR Cell -> the plain data a NEURON loader needs to build it (sections, points, values).

The result is JSON-able, so ``convert`` can write it beside a generated loader that needs
nothing but NEURON to build the cell.  Values are given per NEURON segment (compartment):
the compartment centred at x takes the value of the NeuroML segment under x, or, for an
inhomogeneous density, the expression evaluated at the compartment centre's path length
(what NEURON itself would do with a ``for (x)`` loop).
"""

from __future__ import annotations

from ...errors import UnsupportedError
from ...ir.cell import Cell, Placement, Section, path_length, segment_length
from ...passes.compartments import (compartment_path_lengths, compartment_segments,
                                    section_points)


def _section_ra(cell: Cell, section: Section, ra: dict[int, float]) -> float:
    """``ra``: ``cell.property_values("resistivity")``."""
    values = {ra[s] for s in section.segments}
    if len(values) > 1:
        raise UnsupportedError(f"resistivity varying within section {section.name} of cell "
                               f"{cell.id} ({sorted(values)} ohm_cm): NEURON has one Ra "
                               "per section")
    return values.pop()


def _placement_values(cell: Cell, placement: Placement, section: Section,
                      under: list[int], per_cell: "_PerCell") -> dict[str, list[float]] | None:
    """Per-compartment values of a placement on one section, or None if it is not there."""
    present = per_cell.segments(placement)
    if not any(s in present for s in under):
        return None
    out = {}
    for name, param in placement.parameters.items():
        out[name] = [param.value if s in present else 0.0 for s in under]
    # channelDensityNonUniform*: the varying attribute (condDensity, permeability) is only
    # in ``inhomogeneous``, never in ``parameters``
    for name, inh in placement.inhomogeneous.items():
        at = per_cell.evaluator(inh)
        out[name] = [at(d) if s in present else 0.0 for s, d in
                     zip(under, compartment_path_lengths(cell, section, per_cell.starts()))]
    out["present"] = [1.0 if s in present else 0.0 for s in under]
    return out


def _species_values(cell: Cell, species, under: list[int]) -> dict[str, list[float]] | None:
    present = set(species.segments)
    if not any(s in present for s in under):
        return None
    out = {n: [p.value] * len(under) for n, p in species.parameters.items()}
    out["present"] = [1.0 if s in present else 0.0 for s in under]
    return out


class _PerCell:
    """What every section of a cell would otherwise recompute from the whole cell: on
    Hay's 4,000-segment L5PC (196 sections, 20 placements) the path lengths, the segment
    sets and the compiled non-uniform expressions took most of the conversion time."""

    def __init__(self, cell: Cell):
        self.cell = cell
        self._starts: dict[int, float] | None = None
        self._segments: dict[int, set[int]] = {}
        self._evaluators: dict[int, object] = {}

    def starts(self) -> dict[int, float]:
        """``path_length(cell, 0.0)``."""
        if self._starts is None:
            self._starts = path_length(self.cell, 0.0)
        return self._starts

    def segments(self, placement: Placement) -> set[int]:
        if id(placement) not in self._segments:
            self._segments[id(placement)] = set(placement.segments)
        return self._segments[id(placement)]

    def evaluator(self, inh):
        if id(inh) not in self._evaluators:
            self._evaluators[id(inh)] = inh.evaluator()
        return self._evaluators[id(inh)]


def cell_layout(cell: Cell) -> dict:
    """The cell as plain data: sections (parents first) with points, nseg, Ra, per-
    compartment cm and initial v, every placement's and species' per-compartment values,
    and where each NeuroML segment lies (section, x at its proximal and distal ends)."""
    sections, placements, species = [], [], []
    per_cell = _PerCell(cell)
    ra, cm, init_v = (cell.property_values(q) for q in
                      ("resistivity", "specificCapacitance", "initMembPotential"))
    for sec in cell.sections:
        under = compartment_segments(cell, sec)
        sections.append({
            "name": sec.name, "parent": sec.parent, "parent_x": sec.parent_x,
            "nseg": sec.nseg, "points": section_points(cell, sec),
            "Ra": _section_ra(cell, sec, ra),
            "cm": [cm[s] for s in under], "init_v": [init_v[s] for s in under],
        })
        for pl in cell.placements:
            values = _placement_values(cell, pl, sec, under, per_cell)
            if values is not None:
                placements.append({"id": pl.id, "mechanism": pl.mechanism, "kind": pl.kind,
                                   "ion": pl.ion, "erev_mode": pl.erev_mode,
                                   "section": sec.name, "values": values})
        for sp in cell.species:
            values = _species_values(cell, sp, under)
            if values is not None:
                species.append({"id": sp.id, "mechanism": sp.concentration_model,
                                "ion": sp.ion, "section": sec.name, "values": values})
    return {"id": cell.id, "sections": sections, "placements": placements,
            "species": species, "segments": segment_locations(cell),
            "spike_thresh": cell.spike_thresh(cell.sections[0].segments[0])}


def segment_locations(cell: Cell) -> dict[str, list]:
    """NeuroML segment id -> [section, x of its proximal end, x of its distal end]."""
    out = {}
    for sec in cell.sections:
        lengths = [segment_length(cell.segments[s]) for s in sec.segments]
        total, start = sum(lengths), 0.0
        for sid, length in zip(sec.segments, lengths):
            out[str(sid)] = [sec.name, start / total, (start + length) / total]
            start += length
    return out
