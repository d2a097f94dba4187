"""The mechanism: a set of ODEs living on one compartment or one point cell.

All numbers and expressions are in the internal unit system (NEURON's; see
:mod:`nml_gradiff.ir.units`).  Expressions are sympy expressions over the symbol names of the
mechanism (parameters, states, derived quantities) and the external quantities it reads
(:data:`EXTERNALS`).

Sign convention (stated once, here): a membrane current is positive when it flows *out* of the
cell (NEURON's convention), so for a compartment ``C dV/dt = -sum(currents) + axial + stimuli``.
Channel currents are densities in mA/cm2; point-process currents are in nA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

#: Quantities a mechanism can read from where it lives, with their internal units.
#: ``v`` membrane potential, ``temperature`` in degC, ``t`` simulation time,
#: ``<ion>i``/``<ion>o`` concentrations (e.g. ``cai``), ``e<ion>`` reversal potentials.
EXTERNALS = {"v": "mV", "temperature": "degC", "t": "ms"}


def symbol(name: str) -> sympy.Symbol:
    """The one way to make a symbol, so all stages agree on assumptions."""
    return sympy.Symbol(name, real=True)


@dataclass(frozen=True)
class Origin:
    """Where a parameter's value is written: the attribute of the element on ``line`` of
    ``file``.  ``tune`` writes tuned values back there."""

    file: str
    line: int
    attribute: str


@dataclass
class Parameter:
    """A number the model author chose; every parameter has a public path."""

    name: str              # symbol name inside the mechanism
    value: float           # in ``unit``
    unit: str              # internal unit symbol, e.g. "mV"; "" when dimensionless
    dimension: str         # LEMS dimension name, e.g. "voltage"
    path: str              # public parameter path, e.g. "naChan/m/forwardRate/midpoint"
    # None when the value is not an attribute of its own (a ComponentType default, a
    # constant inside an inhomogeneous expression).
    origin: Origin | None = None


@dataclass
class State:
    """A state variable: ``d name/dt = rhs`` (per ms), starting from ``init``.

    ``init`` None means "the steady state of its kinetic scheme at the initial conditions"
    (kinetic-scheme occupancies); ``rhs`` None means the state changes only at events.
    """

    name: str
    rhs: sympy.Expr | None
    init: sympy.Expr | None
    unit: str
    dimension: str
    #: A register (jLEMS's update order, :mod:`nml_gradiff.passes.jlems_order`): no rhs,
    #: and its value at step n+1 is this expression evaluated at step n, before the update.
    each_step: sympy.Expr | None = None


@dataclass
class Derived:
    """A named intermediate quantity, kept for readability and output."""

    name: str
    expr: sympy.Expr
    unit: str
    dimension: str


@dataclass
class Current:
    """A transmembrane current carried by ``ion`` ("non_specific" for none), outward positive."""

    ion: str
    expr: sympy.Expr


@dataclass
class Event:
    """``when condition becomes true: assign``; ``emits`` marks a spike (EventOut).

    An event arriving on an input port (LEMS OnEvent, e.g. a spike reaching a synapse) has
    ``port`` set and ``condition`` None.  Assignments are applied simultaneously (all
    right-hand sides use the values from before the event).
    """

    condition: sympy.Basic | None
    assign: dict[str, sympy.Expr] = field(default_factory=dict)
    emits: bool = False
    port: str | None = None
    scope: str = ""         # the LEMS component it belongs to (see :class:`Scope`)


@dataclass(frozen=True)
class Scope:
    """One component of the LEMS tree a mechanism was flattened from, named by the symbol
    prefix of its variables (``""`` for the root, ``channelDensitiesSoma_`` for a child).

    Kept for jLEMS's update order (:mod:`nml_gradiff.passes.jlems_order`), in which a
    component reads what it requires from its parent as the parent held it, and every
    ``requirements`` name is a copy taken once per step.
    """

    parent: str | None                  # prefix of the enclosing component; None: the root
    requirements: frozenset[str] = frozenset()   # names of its LEMS Requirements
    # its derived variables (local names) in the order jLEMS evaluates them each step: one
    # that reads a later one reads the value of the step before
    derived_order: tuple[str, ...] = ()


@dataclass
class Transition:
    """One edge of a kinetic scheme: ``source <-> target`` with forward/reverse rates (per ms)."""

    source: str
    target: str
    forward: sympy.Expr
    reverse: sympy.Expr


@dataclass
class KineticScheme:
    """Occupancies of ``states`` (which sum to one) change along ``transitions``.

    The same states also appear in :attr:`Mechanism.states` with their ODE right-hand sides,
    so a backend without a kinetic solver can integrate them as ODEs.
    """

    states: list[str]
    transitions: list[Transition]


@dataclass
class Mechanism:
    """One flattened LEMS component: channel, pool, point cell, synapse, input, ..."""

    name: str
    kind: str                       # "channel", "concentration", "cell", "input", "synapse", ...
    component_type: str             # the LEMS ComponentType it came from
    parameters: dict[str, Parameter] = field(default_factory=dict)
    states: dict[str, State] = field(default_factory=dict)
    derived: dict[str, Derived] = field(default_factory=dict)   # in evaluation order
    currents: list[Current] = field(default_factory=list)
    reads: dict[str, str] = field(default_factory=dict)         # external name -> unit
    events: list[Event] = field(default_factory=list)
    kinetic: list[KineticScheme] = field(default_factory=list)
    placement: dict[str, Parameter] = field(default_factory=dict)  # set where it is placed
    texts: dict[str, str] = field(default_factory=dict)            # LEMS Text values
    exposures: dict[str, str] = field(default_factory=dict)     # exposed name -> symbol name
    ion: str | None = None          # species of a channel or pool
    source: str | None = None       # file the definition came from
    # The LEMS component tree (prefix -> Scope) and the component that owns each state and
    # derived quantity (name -> prefix); empty for mechanisms not flattened from LEMS.
    scopes: dict[str, Scope] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)

    def symbols(self) -> dict[str, sympy.Symbol]:
        names = [*self.parameters, *self.placement, *self.states, *self.derived, *self.reads]
        return {n: symbol(n) for n in names}

    def parameter_by_path(self, path: str) -> Parameter:
        for p in self.parameters.values():
            if p.path == path:
                return p
        raise KeyError(path)
