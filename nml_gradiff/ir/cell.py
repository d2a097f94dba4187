"""A morphological cell: segments, segment groups, sections and placed mechanisms.

Internal units throughout (see :mod:`nml_gradiff.ir.units`): lengths and diameters in um,
specific capacitance in uF/cm2, axial resistivity in ohm cm, potentials in mV, conductance
densities in S/cm2, permeabilities in cm/s, concentrations in mM.

One source of truth for numbers: every tunable number is a :class:`Parameter` listed in
:attr:`Cell.parameters`, and the placements, group values and species hold *the same objects*,
so changing ``Parameter.value`` (``--set PATH=VALUE``) changes what every stage reads.
``docs/cells.md`` lists the parameter paths; they are public API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy

from .mechanism import Parameter, symbol

#: NEURON's defaults, used for segments that no ``specificCapacitance`` / ``resistivity`` /
#: ``initMembPotential`` covers (jNeuroML's export leaves them at NEURON's values too), and
#: jNeuroML's spike threshold when a cell has no ``spikeThresh`` (NeuronWriter: threshold = 0).
DEFAULTS = {"specificCapacitance": 1.0, "resistivity": 35.4, "initMembPotential": -65.0,
            "spikeThresh": 0.0}

#: How the reversal potential of a placement is obtained.
EREV_MODES = ("fixed", "nernst", "ghk", "ghk2")


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    z: float
    diameter: float

    def distance(self, other: "Point") -> float:
        return math.dist((self.x, self.y, self.z), (other.x, other.y, other.z))

    def along(self, other: "Point", f: float) -> "Point":
        """The point (and diameter) a fraction ``f`` of the way from self to ``other``."""
        def mix(a, b):
            return a if f == 0 else b if f == 1 else (1 - f) * a + f * b
        return Point(mix(self.x, other.x), mix(self.y, other.y), mix(self.z, other.z),
                     mix(self.diameter, other.diameter))


@dataclass
class Segment:
    """One NeuroML segment.  ``proximal`` is always set: a missing one was filled in at
    ingest with the point ``fraction_along`` of the way along the parent."""

    id: int
    name: str | None
    parent: int | None
    fraction_along: float          # where on the parent it attaches, in [0, 1]
    proximal: Point
    distal: Point

    @property
    def is_sphere(self) -> bool:
        """Proximal and distal at the same place: NeuroML's spherical segment."""
        return self.proximal.distance(self.distal) == 0.0


def segment_length(seg: Segment) -> float:
    """Length in um.  A sphere is treated as NEURON treats it (and jNeuroML exports it): a
    cylinder with L = diameter, which has the sphere's area 4 pi r^2."""
    return seg.distal.diameter if seg.is_sphere else seg.proximal.distance(seg.distal)


def lateral_area(seg: Segment) -> float:
    """Membrane area in um2: frustum side (pi (r1 + r2) slant), or 4 pi r^2 for a sphere."""
    if seg.is_sphere:
        return math.pi * seg.distal.diameter ** 2
    r1, r2 = seg.proximal.diameter / 2, seg.distal.diameter / 2
    slant = math.hypot(segment_length(seg), r1 - r2)
    return math.pi * (r1 + r2) * slant


@dataclass
class Section:
    """An unbranched cable: ``segments`` proximal to distal, attached with its 0 end at
    ``parent_x`` (in [0, 1], arc-length fraction) of section ``parent``."""

    name: str
    segments: list[int]
    parent: str | None
    parent_x: float
    nseg: int
    cable_group: str | None = None   # the NeuroML cable group it came from, if any


@dataclass
class GroupValue:
    """``specificCapacitance``, ``resistivity``, ``initMembPotential`` or ``spikeThresh``
    on one segment group.  Later entries win where groups overlap (NEURON's forsec order)."""

    quantity: str
    group: str
    segments: list[int]
    parameter: Parameter


@dataclass
class InhomogeneousParameter:
    """A segmentGroup's ``<inhomogeneousParameter>``: ``variable`` is the path length from
    the root (um) minus ``translation_start``, the path length where it is 0 (ingest sets it
    from the group's start and ``<proximal translationStart>``: docs/cells.md)."""

    id: str
    group: str
    variable: str
    metric: str
    translation_start: float = 0.0
    normalization_end: float | None = None


@dataclass
class Inhomogeneous:
    """A value that varies along the cell: ``factor * expr`` in internal units.

    ``expr`` is the file's expression (SI, as NeuroML specifies) over the symbol
    ``variable`` and the symbols of ``constants``: every number written in the value text is
    a :class:`Parameter` (``constants`` maps symbol name -> Parameter), so it can be tuned.
    """

    parameter: InhomogeneousParameter
    text: str
    expr: sympy.Expr
    factor: float
    constants: dict[str, Parameter] = field(default_factory=dict)

    def numeric(self) -> sympy.Expr:
        """Internal-unit expression of the variable alone, with today's constant values."""
        subs = {symbol(n): sympy.Float(p.value) for n, p in self.constants.items()}
        return sympy.Float(self.factor) * self.expr.xreplace(subs)

    def evaluator(self):
        """A fast float function of the path length (um), for evaluating many segments."""
        p = self.parameter
        var = symbol(p.variable)
        shifted = self.numeric().xreplace({var: var - sympy.Float(p.translation_start)})
        # numpy prints sympy's Heaviside(x, 1/2) as numpy.heaviside(x, 0.5): same H(0).
        fn = sympy.lambdify(var, shifted, modules="numpy")
        return lambda distance: float(fn(float(distance)))

    def at(self, distance: float) -> float:
        """The value where the path length from the root is ``distance`` um."""
        return self.evaluator()(distance)


