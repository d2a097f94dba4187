"""A LEMS simulation: which network to run, for how long, with which inputs and recordings.

Read from a LEMS ``<Simulation>`` and the ``<network>`` it targets (see
``docs/simulations.md``).  Internal units: times in ms, temperature in degC, positions in um.
Cells, inputs and mechanisms are referred to by their NeuroML ids; their definitions live in
the :class:`~nml_gradiff.ir.model.Model` loaded from the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: jNeuroML's defaults where an ``<input>`` leaves them out (NeuronWriter.parseSegmentId,
#: parseFractionAlong): segment 0, the middle of the segment; weight 1 unless ``inputW``.
DEFAULT_SEGMENT = 0
DEFAULT_FRACTION_ALONG = 0.5
DEFAULT_WEIGHT = 1.0

#: Formats of an ``<EventOutputFile>``: one line per spike, time then cell, or cell then time.
EVENT_FORMATS = ("TIME_ID", "ID_TIME")


@dataclass
class QuantityRef:
    """A LEMS quantity path such as ``pop[0]/v`` or ``pop/0/cell/3/biophys/.../m/q``.

    ``segment`` None means the path names no segment; jNeuroML then records segment 0
    (LEMSQuantityPath: ``segmentId = 0`` unless ``pop/i/cell/SEG/...``).  ``path`` is what
    lies between the cell (or segment) and the variable, e.g. ``["biophys",
    "membraneProperties", "naChans"]`` for ``.../naChans/gDensity``; an attachment such as
    ``synapses:AMPA:0`` is one element.  ``variable`` is None for an ``EventSelection``,
    which selects a whole cell.  ``text`` is the path as written.
    """

    population: str
    index: int
    segment: int | None
    path: list[str]
    variable: str | None
    text: str


@dataclass
class Instance:
    """One cell of a ``populationList``: its id (what paths index) and where it is, in um."""

    id: int
    position: tuple[float, float, float] | None = None


@dataclass
class Population:
    """``size`` cells of ``component`` (a cell or point-cell id).

    ``instances`` is empty for a plain ``<population size=...>``, whose cells are numbered
    0..size-1; otherwise it lists the ``<instance>`` elements and ``size`` is their count.
    """

    id: str
    component: str
    size: int
    instances: list[Instance] = field(default_factory=list)

    def has_index(self, index: int) -> bool:
        """Whether a path may use cell ``index`` (an instance id for a populationList)."""
        if self.instances:
            return any(i.id == index for i in self.instances)
        return 0 <= index < self.size


@dataclass
class InputPlacement:
    """One input mechanism (pulseGenerator, ...) placed on one cell of a population.

    ``id`` is ``LIST/INPUT`` for an ``<inputList>`` entry and ``explicitInput[k]`` for the
    k-th ``<explicitInput>`` of the network (brackets cannot occur in NeuroML ids, so the two
    never collide).
    """

    id: str
    input: str                      # mechanism id of the input component
    population: str
    cell_index: int
    segment_id: int = DEFAULT_SEGMENT
    fraction_along: float = DEFAULT_FRACTION_ALONG
    weight: float = DEFAULT_WEIGHT
    destination: str = "synapses"   # the cell's attachment slot, as written
    input_list: str | None = None   # the <inputList> it came from, if any


@dataclass
class OutputColumn:
    id: str
    quantity: QuantityRef


@dataclass
class OutputFile:
    """A table of recorded quantities; ``path`` is as written (relative to the LEMS file's
    folder in jNeuroML); the runner checks it stays inside its output folder."""

    id: str
    path: str
    columns: list[OutputColumn] = field(default_factory=list)


@dataclass
class EventSelection:
    id: str
    select: QuantityRef             # a cell: variable is None
    event_port: str


@dataclass
class EventOutputFile:
    id: str
    path: str
    format: str                     # one of EVENT_FORMATS
    selections: list[EventSelection] = field(default_factory=list)


@dataclass
class Simulation:
    id: str
    length_ms: float
    dt_ms: float
    target_network: str
    temperature_degC: float | None  # None: the network declares none
    populations: dict[str, Population] = field(default_factory=dict)
    inputs: list[InputPlacement] = field(default_factory=list)
    outputs: list[OutputFile] = field(default_factory=list)
    event_outputs: list[EventOutputFile] = field(default_factory=list)
    seed: int | None = None
    source_file: str | None = None
