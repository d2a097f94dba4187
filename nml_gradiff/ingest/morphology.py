"""``<morphology>`` -> segments, resolved segment groups and NEURON-style sections.

Rules (docs/cells.md has the long version):

* A missing proximal point is the point ``fractionAlong`` of the way along the parent, with the
  diameter interpolated the same way (libNeuroML's ``get_actual_proximal``; at the default
  fractionAlong 1 this is the parent's distal point, as the NeuroML spec says).
* Segment groups: ``member``, ``include`` (recursively; a cycle is an error), ``path`` (every
  segment on the tree path between ``from`` and ``to``, both included; no ``from`` = the root)
  and ``subTree`` (``from``: that segment and everything distal to it; ``to``: the root path
  down to that segment).  ``all`` is every segment unless the file defines it.
* Cable groups (neuroLexId sao864921383) become one section each, ``numberInternalDivisions``
  giving nseg.  Other segments are laid out in maximal unbranched runs (see
  :func:`build_sections`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import ModelError, UnsupportedError
from ..ir.cell import (InhomogeneousParameter, Point, Section, Segment, children,
                       segment_length, topological_order)
from .lems_types import elements, local

#: neuroLexId of "unbranched, non-overlapping cable": a group that is one NEURON section.
CABLE_GROUP = "sao864921383"
#: jNeuroML's tolerance for "attached at the distal end" (JSONCellSerializer: |f - 1| < 1e-4).
DISTAL_TOLERANCE = 1e-4
#: The only metric of inhomogeneousParameter we implement.
PATH_LENGTH = "Path Length from root"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Children of a segmentGroup that carry no segments.
_GROUP_METADATA = {"notes", "annotation", "property", "inhomogeneousParameter"}


@dataclass
class RawGroup:
    """A segmentGroup as written, before its includes are resolved."""

    id: str
    line: int | None
    neuro_lex_id: str | None
    members: list[tuple[int, int | None]] = field(default_factory=list)    # (segment, line)
    includes: list[tuple[str, int | None]] = field(default_factory=list)   # (group, line)
    paths: list[tuple[int | None, int | None, int | None]] = field(default_factory=list)
    subtrees: list[tuple[int | None, int | None, int | None]] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    inhomogeneous: list[InhomogeneousParameter] = field(default_factory=list)
    proximal: set[str] = field(default_factory=set)    # inhomogeneousParameters with <proximal>

    @property
    def is_cable(self) -> bool:
        return self.neuro_lex_id == CABLE_GROUP


@dataclass
class Morphology:
    segments: dict[int, Segment]
    groups: dict[str, list[int]]
    raw_groups: dict[str, RawGroup]
    segment_lines: dict[int, int | None]


class _Reader:
    """Reads one ``<morphology>`` element; errors carry the file and the element's line."""

    def __init__(self, file: str):
        self.file = file

    def error(self, el, message: str) -> ModelError:
        return ModelError(message, file=self.file, line=getattr(el, "sourceline", None),
                          element=local(el) if el is not None else None)

    def number(self, el, name: str, convert=float, default=None):
        text = el.get(name)
        if text is None:
            if default is None:
                raise self.error(el, f"missing attribute '{name}'")
            return default
        try:
            value = convert(text.strip())
        except ValueError:
            kind = "a non-negative integer" if convert is int else "a number"
            raise self.error(el, f"{name}='{text}' is not {kind}") from None
        if not math.isfinite(value) or (convert is int and value < 0):
            raise self.error(el, f"{name}='{text}' is out of range")
        return value

    def point(self, el) -> Point:
        p = Point(*(self.number(el, a) for a in ("x", "y", "z", "diameter")))
        if p.diameter < 0:
            raise self.error(el, f"negative diameter {p.diameter}")
        return p


# ------------------------------------------------------------------------------- segments

