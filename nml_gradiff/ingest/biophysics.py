"""``<biophysicalProperties>`` -> placements, species and per-group values of a Cell.

Every density lands on its segments or raises a :class:`ModelError` naming it: nothing is
dropped.  Every number becomes a :class:`Parameter` with a public path (docs/cells.md).
Whether the ``ionChannel`` / ``concentrationModel`` ids exist is for the caller to check
(:func:`nml_gradiff.ingest.cell.check_references`): this module sees one cell only.
"""

from __future__ import annotations

import re

from ..errors import ModelError, UnsupportedError
from ..ir.cell import (GroupValue, Inhomogeneous, InhomogeneousParameter, Placement,
                       Species)
from ..ir.mechanism import Origin, Parameter
from ..ir.units import internal_unit, to_internal
from .expr import parse_expression
from .lems_types import elements, local
from .morphology import PATH_LENGTH

#: kind -> (erev mode, uniform attributes with their dimensions, the attribute a
#: variableParameter sets (with its dimension) or None for uniform kinds).
DENSITIES: dict[str, tuple[str, dict[str, str], tuple[str, str] | None]] = {
    "channelDensity": ("fixed", {"condDensity": "conductanceDensity", "erev": "voltage"},
                       None),
    "channelDensityVShift": ("fixed", {"condDensity": "conductanceDensity",
                                       "erev": "voltage", "vShift": "voltage"}, None),
    "channelDensityNernst": ("nernst", {"condDensity": "conductanceDensity"}, None),
    "channelDensityNernstCa2": ("nernst", {"condDensity": "conductanceDensity"}, None),
    "channelDensityGHK": ("ghk", {"permeability": "permeability"}, None),
    "channelDensityGHK2": ("ghk2", {"condDensity": "conductanceDensity"}, None),
    "channelDensityNonUniform": ("fixed", {"erev": "voltage"},
                                 ("condDensity", "conductanceDensity")),
    "channelDensityNonUniformNernst": ("nernst", {}, ("condDensity", "conductanceDensity")),
    "channelDensityNonUniformGHK": ("ghk", {}, ("permeability", "permeability")),
    "channelPopulation": ("fixed", {"number": "none", "erev": "voltage"}, None),
}

#: Per-group values: element -> dimension.
GROUP_VALUES = {"specificCapacitance": "specificCapacitance", "initMembPotential": "voltage",
                "spikeThresh": "voltage", "resistivity": "resistivity"}

_IGNORED = {"notes", "annotation", "property"}

# A number literal as the LEMS expression grammar writes it, tried longest first; "2." only
# when no letter follows, so that "2.gt.1" keeps its ".gt." operator.
_TOKEN = re.compile(r"""
    (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>\d+\.?\d*[eE][+-]?\d+ | \.\d+[eE][+-]?\d+ | \d+\.\d+ | \.\d+
           | \d+\.(?![A-Za-z]) | \d+)
  | (?P<other>\.[A-Za-z]+\. | \s+ | .)
""", re.VERBOSE)


class CellContext:
    """What reading one cell's biophysics needs, and the parameters it has made so far."""

    def __init__(self, cell_id: str, file: str, units, groups: dict[str, list[int]],
                 segment_ids, inhomogeneous: dict[str, InhomogeneousParameter]):
        self.cell_id, self.file, self.units = cell_id, file, units
        self.groups, self.segment_ids = groups, set(segment_ids)
        self.inhomogeneous = inhomogeneous
        self.parameters: list[Parameter] = []
        self._paths: dict[str, int | None] = {}

    def error(self, el, message: str) -> ModelError:
        return ModelError(message, file=self.file, line=el.sourceline, element=local(el))

    def unsupported(self, el, what: str) -> UnsupportedError:
        return UnsupportedError(what, file=self.file, line=el.sourceline, element=local(el))

    def describe(self, el) -> str:
        return f"{local(el)} '{el.get('id')}'" if el.get("id") else local(el)

    def required(self, el, attr: str) -> str:
        text = el.get(attr)
        if text is None or not text.strip():
            raise self.error(el, f"{self.describe(el)} has no {attr}")
        return text.strip()

    def group(self, el, name: str | None, default: str = "all") -> tuple[str, list[int]]:
        """The segment group ``name`` (or ``default``) and its segments."""
        name = name or default
        if name not in self.groups:
            raise self.error(el, f"{self.describe(el)} is placed on unknown segmentGroup "
                                 f"'{name}'")
        return name, self.groups[name]

    def where(self, el) -> tuple[str | None, list[int]]:
        """Placement target: a single ``segment`` or a ``segmentGroup`` (default all)."""
        seg = el.get("segment")
        if seg is None:
            return self.group(el, el.get("segmentGroup"))
        if el.get("segmentGroup") not in (None, "all"):
            raise self.error(el, f"{self.describe(el)} has both segment and segmentGroup")
        try:
            sid = int(seg)
        except ValueError:
            raise self.error(el, f"segment='{seg}' is not a segment id") from None
        if sid not in self.segment_ids:
            raise self.error(el, f"{self.describe(el)} is placed on unknown segment {sid}")
        return None, [sid]

    def quantity(self, el, attr: str, dimension: str) -> float:
        """Attribute ``attr`` of ``el`` in internal units (required)."""
        text = self.required(el, attr)
        q = self.units.parse_quantity(text, dimension, file=self.file, line=el.sourceline,
                                      element=local(el))
        return q.internal       # from the decimal text where it can be: no double rounding

    def parameter(self, el, path: str, name: str, value: float, dimension: str,
                  attribute: str | None = None) -> Parameter:
        """A new Parameter at ``CELL/path``, read from ``attribute`` of ``el`` (None: not an
        attribute of its own); a path used twice is an error."""
        full = f"{self.cell_id}/{path}"
        if full in self._paths:
            first = self._paths[full]
            raise self.error(el, f"parameter path '{full}' is defined twice (first at line "
                                 f"{first}): ids of densities, populations and species, and "
                                 "(quantity, segmentGroup) pairs must be unique in a cell")
        self._paths[full] = el.sourceline
        dim = self.units.dimension(dimension)
        origin = Origin(self.file, el.sourceline, attribute) if attribute else None
        param = Parameter(name, value, internal_unit(dim).symbol, dimension, full, origin)
        self.parameters.append(param)
        return param


