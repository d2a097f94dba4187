"""What the online learners of the JAX and NEURON backends share: the learner's options,
the rate proxy's settings and what a run records (backends/jax/learner.py,
backends/neuron/learner.py; docs/tune.md, "Online mode").  No JAX and no NEURON here, so
either backend can be used without the other installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError


@dataclass(frozen=True)
class RateProxy:
    """A low-pass filtered sigmoid of V, scaled to read as spikes per second:

        r' = (1000 * sigmoid((V - threshold) / slope) / width - r) / tau       r in 1/s

    sigmoid(...) is ~1 while V is above the threshold, so over one spike its time-integral
    is the spike's width at the threshold; ``width`` (ms) is that integral per spike
    measured on the model's own initial run (runtime/tune_online.py), so that each spike
    adds ~1 to the integral of r / 1000 and the filter's mean is the spike rate averaged
    over ``tau``.  The gradient sees every way V's time above threshold changes: spikes
    moving, appearing or growing, near-threshold excursions, and the spikes' width, so the
    proxy stays a rate only as long as tuning does not change the spike's shape much
    (tune reports the real spike rate beside it)."""

    threshold_mv: float = -20.0
    slope_mv: float = 2.0
    tau_ms: float = 100.0
    width_ms: float = 1.0
    key: str = ""                     # the OUTPUTS key of the membrane potential

    def check(self) -> None:
        for name in ("slope_mv", "tau_ms", "width_ms"):
            if not getattr(self, name) > 0:
                raise ModelError(f"the rate proxy's {name} must be positive, "
                                 f"got {getattr(self, name)}")


@dataclass(frozen=True)
class OnlineOptions:
    lr: float = 1e-3                  # Adam's rate per update (relative to |theta0| if relative)
    leak: float = 10.0                # lambda of g' = e - lambda g, in 1/s
    every: int = 10                   # steps between Adam updates (M)
    clip: float | None = None         # largest norm of g in step units
    relative: bool = True
    lower: tuple | None = None        # bounds per tuned parameter (None: unbounded)
    upper: tuple | None = None
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    # Steps by which the gradient lags the update: NEURON's shadow cells run one step
    # behind the cell, so its learner's update at step k has seen e up to k-1 (delay 1);
    # the JAX learner can do the same (delay=1) to be compared with it step for step.
    delay: int = 0

    def check(self) -> None:
        if self.delay not in (0, 1):
            raise ModelError(f"the learner's gradient delay must be 0 or 1 step, got "
                             f"{self.delay}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ModelError(f"--lr must be a positive number, got {self.lr}")
        if not (self.leak >= 0 and np.isfinite(self.leak)):
            raise ModelError(f"--leak must be a non-negative rate (1/s), got {self.leak}")
        if self.every < 1:
            raise ModelError(f"--update-every must be at least 1 step, got {self.every}")
        if self.clip is not None and not self.clip > 0:
            raise ModelError(f"--clip must be positive, got {self.clip}")


@dataclass
class OnlineRun:
    """What the learner recorded, one row per update interval (M steps)."""
    t_ms: np.ndarray          # end of each interval, counted over all epochs
    theta: np.ndarray         # [U, P] after each update
    loss: np.ndarray          # [U] loss integrated over the interval (l dt)
    spikes: np.ndarray        # [U] threshold crossings in the interval (rate objective)
    rate: np.ndarray          # [U] the rate proxy at the end of the interval (1/s)
    final_theta: np.ndarray