def read_morphology(morph, file: str) -> Morphology:
    reader = _Reader(file)
    raw_segments, lines, raw_groups = {}, {}, {}
    for child in elements(morph):
        tag = local(child)
        if tag == "segment":
            seg = _read_segment(reader, child)
            if seg["id"] in raw_segments:
                raise reader.error(child, f"duplicate segment id {seg['id']}")
            raw_segments[seg["id"]] = seg
            lines[seg["id"]] = child.sourceline
        elif tag == "segmentGroup":
            group = _read_group(reader, child)
            if group.id in raw_groups:
                raise reader.error(child, f"duplicate segmentGroup id '{group.id}'")
            raw_groups[group.id] = group
        elif tag not in ("notes", "annotation", "property"):
            raise UnsupportedError(f"<{tag}> in a morphology", file=file,
                                   line=child.sourceline, element=tag)
    if not raw_segments:
        raise reader.error(morph, "a morphology needs at least one segment")
    segments = _complete_segments(reader, morph, raw_segments, lines)
    groups = resolve_groups(reader, raw_groups, segments)
    return Morphology(segments, groups, raw_groups, lines)


def _read_segment(reader: _Reader, el) -> dict:
    seg = {"id": reader.number(el, "id", int), "name": el.get("name"), "parent": None,
           "fraction": 1.0, "proximal": None, "distal": None, "el": el}
    for child in elements(el):
        tag = local(child)
        if tag == "parent":
            seg["parent"] = reader.number(child, "segment", int)
            seg["fraction"] = reader.number(child, "fractionAlong", float, 1.0)
            if not 0.0 <= seg["fraction"] <= 1.0:
                raise reader.error(child, f"fractionAlong={seg['fraction']} is outside [0, 1]")
        elif tag in ("proximal", "distal"):
            seg[tag] = reader.point(child)
    if seg["distal"] is None:
        raise reader.error(el, f"segment {seg['id']} has no <distal> point")
    return seg


def _complete_segments(reader: _Reader, morph, raw: dict, lines: dict) -> dict[int, Segment]:
    """Check the tree (known parents, one root, no cycles) and fill in missing proximals."""
    for sid, seg in raw.items():
        if seg["parent"] is not None and seg["parent"] not in raw:
            raise reader.error(seg["el"], f"segment {sid} has unknown parent segment "
                                          f"{seg['parent']}")
    roots = [sid for sid, seg in raw.items() if seg["parent"] is None]
    if len(roots) != 1:
        raise reader.error(morph, f"a cell needs exactly one root segment (one without "
                                  f"<parent>), found {len(roots)}: {roots[:10]}")
    segments = {sid: Segment(sid, s["name"], s["parent"], s["fraction"], s["proximal"],
                             s["distal"]) for sid, s in raw.items()}
    probe = _Probe(segments)
    order = topological_order(probe)
    if len(order) != len(segments):
        stuck = sorted(set(segments) - set(order))[:10]
        raise reader.error(morph, f"segment parents form a cycle (segments {stuck} never "
                                  "reach the root)")
    for sid in order:
        _fill_proximal(reader, raw[sid]["el"], segments, sid)
    return segments


@dataclass
class _Probe:
    """Enough of a Cell for the tree helpers of ir.cell before the Cell exists."""

    segments: dict[int, Segment]


def _fill_proximal(reader: _Reader, el, segments: dict[int, Segment], sid: int) -> None:
    seg = segments[sid]
    if seg.proximal is None:
        if seg.parent is None:
            raise reader.error(el, f"root segment {sid} needs a <proximal> point")
        parent = segments[seg.parent]
        seg.proximal = parent.proximal.along(parent.distal, seg.fraction_along)
    if seg.is_sphere and seg.proximal.diameter != seg.distal.diameter:
        raise reader.error(el, f"segment {sid} has proximal and distal at the same place but "
                               "different diameters: neither a sphere nor a frustum")


# --------------------------------------------------------------------------------- groups

