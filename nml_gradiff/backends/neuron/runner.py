"""Run one simulation plan in NEURON: ``python -m nml_gradiff.backends.neuron.runner
PLAN.json LIBRARY OUT.npz``.

A subprocess of its own because NEURON cannot load a second mechanism library into a
process; the parent (:mod:`.run`) reads ``OUT.npz``: ``t`` (ms), ``r<k>`` for the k-th
recording of the plan (internal units), ``s<k>`` for the k-th spike source (ms).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

try:
    from . import builder
    from . import shadow_builder
except ImportError:         # a standalone copy written by convert
    import nmlg_builder as builder
    import nmlg_shadow_builder as shadow_builder


def _reference(h, cells, inputs, rec):
    what = rec["what"]
    if what == "input":
        return getattr(inputs[rec["index"]], f"_ref_{rec['name']}")
    seg = builder.location(cells, rec)
    if what == "v":
        return seg._ref_v
    if what == "cai":
        return seg._ref_cai
    if what == "range":
        return getattr(seg, f"_ref_{rec['name']}")
    if what == "ion_current":           # i<ion>, mA/cm2 outward (scaled in run())
        return getattr(seg, f"_ref_i{rec['ion']}")
    if what in ("gdensity", "idensity"):
        return getattr(seg, f"_ref_fopen_{rec['mechanism']}")
    if what == "point":
        return getattr(cells[rec["population"]][rec["index"]]["point"], f"_ref_{rec['name']}")
    raise ValueError(f"unknown recording {what}")


def _spike_counter(h, cells, src):
    cell = cells[src["population"]][src["index"]]
    if src["point"]:
        nc = h.NetCon(cell["point"], None)
    else:
        seg = builder.location(cells, src)
        nc = h.NetCon(seg._ref_v, None, sec=seg.sec)
        nc.threshold = src["threshold"]
    times = h.Vector()
    nc.record(times)
    return nc, times


def _initial_v(h, cells, plan):
    """Each compartment starts at its own initMembPotential (before INITIAL blocks run)."""
    def set_v():
        for pop in plan["populations"]:
            kind = plan["cell_types"][pop["component"]]
            if kind["kind"] != "morphological":
                continue
            for cell in cells[pop["id"]]:
                for sec in kind["sections"]:
                    for seg, v in zip(cell["sections"][sec["name"]], sec["init_v"]):
                        seg.v = v
    return h.FInitializeHandler(0, set_v)


def setup(h, plan, library):
    """Load the library and make the plan's cells, inputs and shadow cells (sensitivities,
    docs/neuron-gradients.md; None without them), with NEURON's fixed step set as the plan
    says: (cells, inputs, shadows, the initial-v handler).  Keep all four alive for the run."""
    builder.load_library(library)
    h.load_file("stdrun.hoc")
    for ion, conc in plan["ions"].items():
        setattr(h, f"{ion}i0_{ion}_ion", conc["i"])
        setattr(h, f"{ion}o0_{ion}_ion", conc["o"])
    h.celsius = plan["celsius"]
    cells = builder.build(h, plan)
    inputs = builder.add_inputs(h, cells, plan["inputs"], plan.get("defaults"))
    shadows = shadow_builder.Shadows(h, plan, cells) if plan.get("sensitivity") else None
    handler = _initial_v(h, cells, plan)
    h.dt = plan["dt"]
    h.steps_per_ms = 1.0 / plan["dt"]
    h.tstop = plan["tstop"]
    h.secondorder = 0
    return cells, inputs, shadows, handler


def run(plan, library, out):
    from neuron import h
    cells, inputs, shadows, handler = setup(h, plan, library)
    t = h.Vector().record(h._ref_t)
    recs = [h.Vector().record(_reference(h, cells, inputs, r))
            for r in plan["record"].values()]
    voltages = [h.Vector().record(builder.location(cells, r)._ref_v)
                if r["what"] == "idensity" else None for r in plan["record"].values()]
    spikes = [_spike_counter(h, cells, s) for s in plan["spikes"].values()]
    h.finitialize()
    start, cpu = time.perf_counter(), time.process_time()
    h.continuerun(plan["tstop"])
    # read by bench/: the simulation alone, without building or saving; CPU time too, as
    # wall time on a loaded machine is mostly waiting for a core
    print(f"nml-gradiff: simulation took {time.perf_counter() - start:.6f} s, "
          f"CPU {time.process_time() - cpu:.6f} s", file=sys.stderr)
    arrays = {"t": np.array(t)}
    for k, (rec, vec, v) in enumerate(zip(plan["record"].values(), recs, voltages)):
        arrays[f"r{k}"] = np.array(vec)
        if rec["what"] == "idensity":     # LEMS: inward positive, gDensity * (erev - v)
            arrays[f"r{k}"] = rec["gmax"] * arrays[f"r{k}"] * (rec["erev"] - np.array(v))
        if rec["what"] == "ion_current":  # LEMS iCa: nA into the cell; mA/cm2 * um2 = 1e-2 nA
            area = builder.location(cells, rec).area()
            arrays[f"r{k}"] = -arrays[f"r{k}"] * area * 1e-2
    arrays.update({f"s{k}": np.array(times) for k, (_, times) in enumerate(spikes)})
    if shadows is not None:
        sens = shadows.finish(h, len(arrays["t"]))
        arrays.update({f"S{k}": sens[key] for k, key in enumerate(plan["record"])})
    np.savez(out, **arrays)
    del inputs, handler


if __name__ == "__main__":
    plan_file, library, out_file = sys.argv[1:4]
    with open(plan_file) as fh:
        run(json.load(fh), library, out_file)
