"""Adam (Kingma & Ba 2015) on a flat vector, with the options ``tune`` offers.

Kept in numpy and free of any backend so offline tuning behaves the same whichever
simulator computed the gradient.  Steps may be taken in units of each parameter's initial
value (``relative``): conductances of 1e-4 S/cm2 and midpoints of -40 mV then move by the
same fraction per step for one learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError


SCHEDULES = ("constant", "cosine")


@dataclass
class AdamOptions:
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip: float | None = None          # largest gradient norm (in step units), None: no clip
    relative: bool = True              # steps in units of |initial value|
    lower: np.ndarray | None = None    # bounds in parameter units (None: unbounded)
    upper: np.ndarray | None = None
    schedule: str = "constant"         # or "cosine": lr decays to 0 over ``steps``
    steps: int | None = None           # length of the cosine schedule

    def check(self) -> None:
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ModelError(f"--lr must be a positive number, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ModelError(f"--schedule must be one of {', '.join(SCHEDULES)}")
        if self.schedule == "cosine" and not (self.steps or 0) > 0:
            raise ModelError("a cosine schedule needs its number of steps")
        if self.clip is not None and not self.clip > 0:
            raise ModelError(f"--clip must be positive, got {self.clip}")


@dataclass
class Adam:
    """Minimises over ``x``; :meth:`step` takes dloss/dx and returns the new x."""

    x0: np.ndarray
    options: AdamOptions = field(default_factory=AdamOptions)
    m: np.ndarray = field(init=False)
    v: np.ndarray = field(init=False)
    k: int = field(init=False, default=0)

    def __post_init__(self):
        self.options.check()
        self.x0 = np.asarray(self.x0, dtype=float)
        if self.options.relative and np.any(self.x0 == 0):
            raise ModelError("relative steps need non-zero initial values; use absolute "
                             "steps for parameters that start at 0")
        self.scale = np.abs(self.x0) if self.options.relative else np.ones_like(self.x0)
        self.m = np.zeros_like(self.x0)
        self.v = np.zeros_like(self.x0)

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        o = self.options
        g = np.asarray(grad, dtype=float) * self.scale       # gradient in step units
        norm = float(np.linalg.norm(g))
        if o.clip is not None and norm > o.clip:
            g = g * (o.clip / norm)
        self.k += 1
        self.m = o.beta1 * self.m + (1 - o.beta1) * g
        self.v = o.beta2 * self.v + (1 - o.beta2) * g * g
        m_hat = self.m / (1 - o.beta1 ** self.k)
        v_hat = self.v / (1 - o.beta2 ** self.k)
        x = x - self.learning_rate() * self.scale * m_hat / (np.sqrt(v_hat) + o.eps)
        if o.lower is not None or o.upper is not None:
            x = np.clip(x, o.lower, o.upper)
        return x

    def learning_rate(self) -> float:
        """The rate of step ``k`` (1-based).  Adam's steps do not shrink by themselves near a
        minimum (they are normalised by the gradient's size), so fitting to high precision
        needs the rate to decay: the cosine schedule goes from ``lr`` to 0 over ``steps``."""
        o = self.options
        if o.schedule == "constant":
            return o.lr
        return 0.5 * o.lr * (1 + np.cos(np.pi * min(self.k - 1, o.steps) / o.steps))