def _read_group(reader: _Reader, el) -> RawGroup:
    gid = el.get("id")
    if not gid:
        raise reader.error(el, "segmentGroup without an id")
    group = RawGroup(gid, el.sourceline, el.get("neuroLexId"))
    for child in elements(el):
        tag = local(child)
        if tag == "member":
            group.members.append((reader.number(child, "segment", int), child.sourceline))
        elif tag == "include":
            name = child.get("segmentGroup")
            if not name:
                raise reader.error(child, "<include> without a segmentGroup")
            group.includes.append((name, child.sourceline))
        elif tag in ("path", "subTree"):
            ends = {local(c): reader.number(c, "segment", int) for c in elements(child)
                    if local(c) in ("from", "to")}
            entry = (ends.get("from"), ends.get("to"), child.sourceline)
            (group.paths if tag == "path" else group.subtrees).append(entry)
        elif tag == "property":
            group.properties[child.get("tag", "")] = child.get("value", "")
        elif tag == "annotation":
            # jNeuroML also reads numberInternalDivisions from <annotation><property>.
            for prop in child.iter("{*}property", "property"):
                group.properties.setdefault(prop.get("tag", ""), prop.get("value", ""))
        elif tag == "inhomogeneousParameter":
            param = _read_inhomogeneous(reader, child, gid)
            group.inhomogeneous.append(param)
            if any(local(c) == "proximal" for c in elements(child)):
                group.proximal.add(param.id)
        elif tag not in _GROUP_METADATA:
            raise UnsupportedError(f"<{tag}> in segmentGroup '{gid}'", file=reader.file,
                                   line=child.sourceline, element=tag)
    return group


def _read_inhomogeneous(reader: _Reader, el, group: str) -> InhomogeneousParameter:
    pid, variable, metric = el.get("id"), el.get("variable"), el.get("metric")
    if not pid or not variable or not metric:
        raise reader.error(el, "inhomogeneousParameter needs id, variable and metric")
    if not _IDENTIFIER.fullmatch(variable):
        raise reader.error(el, f"variable='{variable}' is not a name")
    param = InhomogeneousParameter(pid, group, variable, metric)
    for child in elements(el):
        if local(child) == "proximal":
            param.translation_start = reader.number(child, "translationStart")
        elif local(child) == "distal":
            param.normalization_end = reader.number(child, "normalizationEnd")
    return param


def resolve_groups(reader: _Reader, raw: dict[str, RawGroup],
                   segments: dict[int, Segment]) -> dict[str, list[int]]:
    """Group id -> its segment ids (file order of segments, each once).  ``all`` is every
    segment unless the file defines it."""
    tree = _Tree(segments)
    resolved: dict[str, set[int]] = {}
    for gid in raw:
        _resolve(reader, raw, gid, tree, resolved, [])
    order = list(segments)
    # each group's segments sorted by file position: not a scan of every segment per group
    # (Hay's L5PC: 316 groups x 4,069 segments)
    position = {s: i for i, s in enumerate(order)}
    groups = {gid: sorted((s for s in resolved[gid] if s in position), key=position.__getitem__)
              for gid in raw}
    groups.setdefault("all", order)
    return groups


def _resolve(reader, raw, gid, tree, resolved, stack) -> set[int]:
    if gid in resolved:
        return resolved[gid]
    group = raw[gid]
    if gid in stack:
        cycle = " -> ".join(stack[stack.index(gid):] + [gid])
        raise ModelError(f"segmentGroup includes form a cycle: {cycle}", file=reader.file,
                         line=group.line, element="segmentGroup")
    stack.append(gid)
    where = {"file": reader.file, "element": "segmentGroup"}
    found: set[int] = set()
    for seg, line in group.members:
        tree.check(seg, f"segmentGroup '{gid}' has unknown member segment {seg}", line, where)
        found.add(seg)
    for name, line in group.includes:
        if name not in raw:
            if name != "all":
                raise ModelError(f"segmentGroup '{gid}' includes unknown segmentGroup "
                                 f"'{name}'", line=line, **where)
            found.update(tree.segments)
        else:
            found |= _resolve(reader, raw, name, tree, resolved, stack)
    for start, end, line in group.paths:
        found |= tree.path(start, end, gid, line, where)
    for start, end, line in group.subtrees:
        found |= tree.subtree(start, end, gid, line, where)
    stack.pop()
    resolved[gid] = found
    return found


