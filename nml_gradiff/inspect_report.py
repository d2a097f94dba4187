"""Text and JSON views of a loaded model, for ``nml-gradiff inspect``."""

from __future__ import annotations

import fnmatch

import sympy

from .ir.cell import Cell
from .ir.mechanism import Mechanism
from .ir.model import Model


def format_value(value: float) -> str:
    """Shortest text that reads back as the same float64 (``repr``), so nothing is lost."""
    return repr(float(value))


def params_lines(model: Model, patterns: list[str] | None = None) -> list[str]:
    lines = []
    for p in model.parameters():
        if patterns and not any(fnmatch.fnmatchcase(p.path, pat) for pat in patterns):
            continue
        lines.append(f"{p.path} {format_value(p.value)} {p.unit or '1'}")
    return lines


def _expr(e) -> str:
    return "(steady state)" if e is None else sympy.sstr(e)


def _mechanism_lines(m: Mechanism) -> list[str]:
    ion = f", ion {m.ion}" if m.ion else ""
    out = [f"{m.kind} {m.name} ({m.component_type}{ion})"]
    for s in m.states.values():
        rhs = "(events only)" if s.rhs is None else _expr(s.rhs)
        out.append(f"  state {s.name} [{s.unit or '1'}]: d/dt = {rhs}; "
                   f"initially {_expr(s.init)}")
    for p in m.parameters.values():
        out.append(f"  parameter {p.path} = {format_value(p.value)} {p.unit or '1'}")
    for c in m.currents:
        out.append(f"  current ({c.ion}) = {_expr(c.expr)}")
    if m.reads:
        out.append("  reads " + ", ".join(f"{n} [{u or '1'}]" for n, u in m.reads.items()))
    for e in m.events:
        when = f"event on port {e.port}" if e.port else f"when {_expr(e.condition)}"
        acts = "; ".join(f"{k} = {_expr(v)}" for k, v in e.assign.items())
        out.append(f"  {when}: {acts}{' (emits spike)' if e.emits else ''}")
    return out


def _cell_lines(c: Cell) -> list[str]:
    out = [f"cell {c.id} ({c.component_type}): {len(c.segments)} segments in "
           f"{len(c.sections)} sections, {len(c.groups)} segment groups"]
    for p in c.placements:
        where = f"on {p.group} ({len(p.segments)} segments)"
        out.append(f"  {p.kind} {p.id}: {p.mechanism} {where}, erev {p.erev_mode}")
    for s in c.species:
        out.append(f"  species {s.id} ({s.ion}): {s.concentration_model} on {s.group}")
    return out


def summary_lines(model: Model) -> list[str]:
    out = [model.source]
    for m in model.mechanisms.values():
        out += _mechanism_lines(m)
    for c in model.cells.values():
        out += _cell_lines(c)
    for s in model.skipped:
        out.append(f"other {s.id or '(no id)'} ({s.component_type})")
    for u in model.unsupported:
        out.append(f"unsupported {u.id or '(no id)'} ({u.component_type}): {u.reason}")
    return out


def _mech_json(m: Mechanism) -> dict:
    return {
        "name": m.name, "kind": m.kind, "component_type": m.component_type, "ion": m.ion,
        "source": m.source,
        "parameters": [{"name": p.name, "path": p.path, "value": p.value, "unit": p.unit,
                        "dimension": p.dimension} for p in m.parameters.values()],
        "states": [{"name": s.name, "unit": s.unit, "rhs": None if s.rhs is None
                    else _expr(s.rhs), "init": _expr(s.init)} for s in m.states.values()],
        "derived": [{"name": d.name, "unit": d.unit, "expr": _expr(d.expr)}
                    for d in m.derived.values()],
        "currents": [{"ion": c.ion, "expr": _expr(c.expr)} for c in m.currents],
        "reads": m.reads,
        "events": [{"condition": None if e.condition is None else _expr(e.condition),
                    "port": e.port, "emits": e.emits,
                    "assign": {k: _expr(v) for k, v in e.assign.items()}} for e in m.events],
    }


def _cell_json(c: Cell) -> dict:
    return {
        "id": c.id, "component_type": c.component_type, "source": c.source,
        "segments": len(c.segments), "groups": len(c.groups),
        "sections": [{"name": s.name, "parent": s.parent, "parent_x": s.parent_x,
                      "nseg": s.nseg, "segments": s.segments} for s in c.sections],
        "placements": [{"id": p.id, "kind": p.kind, "mechanism": p.mechanism, "ion": p.ion,
                        "group": p.group, "segments": len(p.segments),
                        "erev_mode": p.erev_mode} for p in c.placements],
        "species": [{"id": s.id, "ion": s.ion, "concentration_model":
                     s.concentration_model, "group": s.group} for s in c.species],
    }


def model_to_json(model: Model) -> dict:
    return {
        "source": model.source,
        "mechanisms": [_mech_json(m) for m in model.mechanisms.values()],
        "cells": [_cell_json(c) for c in model.cells.values()],
        "other": [vars(s) for s in model.skipped],
        "unsupported": [vars(u) for u in model.unsupported],
    }