@dataclass
class Placement:
    """A mechanism instance on some segments: a channel density or channel population."""

    id: str
    mechanism: str                 # the ionChannel id
    kind: str                      # "channelDensity", "channelDensityNernst", ...
    ion: str                       # "non_specific" when the file names none
    segments: list[int]
    group: str | None
    erev_mode: str                 # one of EREV_MODES
    parameters: dict[str, Parameter] = field(default_factory=dict)  # condDensity, erev, ...
    inhomogeneous: dict[str, Inhomogeneous] = field(default_factory=dict)
    file: str | None = None
    line: int | None = None

    @property
    def values(self) -> dict[str, float | sympy.Expr]:
        """Attribute -> number (uniform) or sympy expression of the path-length variable
        (inhomogeneous), in internal units, from the current parameter values."""
        out: dict[str, float | sympy.Expr] = {n: p.value for n, p in self.parameters.items()}
        out.update({n: inh.numeric() for n, inh in self.inhomogeneous.items()})
        return out


@dataclass
class Species:
    """An ion species with a concentration model on some segments."""

    id: str
    ion: str
    concentration_model: str
    group: str
    segments: list[int]
    parameters: dict[str, Parameter] = field(default_factory=dict)
    file: str | None = None
    line: int | None = None

    @property
    def initial_concentration(self) -> float:
        return self.parameters["initialConcentration"].value

    @property
    def initial_ext_concentration(self) -> float:
        return self.parameters["initialExtConcentration"].value


@dataclass
class Cell:
    id: str
    component_type: str                          # "cell" or "cell2CaPools"
    segments: dict[int, Segment]                 # in file order
    groups: dict[str, list[int]]                 # resolved; always has "all"
    sections: list[Section]                      # parents before children
    placements: list[Placement] = field(default_factory=list)
    species: list[Species] = field(default_factory=list)
    properties: list[GroupValue] = field(default_factory=list)
    inhomogeneous_parameters: dict[str, InhomogeneousParameter] = field(default_factory=dict)
    parameters: list[Parameter] = field(default_factory=list)
    source: str | None = None

    # ---- per-segment look-ups -------------------------------------------------------

    def property_values(self, quantity: str) -> dict[int, float]:
        """Segment id -> ``quantity`` on it: the last entry whose group holds the segment
        wins (NEURON's forsec order), :data:`DEFAULTS` where none does."""
        values = dict.fromkeys(self.segments, DEFAULTS[quantity])
        for gv in self.properties:
            if gv.quantity == quantity:
                values.update(dict.fromkeys(gv.segments, gv.parameter.value))
        return values

    def property_of(self, quantity: str, seg_id: int) -> float:
        return self.property_values(quantity)[seg_id]

    def cm(self, seg_id: int) -> float:
        return self.property_of("specificCapacitance", seg_id)

    def ra(self, seg_id: int) -> float:
        return self.property_of("resistivity", seg_id)

    def init_v(self, seg_id: int) -> float:
        return self.property_of("initMembPotential", seg_id)

    def spike_thresh(self, seg_id: int) -> float:
        return self.property_of("spikeThresh", seg_id)

    def section_of(self) -> dict[int, str]:
        """Segment id -> name of the section holding it."""
        return {s: sec.name for sec in self.sections for s in sec.segments}

    def placement_values(self, placement: Placement, name: str) -> dict[int, float]:
        """Segment id -> value of ``name`` on it.  Inhomogeneous values are evaluated at the
        segment midpoint's path length (see docs/cells.md for why)."""
        if name not in placement.inhomogeneous:
            value = placement.parameters[name].value
            return {s: value for s in placement.segments}
        value_at = placement.inhomogeneous[name].evaluator()
        mids = path_length(self, 0.5)
        return {s: value_at(mids[s]) for s in placement.segments}


def children(cell: Cell) -> dict[int, list[int]]:
    """Segment id -> ids of its child segments, in file order."""
    kids: dict[int, list[int]] = {s: [] for s in cell.segments}
    for seg in cell.segments.values():
        if seg.parent is not None:
            kids[seg.parent].append(seg.id)
    return kids


def topological_order(cell: Cell) -> list[int]:
    """Segment ids, every parent before its children (file order among siblings)."""
    kids = children(cell)
    roots = [s.id for s in cell.segments.values() if s.parent is None]
    order, stack = [], list(reversed(roots))
    while stack:
        s = stack.pop()
        order.append(s)
        stack.extend(reversed(kids[s]))
    return order


def path_length(cell: Cell, at: float = 0.0) -> dict[int, float]:
    """Path length in um from the root's proximal end to the point a fraction ``at`` along
    each segment (0: proximal point, 1: distal point, 0.5: midpoint).

    A child attached at ``fractionAlong`` f of its parent starts at f of the parent's length:
    the path follows the cable, whatever the child's own proximal coordinates say.
    """
    start: dict[int, float] = {}
    for sid in topological_order(cell):
        seg = cell.segments[sid]
        if seg.parent is None:
            start[sid] = 0.0
        else:
            parent = cell.segments[seg.parent]
            start[sid] = start[parent.id] + seg.fraction_along * segment_length(parent)
    return {s: start[s] + at * segment_length(cell.segments[s]) for s in start}
