"""Build NEURON's online learner from a plan's ``learner`` section and wire it.

Needs nothing but NEURON and numpy (it runs in the runner's subprocess).  After the cells,
their inputs and the shadow cells (:mod:`.shadow_builder`) exist:

* the learner (``nmlg_learn``, learner_emit.py) is placed at the first tuned recording; its
  POINTERs ``y<q>`` go to the recorded quantities of the cell, ``sy<q>_<p>`` to their
  sensitivities on the shadow of parameter p (to its own ``zero`` where a cell has none);
* the targets are played into ``target<q>`` (Vector.play, interpolated: NEURON plays
  them at t before BEFORE STEP, so the learner sees the target of its step);
* ``nmlg_theta`` goes on every section of every cell and shadow; on each compartment its
  slot p points from the learner's ``theta<p>`` (cells) or ``lag<p>`` (shadows, one step
  behind) to the RANGE parameter that parameter p sets there: ``<range>_<mechanism>`` on
  the cell, ``<range>_<companion>`` on its shadows, where the shadow plan gives parameter
  p weight 1.  Companions with shared Jacobians (sens_shared.py) have no such parameter:
  their ``sensjac_`` reads the cell's own value in ``advance()`` (after the solve), when it
  is the value of the step the shadows differentiate next.
"""

from __future__ import annotations

from . import builder
from .runner import _reference


class Learner:
    def __init__(self, h, plan, cells, inputs, shadows):
        spec = plan["learner"]
        self.spec, self.P = spec, len(plan["sensitivity"]["params"])
        record = plan["record"]
        first = record[spec["keys"][0]]
        self.pp = getattr(h, spec["mechanism"])(builder.location(cells, first))
        for name, value in spec["settings"].items():
            setattr(self.pp, name, value)
        self._pointers(h, plan, cells, inputs, shadows)
        self.played = self._play(h, spec)
        self.copiers = _copiers(h, plan, cells, shadows, self.pp, spec["theta"])

    def _pointers(self, h, plan, cells, inputs, shadows):
        where = plan["sensitivity"]["record"]
        for q, key in enumerate(self.spec["keys"]):
            h.setpointer(_reference(h, cells, inputs, plan["record"][key]), f"y{q}", self.pp)
            for p in range(self.P):
                ref = shadows.reference(where[key], p)
                h.setpointer(self.pp._ref_zero if ref is None else ref, f"sy{q}_{p}",
                             self.pp)

    def _play(self, h, spec):
        """The target traces, linearly interpolated in t (continuous play)."""
        if not spec.get("targets"):
            return []
        tvec = h.Vector(spec["t"])
        played = [tvec]
        for q, values in enumerate(spec["targets"]):
            vec = h.Vector(values)
            vec.play(getattr(self.pp, f"_ref_target{q}"), tvec, 1)
            played.append(vec)
        return played


def _copiers(h, plan, cells, shadows, pp, mech):
    """``nmlg_theta`` on every compartment, its slots wired (see the module docstring)."""
    sens = plan["sensitivity"]
    primal_of = {c["name"]: primal for primal, c in sens["companions"].items()}
    P = len(sens["params"])
    shadow_cells = {}
    for spec, sections in shadows.cells:
        shadow_cells.setdefault((spec["population"], spec["index"]), []).append(sections)
    done = set()
    for spec in sens["shadows"]:                       # one per (cell, parameter)
        key = (spec["population"], spec["index"])
        primal = cells[key[0]][key[1]]["sections"]
        if key not in done:
            done.add(key)
            _insert(h, primal.values(), pp, "theta", mech, P)
            for sections in shadow_cells[key]:
                _insert(h, sections.values(), pp, "lag", mech, P)
        p, seen = spec["param"], set()
        for w in spec["weights"]:
            name = w["wrt"].removeprefix("wrt_")
            for i, present in enumerate(w["values"]):
                if present != 1.0:
                    continue
                if (w["section"], i) in seen:
                    raise RuntimeError(f"parameter {sens['params'][p]} is set twice on "
                                       f"compartment {i} of {w['section']}")
                seen.add((w["section"], i))
                value = getattr(pp, f"init{p}")
                primal_name = primal_of[w["companion"]]
                _target(h, primal, w["section"], i, f"{name}_{primal_name}", mech, p, value)
                if "jacobian" in sens["companions"][primal_name]:
                    continue        # its sensjac_ reads the cell's value (sens_shared.py)
                for sections in shadow_cells[key]:
                    _target(h, sections, w["section"], i, f"{name}_{w['companion']}", mech, p,
                            value)


def _insert(h, sections, pp, source, mech, P):
    for sec in sections:
        sec.insert(mech)
    for sec in sections:
        for seg in sec:
            copier = getattr(seg, mech)
            for p in range(P):
                h.setpointer(getattr(pp, f"_ref_{source}{p}"), f"src{p}", copier)
                h.setpointer(getattr(seg, f"_ref_unused_{mech}"), f"dst{p}", copier)


def _target(h, sections, section, i, variable, mech, p, value):
    """Slot p of compartment i sets ``variable``, which starts at the initial value (the
    copies run before the currents, INITIAL blocks already see it)."""
    seg = list(sections[section])[i]
    setattr(seg, variable, value)
    h.setpointer(getattr(seg, f"_ref_{variable}"), f"dst{p}", getattr(seg, mech))
