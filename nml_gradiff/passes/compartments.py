"""IR Cell -> the compartments (nodes) NEURON makes of it, with NEURON's own geometry.

A backend that wants to step a cell exactly like NEURON needs NEURON's nodes, areas and axial
resistances, not an idealised cable.  This module computes them from the same 3-d points
the NEURON backend gives ``pt3dadd`` (:func:`section_points`), following NEURON's
``src/nrnoc/treeset.cpp`` line by line:

* **Nodes.**  A section with ``nseg`` segments has ``nseg`` nodes at the segment centres
  and one more at ``x = 1`` with no membrane (``nrn_area_ri``: "last segment has 0 length.
  area is 1e2 in dimensionless units"); a root section also has a root node at ``x = 0``
  (``sec->parentnode``).  A child section's first node hangs on its parent's node at
  ``parent_x``: the root node (or the parent's own parent node) at 0, the ``x = 1`` node at
  1, else the centre node of the segment holding ``parent_x`` (``node_exact``).
* **Area** of a centre node: the trapezoidal integral ``diam_from_list`` computes over the
  pt3d points of its segment (frusta split at the half-segment boundaries, diameters
  interpolated in arc length), in um2.  Zero-area nodes get NEURON's dimensionless 100.
* **Axial resistance.**  ``diam_from_list`` sums ``dx/(d1*d2)`` over each half segment; the
  resistance of a half is that sum times ``Ra/PI*0.04`` (MOhm).  A node's ``1/NODERINV`` is the
  right half of the previous segment of its section plus its own left half (only the left
  half for the first node, only the right half of the last segment for the ``x = 1`` node).
  NEURON's ``seg.ri()`` returns exactly this.  The geometric sums are kept apart from Ra
  (:attr:`Compartments.ri_left`, :attr:`ri_right`) so a backend can differentiate by Ra.
* **float32 points.**  NEURON stores pt3d coordinates and diameters as C ``float``
  (``struct Pt3d { float x, y, z, d; double arc; }``) and computes arc lengths from float
  differences, so we round the same way: without it areas differ from NEURON's by ~1e-8.

Per-node values (cm, initial v, where each placement and species is) are resolved here too,
as :class:`Parameter` objects rather than numbers, so a backend can keep them tunable.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import UnsupportedError
from ..ir.cell import DEFAULTS, Cell, Placement, Section, path_length, segment_length
from ..ir.mechanism import Parameter

__all__ = ["Compartments", "build_compartments", "section_points", "compartment_segments",
           "compartment_path_lengths", "section_ra", "group_parameters", "ZERO_AREA"]

#: NEURON's area of a node without membrane ("1e2 in dimensionless units").
ZERO_AREA = 100.0
#: NEURON's PI in treeset.cpp.
PI = 3.14159265358979323846


# ----------------------------------------------------------------------------- shared helpers
# (the NEURON backend's layout.py has the same three; both backends must agree on them)

def section_points(cell: Cell, section: Section) -> list[list[float]]:
    """3-d points ``[x, y, z, diameter]`` for pt3dadd; a spherical segment becomes a
    cylinder with L = diameter along z (the sphere's area, as jNeuroML exports it);
    consecutive duplicates are dropped."""
    pts: list[list[float]] = []
    for sid in section.segments:
        seg = cell.segments[sid]
        p, d = seg.proximal, seg.distal
        if seg.is_sphere:
            r = d.diameter / 2
            pair = [[d.x, d.y, d.z - r, d.diameter], [d.x, d.y, d.z + r, d.diameter]]
        else:
            pair = [[p.x, p.y, p.z, p.diameter], [d.x, d.y, d.z, d.diameter]]
        for point in pair:
            if not pts or pts[-1] != point:
                pts.append(point)
    return pts


def compartment_segments(cell: Cell, section: Section) -> list[int]:
    """The NeuroML segment under the centre of each of the section's nseg compartments."""
    lengths = [segment_length(cell.segments[s]) for s in section.segments]
    ends = list(itertools.accumulate(lengths))
    centres = [(j + 0.5) / section.nseg * ends[-1] for j in range(section.nseg)]
    return [section.segments[min(bisect.bisect_left(ends, c), len(ends) - 1)]
            for c in centres]


def compartment_path_lengths(cell: Cell, section: Section,
                             starts: dict[int, float] | None = None) -> list[float]:
    """Path length from the root (um) of each compartment centre of a section.  ``starts``:
    ``path_length(cell, 0.0)``, when the caller has it (it walks the whole cell: once per
    cell, not once per section, on a 4,000-segment cell)."""
    start = (path_length(cell, 0.0) if starts is None else starts)[section.segments[0]]
    total = sum(segment_length(cell.segments[s]) for s in section.segments)
    return [start + (j + 0.5) / section.nseg * total for j in range(section.nseg)]


def section_ra(cell: Cell, section: Section) -> Parameter | float:
    """The section's resistivity: the Parameter setting it, or NEURON's default (a float).
    NEURON has one Ra per section, so a section spanning two values is refused."""
    params = group_parameters(cell, "resistivity")
    found = {id(params[s]): params[s] for s in section.segments}
    if len(found) > 1:
        values = sorted(cell.ra(s) for s in section.segments)
        raise UnsupportedError(f"resistivity varying within section {section.name} of cell "
                               f"{cell.id} ({values} ohm_cm): NEURON has one Ra per section")
    return next(iter(found.values()))


def group_parameters(cell: Cell, quantity: str) -> dict[int, Parameter | float]:
    """Segment id -> the Parameter giving ``quantity`` there (the last group entry holding
    the segment wins, as NEURON's forsec order does), or the default value as a float."""
    out: dict[int, Parameter | float] = dict.fromkeys(cell.segments, DEFAULTS[quantity])
    for gv in cell.properties:
        if gv.quantity == quantity:
            out.update(dict.fromkeys(gv.segments, gv.parameter))
    return out


# ----------------------------------------------------------------------------- NEURON geometry

def _pt3d_arcs(points: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Arc lengths and diameters exactly as NEURON's nrn_pt3dmodified computes them."""
    xyzd = np.asarray(points, dtype=np.float32)
    arc = np.zeros(len(points))
    for i in range(1, len(points)):
        t = (xyzd[i, :3] - xyzd[i - 1, :3]).astype(np.float64)   # float - float, then double
        arc[i] = arc[i - 1] + math.sqrt(t[0] * t[0] + t[1] * t[1] + t[2] * t[2])
    return arc, np.abs(xyzd[:, 3].astype(np.float64))


def nrn_area_ri(points: list[list[float]], nseg: int) -> tuple[list[float], list[float],
                                                                list[float]]:
    """Per segment of a pt3d section: (area um2, left half sum, right half sum), NEURON's
    ``diam_from_list`` transcribed (same loop, same arithmetic order).  A half's resistance
    is ``sum * Ra / PI * 0.04`` MOhm."""
    arc, diam = _pt3d_arcs(points)
    npt = len(points)
    ds = arc[-1] / nseg
    j, x1, y1 = 0, arc[0], diam[0]
    areas, lefts, rights = [], [], []
    for inode in range(nseg):
        si = inode * ds
        area, halves = 0.0, []
        for _ in range(2):
            ri, sip = 0.0, si + ds / 2.0
            while True:
                jp = j + 1
                xj, xjp = arc[j], arc[jp]
                if xjp > sip or jp == npt - 1:
                    frac = 1.0 if abs(xjp - xj) < 1e-10 else (sip - xj) / (xjp - xj)
                    x2, y2, jnext = sip, (1.0 - frac) * diam[j] + frac * diam[jp], j
                else:
                    x2, y2, jnext = xjp, diam[jp], jp
                delta = x2 - x1
                if delta < 1e-15:
                    delta = 1e-15
                temp = y2 * y1 / delta
                ri += 1 / (temp if temp != 0 else 1e-15)
                half = 0.5 * (y2 - y1)
                area += (y2 + y1) * math.sqrt(delta * delta + half * half)
                x1, y1 = x2, y2
                if j == jnext:
                    break
                j = jnext
            halves.append(ri)
            si = sip
        areas.append(area * 0.5 * PI)
        lefts.append(halves[0])
        rights.append(halves[1])
    return areas, lefts, rights


def node_index(nseg: int, x: float) -> int:
    """NEURON's node_index: the segment holding x (0 < x < 1)."""
    return min(int(nseg * x), nseg - 1)


# ----------------------------------------------------------------------------- compartments

@dataclass
class Compartments:
    """The nodes of one cell in NEURON's sense, parents before children, root first.

    Arrays are per node.  ``parent`` is -1 for the root.  ``membrane`` is False for the
    zero-area nodes (root, and every section's ``x = 1`` node), whose ``area`` is NEURON's
    dimensionless 100.  A node's axial resistance to its parent is
    ``(ri_right_prev * Ra + ri_left * Ra)`` with both sums in NEURON's units (see the module
    docstring); ``ra`` says whose Ra (the section's).
    """

    cell: str
    parent: np.ndarray
    area: np.ndarray
    membrane: np.ndarray
    section: np.ndarray                 # index into sections (the root node: 0)
    ri_left: np.ndarray                 # this node's own left half sum (0 for x = 1 nodes)
    ri_prev: np.ndarray                 # right half sum of the previous segment (0 if none)
    segment: np.ndarray                 # NeuroML segment under a centre; -1 without membrane
    path_length: np.ndarray             # um from the root, at the node
    sections: list[Section]
    section_nodes: list[list[int]]      # per section: centre nodes then the x = 1 node
    section_parent_node: list[int]      # node each section's first node hangs on
    ra: list[Parameter | float]         # per section
    cm: list[Parameter | float | None]  # per node (None without membrane)
    init_v: list[Parameter | float]     # per node
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.parent)

    def node_at(self, section: int, x: float) -> int:
        """NEURON's node_exact: the node at position x of a section."""
        if x <= 0.0:
            return self.section_parent_node[section]
        nodes = self.section_nodes[section]
        if x >= 1.0:
            return nodes[-1]
        return nodes[node_index(len(nodes) - 1, x)]

    def segment_location(self, cell: Cell, segment_id: int, fraction: float) -> tuple[int, float]:
        """(section index, x) of a point ``fraction`` along a NeuroML segment, as jNeuroML
        maps it (arc-length fraction of the section, from segment lengths)."""
        for k, sec in enumerate(self.sections):
            if segment_id in sec.segments:
                lengths = [segment_length(cell.segments[s]) for s in sec.segments]
                i = sec.segments.index(segment_id)
                return k, (sum(lengths[:i]) + fraction * lengths[i]) / sum(lengths)
        raise KeyError(segment_id)

    def node_of_segment(self, cell: Cell, segment_id: int, fraction: float = 0.5) -> int:
        return self.node_at(*self.segment_location(cell, segment_id, fraction))


def build_compartments(cell: Cell) -> Compartments:
    """NEURON's nodes of ``cell``: geometry from pt3d, values per node (module docstring)."""
    index = {sec.name: k for k, sec in enumerate(cell.sections)}
    cm_of = group_parameters(cell, "specificCapacitance")
    v_of = group_parameters(cell, "initMembPotential")
    rows: list[dict] = []
    sec_nodes: list[list[int]] = []
    sec_parent: list[int] = []
    ras = [section_ra(cell, sec) for sec in cell.sections]
    first_segment = cell.sections[0].segments[0]
    starts, ends = path_length(cell, 0.0), path_length(cell, 1.0)   # once, not per section
    rows.append(dict(parent=-1, area=ZERO_AREA, membrane=False, section=0, ri_left=0.0,
                     ri_prev=0.0, segment=-1, path=0.0, cm=None, v=v_of[first_segment]))
    for k, sec in enumerate(cell.sections):
        if sec.parent is None:
            attach = 0
        else:
            pk = index[sec.parent]
            attach = _attachment(sec_nodes[pk], sec_parent[pk], sec.parent_x)
        sec_parent.append(attach)
        areas, lefts, rights = nrn_area_ri(section_points(cell, sec), sec.nseg)
        under = compartment_segments(cell, sec)
        paths = compartment_path_lengths(cell, sec, starts)
        nodes = []
        for jj in range(sec.nseg):
            nodes.append(len(rows))
            rows.append(dict(parent=attach if jj == 0 else nodes[-2], area=areas[jj],
                             membrane=True, section=k, ri_left=lefts[jj],
                             ri_prev=rights[jj - 1] if jj else 0.0, segment=under[jj],
                             path=paths[jj], cm=cm_of[under[jj]], v=v_of[under[jj]]))
        end = ends[sec.segments[-1]]
        nodes.append(len(rows))
        rows.append(dict(parent=nodes[-2], area=ZERO_AREA, membrane=False, section=k,
                         ri_left=0.0, ri_prev=rights[-1], segment=-1, path=end, cm=None,
                         v=v_of[sec.segments[-1]]))
        sec_nodes.append(nodes)
    col = lambda key, dtype=float: np.array([r[key] for r in rows], dtype=dtype)  # noqa: E731
    return Compartments(
        cell=cell.id, parent=col("parent", np.int64), area=col("area"),
        membrane=col("membrane", bool), section=col("section", np.int64),
        ri_left=col("ri_left"), ri_prev=col("ri_prev"), segment=col("segment", np.int64),
        path_length=col("path"), sections=list(cell.sections), section_nodes=sec_nodes,
        section_parent_node=sec_parent, ra=ras, cm=[r["cm"] for r in rows],
        init_v=[r["v"] for r in rows])


def _attachment(parent_nodes: list[int], parent_attach: int, x: float) -> int:
    """node_exact on the parent section: its own parent node at 0, its x = 1 node at 1."""
    if x <= 0.0:
        return parent_attach
    if x >= 1.0:
        return parent_nodes[-1]
    return parent_nodes[node_index(len(parent_nodes) - 1, x)]


def placement_nodes(comp: Compartments, placement: Placement) -> list[int]:
    """Membrane nodes whose centre segment carries the placement, in node order."""
    present = set(placement.segments)
    return [i for i in range(comp.n) if comp.membrane[i] and comp.segment[i] in present]


__all__ += ["placement_nodes", "nrn_area_ri", "node_index"]
