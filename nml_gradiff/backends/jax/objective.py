"""The JAX backend as ``tune``'s objective: simulate, and loss with its exact gradient.

Wraps one generated module (emitted with sensitivities for the tuned parameters): values
go in as a vector in the order of the tuned paths, in the units ``inspect --params`` prints;
the gradient comes from the module's ``loss_and_grad``, accumulated online from the
forward sensitivities.  :meth:`JaxObjective.learner` gives the online learner and the rate
objective on the same module (learner.py).
"""

from __future__ import annotations

import jax
import numpy as np

from ...ir.model import Model
from ...ir.simulation import Simulation
from .emit import emit, load_module


class JaxObjective:
    def __init__(self, model: Model, sim: Simulation, paths: list[str]):
        self.paths = list(paths)
        self.module = load_module(emit(model, sim, params=self.paths))
        self.base = dict(self.module.PARAMS)
        self.scales = {k: scale for k, (_unit, scale, _text) in self.module.OUTPUTS.items()}
        self.units = {k: unit for k, (unit, _scale, _text) in self.module.OUTPUTS.items()}
        self.dt = float(self.module.DT_MS)
        self._simulate = jax.jit(self.module.simulate)
        self._loss_and_grad = jax.jit(self.module.loss_and_grad)

    def _params(self, x: np.ndarray) -> dict:
        return {**self.base, **{p: float(v) for p, v in zip(self.paths, x)}}

    def simulate(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        t, recorded = self._simulate(self._params(x))
        return np.asarray(t), {k: np.asarray(v) for k, v in recorded.items()
                               if k in self.scales}

    def loss_and_grad(self, x: np.ndarray, target: dict) -> tuple[float, np.ndarray]:
        loss, grad = self._loss_and_grad(self._params(x), target)
        return float(loss), np.array([float(grad[p]) for p in self.paths])

    def learner(self, options, *, target: dict | None = None, proxy=None,
                rate: float | None = None):
        """The online learner (learner.py) on this module: a target trace {key: [T]} or a
        rate proxy with its target rate (1/s)."""
        from .learner import OnlineLearner
        return OnlineLearner(self.module, options, target=target, proxy=proxy, rate=rate)
