"""Build cells and inputs in NEURON from plain data (the JSON ``plan`` of :mod:`.run`).

This module needs nothing but NEURON and the standard library: ``convert`` copies it next
to the generated mods, so a converted model can be built without nml-gradiff installed::

    from neuron import h
    import nmlg_builder, json
    nmlg_builder.load_library("x86_64/.libs/libnrnmech.so")
    cells = nmlg_builder.build(h, json.load(open("model.json")))

The plan lists, per cell type, sections (3-d points, nseg, Ra, per-compartment cm and initial
v, parent and attachment point) and mechanism placements (per-compartment RANGE values), and,
per population, how many cells to make; then inputs and what to record.
"""

from __future__ import annotations

import glob
import os
import platform


def load_library(path):
    """Load the mechanism library ``path`` unless this process has it already.

    NEURON loads ``./<arch>/libnrnmech.so`` by itself when it is imported in a folder that
    has one (``nrnivmodl``'s output, e.g. a converted model's folder); loading the same
    library a second time fails with "user defined name already exists".
    """
    from neuron import h
    if _already_loaded(path):
        return
    if not h.nrn_load_dll(str(path)):
        raise RuntimeError(f"NEURON could not load the mechanism library {path}")


def _already_loaded(path) -> bool:
    target = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as fh:      # Linux: every file mapped into the process
            return any(line.rstrip("\n").endswith(" " + target) for line in fh)
    except OSError:
        pass
    # elsewhere: the files NEURON's start-up loads from the working directory
    arch = platform.machine()
    return any(os.path.exists(c) and os.path.samefile(c, path)
               for c in glob.glob(os.path.join(arch, "libnrnmech.*"))
               + glob.glob(os.path.join(arch, ".libs", "libnrnmech.*")))


def _section(h, cell_name, sec):
    s = h.Section(name=f"{cell_name}.{sec['name']}")
    for x, y, z, d in sec["points"]:
        s.pt3dadd(x, y, z, d)
    s.nseg = sec["nseg"]
    s.Ra = sec["Ra"]
    for seg, cm in zip(s, sec["cm"]):
        seg.cm = cm
    return s


def _place(sections, placement, defaults):
    sec = sections[placement["section"]]
    name = placement["neuron_name"]
    sec.insert(name)
    set_defaults(sec, name, defaults)
    for param, values in placement["range"].items():
        for seg, value in zip(sec, values):
            setattr(seg, f"{param}_{name}", value)


def set_defaults(sec, name, defaults):
    """The density mechanism ``name``'s PARAMETERs that nocmodl rounded (plan ``defaults``,
    defaults.py), on every compartment of ``sec``."""
    for param, value in defaults.get(name, {}).items():
        for seg in sec:
            setattr(seg, f"{param}_{name}", value)


def _set_defaults(pp, name, defaults):
    """A point process's PARAMETERs that nocmodl rounded (plan ``defaults``, defaults.py)."""
    for param, value in defaults.get(name, {}).items():
        setattr(pp, param, value)


def build_cell(h, layout, label, defaults=None):
    """One morphological cell: ``{section name: Section}`` (parents created first)."""
    sections = {}
    for sec in layout["sections"]:
        s = _section(h, label, sec)
        if sec["parent"] is not None:
            s.connect(sections[sec["parent"]](sec["parent_x"]), 0)
        sections[sec["name"]] = s
    for placement in layout["placements"]:
        _place(sections, placement, defaults or {})
    for ion in layout.get("ions", []):
        for name, sec in sections.items():
            if name in ion["sections"]:
                setattr(sec, f"{ion['ion']}i0_{ion['ion']}_ion", ion["internal"])
                setattr(sec, f"{ion['ion']}o0_{ion['ion']}_ion", ion["external"])
    return sections


def build_point_cell(h, plan_cell, label, defaults=None):
    """A point cell: its POINT_PROCESS on a dummy section whose cm*area is the cell's C."""
    sec = h.Section(name=f"{label}.soma")
    sec.L = sec.diam = plan_cell["diameter"]
    sec.cm = plan_cell["cm"]
    pp = getattr(h, plan_cell["neuron_name"])(sec(0.5))
    _set_defaults(pp, plan_cell["neuron_name"], defaults or {})
    return {"soma": sec}, pp


def build(h, plan):
    """Every population's cells: ``{population: [cell]}``, a cell being
    ``{"sections": {...}, "point": point process or None}``."""
    cells, defaults = {}, plan.get("defaults", {})
    for pop in plan["populations"]:
        kind = plan["cell_types"][pop["component"]]
        made = []
        for i in range(pop["size"]):
            label = f"{pop['id']}[{i}]"
            if kind["kind"] == "point":
                sections, pp = build_point_cell(h, kind, label, defaults)
            else:
                sections, pp = build_cell(h, kind, label, defaults), None
            made.append({"sections": sections, "point": pp})
        cells[pop["id"]] = made
    return cells


def location(cells, where):
    """The NEURON segment for ``{"population", "index", "section", "x"}``."""
    cell = cells[where["population"]][where["index"]]
    return cell["sections"][where["section"]](where["x"])


def add_inputs(h, cells, inputs, defaults=None):
    """Point-process inputs (pulseGenerator, ...) with their RANGE parameters."""
    made = []
    for inp in inputs:
        pp = getattr(h, inp["neuron_name"])(location(cells, inp))
        _set_defaults(pp, inp["neuron_name"], defaults or {})
        for name, value in inp["range"].items():
            setattr(pp, name, value)
        made.append(pp)
    return made
