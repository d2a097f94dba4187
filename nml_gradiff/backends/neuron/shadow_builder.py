"""Build the shadow cells of a plan's ``sensitivity`` section and read their sensitivities.

Needs nothing but NEURON, numpy and :mod:`.builder` (``convert`` copies it beside the
generated mods as ``nmlg_shadow_builder.py``).  A shadow is a copy of a primal cell's
sections (same points, nseg, cm, Ra) carrying, on each compartment, the companion of every
primal channel there, its POINTERs set to the primal compartment's ``v`` and gate states,
or, for the channels of sens_shared.py, to the ``sensjac_`` mod this module inserts on
the primal compartment; its own ``v`` starts at 0 and is ``dv/dtheta`` one step behind the
primal (docs/neuron-gradients.md).
"""

from __future__ import annotations

import functools

import numpy as np

try:
    from . import builder
except ImportError:         # a standalone copy written by convert
    import nmlg_builder as builder


class Shadows:
    """The shadow cells of one run; :meth:`finish` returns the sensitivities."""

    def __init__(self, h, plan, cells):
        sens = plan["sensitivity"]
        self.params = sens["params"]
        self.record = sens["record"]
        self.cells = []                      # (shadow spec, {section: Section})
        self.primal = {}                     # (population, index) -> primal sections
        for spec in sens["shadows"]:
            self.cells.append((spec, _shadow_cell(h, plan, cells, spec, sens)))
        for key in dict.fromkeys((s["population"], s["index"]) for s in sens["shadows"]):
            self.primal[key] = cells[key[0]][key[1]]["sections"]
            mine = {spec["param"]: (spec, sections) for spec, sections in self.cells
                    if (spec["population"], spec["index"]) == key}
            _jacobians(h, plan, self.primal[key], key[0], mine, sens)
        # a function of the sections, not a bound method: a handler holding its Shadows
        # would be a reference cycle through NEURON, which Python cannot collect, and the
        # shadows would outlive their run (session.py runs many plans in one process)
        self.handler = h.FInitializeHandler(0, functools.partial(_zero, self.cells))
        self.vectors = {key: [self._vector(h, where, k) for k in range(len(self.params))]
                        for key, where in self.record.items()}

    def _vector(self, h, where, k):
        ref = self.reference(where, k)
        return None if ref is None else h.Vector().record(ref)

    def reference(self, where, k):
        """The shadow of parameter k for the recorded (population, index) at (section, x),
        as a NEURON reference (``_ref_``); None when that cell has no shadow (its
        sensitivity is zero).  ``where``: an entry of the plan's ``sensitivity.record``."""
        for spec, sections in self.cells:
            if (spec["population"], spec["index"], spec["param"]) == \
                    (where["population"], where["index"], k):
                seg = sections[where["section"]](where["x"])
                ref = where["ref"]
                if ref[0] == "v":
                    return seg._ref_v
                if ref[0] == "jacobian":    # carried by the sensjac_ mod on the primal
                    pseg = self.primal[spec["population"], spec["index"]][where["section"]]
                    return getattr(pseg(where["x"]), f"_ref_S{k}_{ref[2]}_{ref[1]}")
                return getattr(seg, f"_ref_S_{ref[2]}_{ref[1]}")
        return None

    def finish(self, h, n):
        """One more step (the shadows lag one behind), then ``{key: [n, P]}``: sample j of a
        shadow's recording is S at step j-1."""
        h.fadvance()
        out = {}
        for key, vecs in self.vectors.items():
            cols = [np.array(v)[1:n + 1] if v is not None else np.zeros(n) for v in vecs]
            out[key] = np.stack(cols, axis=1) if cols else np.zeros((n, 0))
        return out


def _zero(cells):
    # every node, the zero-area ends included: S_v[0] = 0 exactly
    for _, sections in cells:
        for sec in sections.values():
            for seg in sec.allseg():
                seg.v = 0.0


def _shadow_cell(h, plan, cells, spec, sens):
    kind = plan["cell_types"][plan_component(plan, spec["population"])]
    primal = cells[spec["population"]][spec["index"]]["sections"]
    label = f"shadow{spec['param']}.{spec['population']}[{spec['index']}]"
    sections = {}
    for sec in kind["sections"]:
        s = builder._section(h, label, sec)
        if sec["parent"] is not None:
            s.connect(sections[sec["parent"]](sec["parent_x"]), 0)
        sections[sec["name"]] = s
    companions = sens["companions"]
    for placement in kind["placements"]:
        comp = companions[placement["neuron_name"]]
        # a companion reading shared Jacobians has no parameters: its sensjac_ has them
        _insert(sections[placement["section"]], placement, comp["name"],
                () if "jacobian" in comp else None, plan.get("defaults"))
    for placement in kind["placements"]:    # after all insertions: companions point to each other
        _wire(h, sections[placement["section"]], primal[placement["section"]],
              placement["neuron_name"], companions[placement["neuron_name"]], sens)
    shared = {c["name"] for c in companions.values() if "jacobian" in c}
    for w in spec["weights"]:
        if w["companion"] in shared:        # set on the primal's sensjac_ (_jacobians)
            continue
        for seg, value in zip(sections[w["section"]], w["values"]):
            setattr(seg, f"{w['wrt']}_{w['companion']}", value)
    return sections