# ------------------------------------------------------------------------------ top level

def read_biophysics(ctx: CellContext, bio) -> tuple[list[Placement], list[Species],
                                                     list[GroupValue]]:
    """Read ``biophysicalProperties`` (or ``...2CaPools``) of one cell."""
    placements, species, values = [], [], []
    for part in elements(bio):
        tag = local(part)
        if tag in ("membraneProperties", "membraneProperties2CaPools"):
            _membrane(ctx, part, placements, values)
        elif tag in ("intracellularProperties", "intracellularProperties2CaPools"):
            _intracellular(ctx, part, species, values)
        elif tag == "extracellularProperties":
            if any(local(c) not in _IGNORED for c in elements(part)):
                raise ctx.unsupported(part, "species in <extracellularProperties>")
        elif tag not in _IGNORED:
            raise ctx.unsupported(part, f"<{tag}> in <{local(bio)}>")
    return placements, species, values


def _membrane(ctx: CellContext, part, placements: list, values: list) -> None:
    for el in elements(part):
        tag = local(el)
        if tag in DENSITIES:
            placements.append(_placement(ctx, el))
        elif tag in GROUP_VALUES:
            values.append(_group_value(ctx, el))
        elif tag not in _IGNORED:
            raise ctx.unsupported(el, f"<{tag}> in <{local(part)}>")


def _intracellular(ctx: CellContext, part, species: list, values: list) -> None:
    for el in elements(part):
        tag = local(el)
        if tag == "species":
            species.append(_species(ctx, el))
        elif tag == "resistivity":
            values.append(_group_value(ctx, el))
        elif tag not in _IGNORED:
            raise ctx.unsupported(el, f"<{tag}> in <{local(part)}>")


def _group_value(ctx: CellContext, el) -> GroupValue:
    quantity = local(el)
    group, segments = ctx.group(el, el.get("segmentGroup"))
    value = ctx.quantity(el, "value", GROUP_VALUES[quantity])
    param = ctx.parameter(el, f"{quantity}/{group}", quantity, value, GROUP_VALUES[quantity],
                          "value")
    return GroupValue(quantity, group, list(segments), param)


def _species(ctx: CellContext, el) -> Species:
    sid = ctx.required(el, "id")
    group, segments = ctx.group(el, el.get("segmentGroup"))
    sp = Species(sid, el.get("ion") or sid, ctx.required(el, "concentrationModel"), group,
                 list(segments), file=ctx.file, line=el.sourceline)
    for attr in ("initialConcentration", "initialExtConcentration"):
        value = ctx.quantity(el, attr, "concentration")
        # Species ids repeat across groups (one "ca" per region with its own pool, as in
        # Hay et al.'s L5PC), so the group is part of the path.
        sp.parameters[attr] = ctx.parameter(el, f"{sid}/{group}/{attr}", attr, value,
                                            "concentration", attr)
    return sp


# ----------------------------------------------------------------------------- placements

