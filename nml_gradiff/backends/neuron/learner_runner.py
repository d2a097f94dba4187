"""Run NEURON's online learner: ``python -m nml_gradiff.backends.neuron.learner_runner
PLAN.json LIBRARY OUT.npz``.

A subprocess, as :mod:`.runner` (one mechanism library per process).  The plan is a shadow
plan (shadow_plan.py) with a ``learner`` section (learner.py).  NEURON runs each epoch
without a Python call per step (``continuerun``); between epochs, one Python pass per
epoch replays the protocol: ``finitialize`` restarts the inputs and the played targets at
t = 0, after which every RANGE variable and membrane potential of the cells and shadows is
restored (the learner keeps its own state: its INITIAL sees ``carry``).  So the cells'
state, the sensitivities, the tuned values, the leaky gradient and Adam's moments carry
on, as in the JAX learner.

Progress: after each epoch, one line ``nml-gradiff-epoch: LOSS`` on stdout (the loss summed
over the epoch's update intervals), which the parent turns into a progress bar.

OUT.npz: per update interval ``theta`` [U, P], ``loss``, ``spikes``, ``rate`` [U]; the
loss over the run (``total``) and, for ``learn = 0``, the time-integrated gradient ``g``
[P] (one step more, as the shadows lag one step behind).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

#: The start of the line the runner prints as each epoch ends.
EPOCH_LINE = "nml-gradiff-epoch:"

from . import learner_builder, runner


def snapshot(h) -> list:
    """Every membrane potential and every RANGE variable of every density mechanism and
    ion (the cells and their shadows; point processes, i.e. inputs and the learner, are
    not in it)."""
    saved = []
    for sec in h.allsec():
        for seg in sec.allseg():
            saved.append((seg, "v", seg.v))
        for seg in sec:
            for mech in seg:
                for var in mech:
                    name = var.name()
                    saved.append((seg, name, getattr(seg, name)))
    return saved


def restore(saved: list) -> None:
    for seg, name, value in saved:
        setattr(seg, name, value)


def run(plan, library, out):
    from neuron import h
    cells, inputs, shadows, handler = runner.setup(h, plan, library)
    learner = learner_builder.Learner(h, plan, cells, inputs, shadows)
    pp, spec = learner.pp, plan["learner"]
    P, every = len(plan["sensitivity"]["params"]), int(spec["settings"]["every"])
    names = [f"theta{p}" for p in range(P)] + ["out_loss"]
    if spec["objective"] == "rate":
        names += ["out_spikes", "out_rate"]
    vectors = {n: h.Vector().record(getattr(pp, f"_ref_{n}")) for n in names}
    rows = {n: [] for n in names}
    start = time.perf_counter()
    for epoch in range(spec["epochs"]):
        if epoch:
            saved = snapshot(h)
            pp.carry = 1
            h.finitialize()
            restore(saved)
        else:
            h.finitialize()
        h.continuerun(plan["tstop"])
        # sample j is recorded after BEFORE STEP of step j: updates at j = M, 2M, ..., n
        for n, vec in vectors.items():
            rows[n].append(np.array(vec)[every::every])
        print(f"{EPOCH_LINE} {float(rows['out_loss'][-1].sum())!r}", flush=True)
        if not all(np.isfinite(getattr(pp, f"theta{p}")) for p in range(P)):
            break
    arrays = {"theta": np.stack([np.concatenate(rows[f"theta{p}"]) for p in range(P)],
                                axis=1),
              "loss": np.concatenate(rows["out_loss"]), "total": np.array(pp.total)}
    if spec["objective"] == "rate":
        arrays["spikes"] = np.concatenate(rows["out_spikes"])
        arrays["rate"] = np.concatenate(rows["out_rate"])
    if not spec["settings"]["learn"]:
        h.fadvance()            # the shadows' last step: e at the run's last step
        arrays["g"] = np.array([getattr(pp, f"g{p}") for p in range(P)])
    print(f"nml-gradiff: learner ran {spec['epochs']} epochs in "
          f"{time.perf_counter() - start:.3f} s", file=sys.stderr)
    np.savez(out, **arrays)
    del handler, learner, inputs


if __name__ == "__main__":
    plan_file, library, out_file = sys.argv[1:4]
    with open(plan_file) as fh:
        run(json.load(fh), library, out_file)