def plan_component(plan, population):
    return next(p["component"] for p in plan["populations"] if p["id"] == population)


def _jacobians(h, plan, primal, population, shadows, sens):
    """The ``sensjac_`` mods (sens_shared.py) on one primal cell's compartments, beside the
    channels whose shadow companions they drive: their POINTERs to the channel, to each
    shadow (``shadows``: parameter index -> (spec, sections)), and their weights."""
    kind = plan["cell_types"][plan_component(plan, population)]
    for placement in kind["placements"]:
        comp = sens["companions"][placement["neuron_name"]]
        jac = comp.get("jacobian")
        if jac is None:
            continue
        name = placement["section"]
        sec = primal[name]
        _insert(sec, placement, jac["name"], jac["range"], plan.get("defaults"))
        shadow_segs = {p: list(sections[name]) for p, (_, sections) in shadows.items()}
        for i, seg in enumerate(sec):
            mech = getattr(seg, jac["name"])
            for pointer, target in jac["pointers"].items():
                if target[0] == "shadow":       # ["shadow", p, "v" or a companion RANGE]
                    sseg = shadow_segs[target[1]][i]
                    ref = sseg._ref_v if target[2] == "v" else \
                        getattr(sseg, f"_ref_{target[2]}_{comp['name']}")
                else:
                    ref = _target(seg, seg, placement["neuron_name"], target, sens)
                h.setpointer(ref, pointer, mech)
    jacobian_of = {c["name"]: c["jacobian"] for c in sens["companions"].values()
                   if "jacobian" in c}
    for p, (spec, _) in shadows.items():
        for w in spec["weights"]:
            jac = jacobian_of.get(w["companion"])
            if jac is None:
                continue
            weight = w["wrt"].replace("wrt_", f"wrt{p}_", 1)    # SharedEmitter.weight
            for seg, value in zip(primal[w["section"]], w["values"]):
                setattr(seg, f"{weight}_{jac['name']}", value)


def _insert(sec, placement, name, names=None, defaults=None):
    """The companion (or Jacobian mod) where the primal has ``placement``, with the same
    RANGE values (those in ``names`` only, if given), after the PARAMETER defaults nocmodl
    rounded (plan ``defaults``: builder.py, defaults.py)."""
    sec.insert(name)
    builder.set_defaults(sec, name, defaults or {})
    for param, values in placement["range"].items():
        if names is not None and param not in names:
            continue
        for seg, value in zip(sec, values):
            setattr(seg, f"{param}_{name}", value)


def _wire(h, sec, primal_sec, primal_name, comp, sens):
    """Set the companion's POINTERs on every compartment (see sens_emit.Companion)."""
    name = comp["name"]
    for seg, pseg in zip(sec, primal_sec):
        mech = getattr(seg, name)
        for pointer, target in comp["pointers"].items():
            h.setpointer(_target(seg, pseg, primal_name, target, sens), pointer, mech)


def _target(seg, pseg, primal_name, target, sens):
    kind = target[0]
    if kind == "v":
        return pseg._ref_v
    if kind == "range":
        return getattr(pseg, f"_ref_{target[1]}_{primal_name}")
    if kind == "jacobian":      # ["jacobian", sensjac mod, variable] on the primal
        return getattr(pseg, f"_ref_{target[2]}_{target[1]}")
    if kind == "ion":
        return getattr(pseg, f"_ref_{target[1]}")
    if kind == "pool":
        pool = sens["pools"][target[1]]
        if not hasattr(seg, pool):
            raise RuntimeError(f"{seg}: a channel reads {target[1]} where no pool carries it")
        return getattr(seg, f"_ref_{target[2]}_{pool}")
    if kind == "current":       # the j-th channel exporting the ion's current, if here
        exporters = sens["currents"][target[1]]
        present = [c for c in exporters if hasattr(seg, c)]
        if target[2] < len(present):
            return getattr(seg, f"_ref_Sic_{present[target[2]]}")
        return getattr(seg, f"_ref_zero_{sens['pools'][target[1]]}")
    raise ValueError(f"unknown POINTER target {target}")
