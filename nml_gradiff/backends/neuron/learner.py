"""NEURON's online learner (issue 5, deliverable 3): the plan, the build and the run.

The same learner as the JAX backend's (backends/jax/learner.py, docs/tune.md "Online
mode"): a leaky gradient g' = e - leak g of the loss rate (squared error to played-in
targets, or to a target rate through the rate proxy), and an Adam step of the tuned values
every M steps, relative or absolute steps, clipping and bounds, with the same numbers.
It runs inside NEURON (learner_emit.py: the ``nmlg_learn`` and ``nmlg_theta``
mechanisms; learner_builder.py wires them; learner_runner.py runs the epochs in a
subprocess) with no Python call per time step.

One difference, from NEURON's shadow cells running one step behind the cell: the loss
gradient of step k is known only after step k+1's solve, when the cell's step k+1 has
already used the tuned values.  So an update at step k sees e up to step k-1
(``OnlineOptions.delay`` = 1; the JAX learner with ``delay=1`` computes the same
trajectory).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ...errors import ModelError, UnsupportedError
from ...ir.model import Model
from ..learning import OnlineOptions, OnlineRun, RateProxy
from .build import build
from .learner_emit import LEARNER, THETA, emit_learner, emit_theta
from .learner_runner import EPOCH_LINE
from .shadow_plan import resolve
from .tuned_plans import TunedPlans

#: Recorded quantities the learner can read with their sensitivities, and their units.
_UNITS = {"v": "mV", "cai": "mM", "range": ""}


class NeuronOnlineObjective:
    """``tune``'s objective for online learning and rate targets in NEURON: what
    runtime/tune_online.py asks of an objective (``units``, ``dt``, ``base``,
    ``simulate``, ``learner``) around the offline :class:`.objective.NeuronObjective`."""

    def __init__(self, objective):
        self.objective = objective
        self.model, self.sim, self.paths = objective.model, objective.sim, objective.paths
        self.columns, self.scales = objective.columns, objective.scales
        self.dt, self.base = float(self.sim.dt_ms), None
        record = objective.record
        self.units = {k: _UNITS.get(record[text]["what"], "?")
                      for k, text in self.columns.items()}

    def simulate(self, x: np.ndarray):
        return self.objective.simulate(x)

    def learner(self, options: OnlineOptions, *, target: dict | None = None,
                proxy: RateProxy | None = None, rate: float | None = None):
        return NeuronLearner(self, options, target=target, proxy=proxy, rate=rate)


class NeuronLearner:
    """The learner on one model: :meth:`run` (online) and :meth:`epoch_loss_and_grad`
    (one run without updates: the offline gradient), as the JAX learner's."""

    def __init__(self, objective: NeuronOnlineObjective, options: OnlineOptions, *,
                 target: dict | None = None, proxy: RateProxy | None = None,
                 rate: float | None = None):
        options = dataclasses.replace(options, delay=1)      # see the module docstring
        options.check()
        self.o, self.objective = options, objective
        self.sim, self.paths = objective.sim, list(objective.paths)
        # one emission for all epochs: an offline rate fit plans once per epoch
        self.plans = TunedPlans(objective.model, self.sim, self.paths)
        self.model = self.plans.model
        self.dt = objective.dt
        self.n = int(round(self.sim.length_ms / self.dt))
        if self.n % options.every:
            raise ModelError(f"--update-every {options.every} must divide the simulation's "
                             f"{self.n} steps")
        if proxy is not None:
            proxy.check()
        self.proxy, self.rate = proxy, rate
        keys = [proxy.key] if proxy is not None else list(target or {})
        self.keys = [objective.columns[k] for k in keys]
        self.targets = [np.asarray(target[k], float) for k in keys] if proxy is None else []
        for k, values in zip(keys, self.targets):
            if len(values) != self.n + 1:
                raise ModelError(f"the target of {k} has {len(values)} times; the run "
                                 f"records {self.n + 1}")
        _check_updatable(self.model, self.paths)

    # -------------------------------------------------------------- the plan
    def _settings(self, theta0: np.ndarray, learn: bool, leak: float) -> dict:
        o, dt = self.o, self.dt
        s = {"lr": o.lr, "decay": float(np.exp(-leak * dt / 1000.0)), "every": o.every,
             "clip": o.clip or 0.0, "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps,
             "learn": 1.0 if learn else 0.0}
        if self.proxy is not None:
            s.update(rtarget=float(self.rate), thresh=self.proxy.threshold_mv,
                     slope=self.proxy.slope_mv, a=float(1.0 - np.exp(-dt / self.proxy.tau_ms)),
                     gain=1000.0 / self.proxy.width_ms)
        scale = np.abs(theta0) if o.relative else np.ones_like(theta0)
        for p, x in enumerate(theta0):
            s.update({f"init{p}": float(x), f"scale{p}": float(scale[p])})
            for side, bounds in (("lo", o.lower), ("hi", o.upper)):
                bound = None if bounds is None else bounds[p]
                if bound is not None and math.isfinite(bound):
                    s.update({f"has{side}{p}": 1.0, f"{side}{p}": float(bound)})
        return s

    def _plan(self, theta0: np.ndarray, epochs: int, learn: bool, leak: float):
        plan = self.plans.plan(theta0)
        record = plan.data["record"]
        for key in self.keys:
            if record[key]["what"] not in _UNITS:
                raise UnsupportedError(f"online learning on the recorded quantity {key} in "
                                       "the NEURON backend (membrane potentials, gate states "
                                       "and pool concentrations only)")
        objective = "rate" if self.proxy is not None else "trace"
        for name in (LEARNER, THETA):
            if name in plan.mods:
                raise UnsupportedError(f"a model mechanism named {name}: the learner's name")
        name, text = emit_learner(objective, self.paths, self.keys)
        plan.mods[name] = text
        name, text = emit_theta(self.paths)
        plan.mods[name] = text
        plan.data["learner"] = {
            "mechanism": LEARNER, "theta": THETA, "objective": objective, "keys": self.keys,
            "epochs": epochs, "settings": self._settings(theta0, learn, leak),
            "t": [k * self.dt for k in range(self.n + 1)] + [(self.n + 1) * self.dt],
            "targets": [list(map(float, v)) + [float(v[-1])] for v in self.targets]}
        return plan

    def _run(self, plan, progress=None) -> dict:
        """Run the plan in a NEURON subprocess; ``progress(loss)`` is called as each epoch
        ends (the child prints one line per epoch), so a long run shows it is moving."""
        library = build(plan.mods)
        with tempfile.TemporaryDirectory(prefix="nml-gradiff-learner-") as tmp:
            plan_file, out_file = Path(tmp) / "plan.json", Path(tmp) / "out.npz"
            plan_file.write_text(json.dumps(plan.data))
            with open(Path(tmp) / "neuron.log", "w+") as log:
                proc = subprocess.Popen([sys.executable, "-m",
                                         "nml_gradiff.backends.neuron.learner_runner",
                                         str(plan_file), str(library), str(out_file)],
                                        stdout=subprocess.PIPE, stderr=log, text=True)
                output = _follow_epochs(proc.stdout, progress)
                if proc.wait() != 0:
                    log.seek(0)
                    text = log.read().strip() or output
                    tail = "\n".join(text.splitlines()[-15:])
                    raise ModelError(f"NEURON failed on {self.sim.source_file}:\n{tail}")
            return dict(np.load(out_file))

    # -------------------------------------------------------------- the API
    def run(self, base, theta0, epochs: int, progress=None) -> OnlineRun:
        """Learn over ``epochs`` back-to-back replays of the protocol (``base`` is unused:
        the model holds the other values)."""
        theta0 = np.asarray(theta0, dtype=float)
        if self.o.relative and np.any(theta0 == 0):
            raise ModelError("relative steps need non-zero initial values; use "
                             "--absolute-steps for parameters that start at 0")
        data = self._run(self._plan(theta0, epochs, True, self.o.leak), progress)
        theta = data["theta"]
        if not np.all(np.isfinite(theta)):
            raise ModelError("online tuning: a parameter became non-finite (try a "
                             "smaller --lr, --clip or bounds)")
        if len(theta) != epochs * self.n // self.o.every:
            raise ModelError(f"the learner recorded {len(theta)} updates, expected "
                             f"{epochs * self.n // self.o.every}")
        loss = data["loss"]
        zeros = np.zeros(len(loss))
        t_ms = (np.arange(len(loss)) + 1) * self.o.every * self.dt
        return OnlineRun(t_ms, theta, loss, data.get("spikes", zeros),
                         data.get("rate", zeros), theta[-1])

    def epoch_loss_and_grad(self, base, theta) -> tuple[float, np.ndarray]:
        """Offline: the loss integrated over one run at fixed theta (t = 0 not counted)
        and its exact gradient (no leak, no updates)."""
        data = self._run(self._plan(np.asarray(theta, dtype=float), 1, False, 0.0))
        return float(data["total"]), np.asarray(data["g"])