class _Tree:
    """Ancestor and descendant queries on the segment tree."""

    def __init__(self, segments: dict[int, Segment]):
        self.segments = segments
        self.kids = children(_Probe(segments))

    def check(self, seg, message, line, where) -> None:
        if seg not in self.segments:
            raise ModelError(message, line=line, **where)

    def ancestors(self, seg: int) -> list[int]:
        """seg, its parent, ... up to the root."""
        chain = [seg]
        while self.segments[chain[-1]].parent is not None:
            chain.append(self.segments[chain[-1]].parent)
        return chain

    def path(self, start, end, gid, line, where) -> set[int]:
        if end is None:
            raise ModelError(f"<path> in segmentGroup '{gid}' needs a <to> segment",
                             line=line, **where)
        self.check(end, f"<path> in '{gid}' goes to unknown segment {end}", line, where)
        up_end = self.ancestors(end)
        if start is None:
            return set(up_end)
        self.check(start, f"<path> in '{gid}' starts at unknown segment {start}", line, where)
        up_start = self.ancestors(start)
        # The tree path goes up from each end to their lowest common ancestor.
        on_end = set(up_end)
        common = next(s for s in up_start if s in on_end)
        return set(up_start[:up_start.index(common) + 1]) | set(up_end[:up_end.index(common)])

    def subtree(self, start, end, gid, line, where) -> set[int]:
        if (start is None) == (end is None):
            raise ModelError(f"<subTree> in segmentGroup '{gid}' needs exactly one of <from> "
                             "and <to>", line=line, **where)
        if end is not None:
            self.check(end, f"<subTree> in '{gid}' goes to unknown segment {end}", line, where)
            return set(self.ancestors(end))
        self.check(start, f"<subTree> in '{gid}' starts at unknown segment {start}", line,
                   where)
        found, stack = set(), [start]
        while stack:
            s = stack.pop()
            found.add(s)
            stack.extend(self.kids[s])
        return found


# ------------------------------------------------------------------------------- sections

def build_sections(morph: Morphology, file: str) -> list[Section]:
    """Cable groups first become sections; every other segment joins a maximal unbranched
    run.  A run starts at the root, after a branch point, at a segment attached anywhere
    but the parent's distal end, below a cable-group section, and where the set of groups a
    segment belongs to changes (so a section never straddles two regions).  Its nseg is its
    number of segments."""
    segments = morph.segments
    owner: dict[int, str] = {}
    sections: dict[str, Section] = {}
    for group in morph.raw_groups.values():
        if group.is_cable:
            sec = _cable_section(group, morph, file, owner)
            sections[sec.name] = sec
    _default_runs(morph, owner, sections)
    _attach(sections, owner, segments)
    # Parents before children, in the order of their first segments in the tree.
    rank = {s: i for i, s in enumerate(topological_order(_Probe(segments)))}
    return sorted(sections.values(), key=lambda sec: rank[sec.segments[0]])


def _cable_section(group: RawGroup, morph: Morphology, file: str,
                   owner: dict[int, str]) -> Section:
    where = {"file": file, "line": group.line, "element": "segmentGroup"}
    members = set(morph.groups[group.id])
    if not members:
        raise ModelError(f"cable segmentGroup '{group.id}' has no segments", **where)
    chain = _chain(members, morph.segments, group.id, where)
    for s in chain:
        if s in owner:
            raise ModelError(f"segment {s} is in two cable segmentGroups: '{owner[s]}' and "
                             f"'{group.id}'", **where)
        owner[s] = group.id
    nseg = _nseg(group, where)
    return Section(group.id, chain, None, 0.0, nseg, cable_group=group.id)