def _placement(ctx: CellContext, el) -> Placement:
    kind = local(el)
    mode, attributes, variable = DENSITIES[kind]
    pid = ctx.required(el, "id")
    ion = el.get("ion") or "non_specific"
    if mode != "fixed" and ion == "non_specific":
        raise ctx.error(el, f"{ctx.describe(el)} needs an ion for its {mode} reversal "
                            "potential")
    vps = [c for c in elements(el) if local(c) == "variableParameter"]
    if variable is None:
        if vps:
            raise ctx.unsupported(el, f"<variableParameter> in <{kind}> (only the "
                                      "channelDensityNonUniform* elements vary)")
        group, segments = ctx.where(el)
    else:
        group, segments = ctx.group(el, _variable_group(ctx, el, vps, variable[0]))
    placement = Placement(pid, ctx.required(el, "ionChannel"), kind, ion, list(segments),
                          group, mode, file=ctx.file, line=el.sourceline)
    for attr, dim in attributes.items():
        value = ctx.quantity(el, attr, dim)
        placement.parameters[attr] = ctx.parameter(el, f"{pid}/{attr}", attr, value, dim, attr)
    if variable is not None:
        placement.inhomogeneous[variable[0]] = _inhomogeneous(ctx, el, pid, vps[0], *variable)
    return placement


def _variable_group(ctx: CellContext, el, vps: list, attr: str) -> str:
    if len(vps) != 1 or vps[0].get("parameter") != attr:
        found = [vp.get("parameter") for vp in vps]
        raise ctx.unsupported(el, f"{ctx.describe(el)} with variableParameters {found}: "
                                  f"exactly one, for '{attr}', is supported")
    group = ctx.required(vps[0], "segmentGroup")
    if el.get("segmentGroup") not in (None, group):
        raise ctx.error(el, f"{ctx.describe(el)} has segmentGroup '{el.get('segmentGroup')}' "
                            f"but its variableParameter is on '{group}'")
    return group


def _inhomogeneous(ctx: CellContext, el, pid: str, vp, attr: str,
                   dimension: str) -> Inhomogeneous:
    values = [c for c in elements(vp) if local(c) == "inhomogeneousValue"]
    if len(values) != 1:
        raise ctx.error(vp, f"variableParameter of {ctx.describe(el)} needs one "
                            "<inhomogeneousValue>")
    iv = values[0]
    param = _inhomogeneous_parameter(ctx, iv, ctx.required(iv, "inhomogeneousParameter"))
    text = ctx.required(iv, "value")
    expr, constants = _parse_with_constants(ctx, iv, text)
    unknown = {s.name for s in expr.free_symbols} - {param.variable, *constants}
    if unknown:
        raise ctx.error(iv, f"value '{text}' of {ctx.describe(el)} uses {sorted(unknown)}; "
                            f"only '{param.variable}' (inhomogeneousParameter '{param.id}') "
                            "is defined there")
    params = {name: ctx.parameter(iv, f"{pid}/{attr}/{label}", name, value, "none")
              for name, (label, value) in constants.items()}
    # The value is in SI (NeuroML spec); factor converts it to the internal unit.
    factor = to_internal(1.0, ctx.units.dimension(dimension))
    return Inhomogeneous(param, text, expr, factor, params)


def _inhomogeneous_parameter(ctx: CellContext, iv, pid: str) -> InhomogeneousParameter:
    param = ctx.inhomogeneous.get(pid)
    if param is None:
        raise ctx.error(iv, f"unknown inhomogeneousParameter '{pid}'")
    if param.metric != PATH_LENGTH:
        raise ctx.unsupported(iv, f"inhomogeneousParameter '{pid}' with metric "
                                  f"'{param.metric}' (only '{PATH_LENGTH}')")
    if param.normalization_end is not None:
        raise ctx.unsupported(iv, f"inhomogeneousParameter '{pid}' with <distal "
                                  "normalizationEnd>: no simulator defines what it does")
    return param


def _parse_with_constants(ctx: CellContext, el, text: str):
    """Parse ``text`` with every number literal replaced by a symbol, so each one becomes
    a tunable parameter: returns (expr, {symbol name: (path label, value)}).  Labels are
    c0, c1, ... in the order the numbers appear in the text."""
    where = {"file": ctx.file, "line": el.sourceline, "element": local(el)}
    parse_expression(text, **where)   # syntax errors point at the text as written
    tokens = list(_TOKEN.finditer(text))
    names = {m.group() for m in tokens if m.lastgroup == "name"}
    pieces, constants = [], {}
    for m in tokens:
        if m.lastgroup != "num":
            pieces.append(m.group())
            continue
        label = f"c{len(constants)}"
        name = label
        while name in names:
            name += "_"
        constants[name] = (label, float(m.group()))
        pieces.append(f" {name} ")
    return parse_expression("".join(pieces), **where), constants