def _follow_epochs(stdout, progress) -> str:
    """Read the learner's stdout to its end: each ``EPOCH_LINE loss`` line calls
    ``progress``; the other lines (NEURON's own) are returned for an error message."""
    other = []
    for line in stdout:
        if line.startswith(EPOCH_LINE):
            if progress is not None:
                progress(float(line[len(EPOCH_LINE):]))
        else:
            other.append(line.rstrip())
    return "\n".join(other)


def _check_updatable(model: Model, paths: list[str]) -> None:
    """Refuse parameters the primal mod would not see change during a run: those entering
    a derived quantity that depends on no state and nothing that changes (v, t, a
    concentration), which the mod computes once, in INITIAL (emit.py, ``rates()``)."""
    for path in paths:
        target = resolve(model, path)
        mech = model.mechanisms[target.mechanism]
        changing = (set(mech.reads) - {"temperature"}) | set(mech.states)
        depends = {target.symbol}
        for name, d in mech.derived.items():           # in evaluation order
            used = {s.name for s in d.expr.free_symbols}
            if used & changing:
                changing.add(name)
            if used & depends:
                depends.add(name)
                if name not in changing:
                    raise UnsupportedError(
                        f"online learning of {path} in the NEURON backend: it enters "
                        f"{name} of {mech.name}, which the mod computes once per run")