def _chain(members: set[int], segments: dict[int, Segment], gid: str, where) -> list[int]:
    heads = [s for s in members if segments[s].parent not in members]
    if len(heads) != 1:
        raise ModelError(f"cable segmentGroup '{gid}' is not one unbranched cable: "
                         f"{len(heads)} segments have their parent outside it", **where)
    kids = {s: [] for s in members}
    for s in members:
        if segments[s].parent in members:
            kids[segments[s].parent].append(s)
    chain = [heads[0]]
    while kids[chain[-1]]:
        nxt = kids[chain[-1]]
        if len(nxt) > 1 or abs(segments[nxt[0]].fraction_along - 1) >= DISTAL_TOLERANCE:
            raise ModelError(f"cable segmentGroup '{gid}' is not one unbranched cable: "
                             f"segment {chain[-1]} has a child in it not attached at its "
                             "distal end", **where)
        chain.append(nxt[0])
    return chain


def _nseg(group: RawGroup, where) -> int:
    text = group.properties.get("numberInternalDivisions")
    if text is None:
        return 1
    try:
        nseg = int(text.strip())
    except ValueError:
        nseg = 0
    if nseg < 1:
        raise ModelError(f"numberInternalDivisions='{text}' in '{group.id}' is not a "
                         "positive integer", **where)
    return nseg


def _default_runs(morph: Morphology, owner: dict[int, str],
                  sections: dict[str, Section]) -> None:
    segments = morph.segments
    kids = children(_Probe(segments))
    regions = _regions(morph)
    for sid in topological_order(_Probe(segments)):
        if sid in owner:
            continue
        seg = segments[sid]
        parent = seg.parent
        continues = (parent is not None and parent in owner
                     and sections[owner[parent]].cable_group is None
                     and len(kids[parent]) == 1
                     and abs(seg.fraction_along - 1) < DISTAL_TOLERANCE
                     and regions[parent] == regions[sid])
        if continues:
            sec = sections[owner[parent]]
            sec.segments.append(sid)
            sec.nseg += 1
        else:
            sec = Section(_section_name(seg, sections), [sid], None, 0.0, 1)
            sections[sec.name] = sec
        owner[sid] = sec.name


def _regions(morph: Morphology) -> dict[int, frozenset]:
    """Segment -> the non-cable groups (other than 'all') it belongs to."""
    member: dict[int, set] = {s: set() for s in morph.segments}
    for gid, segs in morph.groups.items():
        raw = morph.raw_groups.get(gid)
        if gid == "all" or (raw is not None and raw.is_cable):
            continue
        for s in segs:
            member[s].add(gid)
    return {s: frozenset(g) for s, g in member.items()}


def _section_name(seg: Segment, sections: dict[str, Section]) -> str:
    named = (seg.name, f"{seg.name}_{seg.id}") if seg.name else ()
    for name in (*named, f"seg{seg.id}"):
        if name and _IDENTIFIER.fullmatch(name) and name not in sections:
            return name
    name = f"seg{seg.id}"
    while name in sections:
        name += "_"
    return name


def _attach(sections: dict[str, Section], owner: dict[int, str],
            segments: dict[int, Segment]) -> None:
    """Parent section and parent_x: where the first segment attaches, as an arc-length
    fraction of the parent section (jNeuroML: CellUtils.getFractionAlongSegGroupLength)."""
    for sec in sections.values():
        first = segments[sec.segments[0]]
        if first.parent is None:
            continue
        parent = sections[owner[first.parent]]
        lengths = [segment_length(segments[s]) for s in parent.segments]
        k = parent.segments.index(first.parent)
        total = sum(lengths)
        if total > 0:
            x = (sum(lengths[:k]) + first.fraction_along * lengths[k]) / total
        else:
            x = (k + first.fraction_along) / len(lengths)
        sec.parent, sec.parent_x = parent.name, min(1.0, max(0.0, x))
