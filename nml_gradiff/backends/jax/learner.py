"""Online learning inside the JAX simulation loop (the paper's homeostatic control).

One ``lax.scan`` carries the model state, its forward sensitivities S, the tuned values
theta (the next step's primal reads them), a leaky loss gradient g and Adam's moments, so
there is no Python call per time step:

    per step     state, S <- step_sens(params with theta, state, S, t)
                 e  = dl/dy . S_y                      (instantaneous loss gradient)
                 g <- exp(-leak dt) g + e dt           (g' = e - leak g)
    every M steps  Adam step of theta along g (relative or absolute steps, clipped,
                   bounded)

S is propagated as if theta were constant (the sensitivity step knows nothing of theta's
own updates): the RTRL-like approximation of the paper, good while theta moves slowly
against the cell's own time constants.

Objectives: the squared error to a target trace played in, l = sum_q (y_q - y*_q)^2, and a
target activity level through a differentiable rate proxy (:class:`RateProxy`, a filtered
sigmoid of V), l = (r - r*)^2 with r in spikes/s.  The same scan without updates gives the offline
gradient of the time-integrated loss (:func:`epoch_loss_and_grad`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ...errors import ModelError


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

    def check(self) -> None:
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ModelError(f"--lr must be a positive number, got {self.lr}")
        if not (self.leak >= 0 and np.isfinite(self.leak)):
            raise ModelError(f"--leak must be a non-negative rate (1/s), got {self.leak}")
        if self.every < 1:
            raise ModelError(f"--update-every must be at least 1 step, got {self.every}")
        if self.clip is not None and not self.clip > 0:
            raise ModelError(f"--clip must be positive, got {self.clip}")


# ---------------------------------------------------------------------------- objectives

def _sigmoid_parts(v, proxy: RateProxy):
    z = (v - proxy.threshold_mv) / proxy.slope_mv
    s = jax.nn.sigmoid(z)
    return s, s * (1.0 - s) / proxy.slope_mv          # sigmoid and d sigmoid / dV


def _rate_step(aux, v, S_v, proxy: RateProxy, dt):
    """One exponential-Euler step of r with V at the step's end, and its exact tangent.
    aux = (r, S_r) at the step's start."""
    r, S_r = aux
    sig, dsig = _sigmoid_parts(v, proxy)
    a = 1.0 - jnp.exp(-dt / proxy.tau_ms)
    gain = 1000.0 / proxy.width_ms
    return r + a * (gain * sig - r), S_r + a * (gain * dsig * S_v - S_r)


class _Objective:
    """What one step contributes: (loss rate l, dl/dtheta, the proxy's new (r, S_r)) from
    the recorded values and their sensitivities."""

    def __init__(self, module, target_keys=(), proxy: RateProxy | None = None,
                 rate: float | None = None):
        keys = list(module.OUTPUTS)
        self.idx = [keys.index(k) for k in target_keys]
        self.proxy, self.rate = proxy, rate
        if proxy is not None:
            self.v_idx = keys.index(proxy.key)

    def __call__(self, rec, drec, aux, y_k, dt):
        if self.proxy is None:
            err = jnp.stack([rec[i] for i in self.idx]) - y_k
            dy = jnp.stack([drec[i] for i in self.idx])
            return jnp.sum(err ** 2), 2.0 * (err @ dy), aux
        aux = _rate_step(aux, rec[self.v_idx], drec[self.v_idx], self.proxy, dt)
        err = aux[0] - self.rate
        return err ** 2, 2.0 * err * aux[1], aux

    def aux0(self, drec0):
        """The rate proxy's (r, S_r) at t = 0: r starts at the target (no start-up
        transient in the loss)."""
        rate = 0.0 if self.proxy is None else float(self.rate)
        return (jnp.asarray(rate), jnp.zeros_like(drec0[0]))


# ---------------------------------------------------------------------------- the scan

def _with(base: dict, paths, theta) -> dict:
    return {**base, **{p: theta[j] for j, p in enumerate(paths)}}


def _adam(theta, g, m, v, k, scale, o: OnlineOptions):
    step = g * scale                                   # gradient in step units
    if o.clip is not None:
        norm = jnp.linalg.norm(step)
        step = jnp.where(norm > o.clip, step * (o.clip / jnp.maximum(norm, 1e-300)), step)
    k = k + 1
    m = o.beta1 * m + (1 - o.beta1) * step
    v = o.beta2 * v + (1 - o.beta2) * step * step
    m_hat = m / (1 - o.beta1 ** k)
    v_hat = v / (1 - o.beta2 ** k)
    theta = theta - o.lr * scale * m_hat / (jnp.sqrt(v_hat) + o.eps)
    if o.lower is not None or o.upper is not None:
        theta = jnp.clip(theta, None if o.lower is None else jnp.asarray(o.lower),
                         None if o.upper is None else jnp.asarray(o.upper))
    return theta, m, v, k


def _chunk_runner(module, base, objective: _Objective, o: OnlineOptions, dt, learn: bool,
                  scale):
    """The body of the outer scan: M steps, then (if learning) one Adam update."""
    paths = module.SENS_PARAMS
    decay = float(np.exp(-o.leak * dt / 1000.0))       # leak in 1/s, dt in ms
    threshold = objective.proxy.threshold_mv if objective.proxy is not None else None

    def one_step(carry, xs):
        s, S, theta, g, aux, v_prev, loss, spikes = carry
        k, y_k = xs
        new, S_new, rec, drec = module.step_sens(_with(base, paths, theta), s, S, k * dt, dt)
        l, e, aux = objective(rec, drec, aux, y_k, dt)
        g = decay * g + e * dt
        if threshold is not None:           # real spikes, to check the proxy against
            v = rec[objective.v_idx]
            spikes = spikes + ((v_prev < threshold) & (v >= threshold))
            v_prev = v
        return (new, S_new, theta, g, aux, v_prev, loss + l * dt, spikes), None

    def chunk(carry, xs):
        inner, m, v, k_upd = carry
        ks, ys = xs
        zero = (jnp.zeros(()), jnp.zeros((), dtype=jnp.int32))
        s, S, theta, g, aux, v_prev, _, _ = inner
        inner = (s, S, theta, g, aux, v_prev, *zero)
        inner, _ = lax.scan(one_step, inner, (ks, ys))
        s, S, theta, g, aux, v_prev, loss, spikes = inner
        if learn:
            theta, m, v, k_upd = _adam(theta, g, m, v, k_upd, scale, o)
        out = (theta, loss, spikes, aux[0])
        return ((s, S, theta, g, aux, v_prev, loss, spikes), m, v, k_upd), out

    return chunk


@dataclass
class OnlineRun:
    """What the learner recorded, one row per update interval (M steps)."""
    t_ms: np.ndarray          # end of each interval, counted over all epochs
    theta: np.ndarray         # [U, P] after each update
    loss: np.ndarray          # [U] loss integrated over the interval (l dt)
    spikes: np.ndarray        # [U] threshold crossings in the interval (rate objective)
    rate: np.ndarray          # [U] the rate proxy at the end of the interval (1/s)
    final_theta: np.ndarray


class OnlineLearner:
    """The learner for one generated module (emitted with ``params=paths``)."""

    def __init__(self, module, options: OnlineOptions, *, target: dict | None = None,
                 proxy: RateProxy | None = None, rate: float | None = None):
        options.check()
        self.module, self.o = module, options
        self.paths = list(module.SENS_PARAMS)
        self.dt = float(module.DT_MS)
        self.n = int(round(module.DURATION_MS / self.dt))
        if self.n % options.every:
            raise ModelError(f"--update-every {options.every} must divide the simulation's "
                             f"{self.n} steps")
        if proxy is not None:
            proxy.check()
        keys = list(target) if target is not None else []
        self.objective = _Objective(module, keys, proxy, rate)
        self.targets = (np.stack([np.asarray(target[k], float) for k in keys], axis=1)[1:]
                        if keys else np.zeros((self.n, 0)))
        if self.targets.shape[0] != self.n:
            raise ModelError(f"the target has {self.targets.shape[0] + 1} times; the run "
                             f"records {self.n + 1}")
        self._epoch = {}

    def _compiled(self, learn: bool):
        if learn not in self._epoch:
            # Offline: the plain time-integral of the gradient (no leak).
            options = self.o if learn else OnlineOptions(lr=self.o.lr, leak=0.0,
                                                         every=self.o.every)
            self._epoch[learn] = jax.jit(self._epoch_fn(learn, options))
        return self._epoch[learn]

    def _epoch_fn(self, learn: bool, options: OnlineOptions):
        m_steps, n_chunks = self.o.every, self.n // self.o.every
        ks = jnp.arange(self.n).reshape(n_chunks, m_steps)
        ys = jnp.asarray(self.targets).reshape(n_chunks, m_steps, -1)

        def epoch(base, scale, carry):
            chunk = _chunk_runner(self.module, base, self.objective, options, self.dt, learn,
                                  scale)
            return lax.scan(chunk, carry, (ks, ys))
        return epoch

    def initial_carry(self, base: dict, theta0):
        theta0 = jnp.asarray(theta0, dtype=jnp.float64)
        params = _with(base, self.paths, theta0)
        s0, S0 = self.module.init_sens(params)
        rec0, drec0 = self.module.record_sens(params, s0, S0, 0.0)
        v0 = rec0[self.objective.v_idx] if self.objective.proxy is not None else 0.0
        zeros = jnp.zeros_like(theta0)
        inner = (s0, S0, theta0, zeros, self.objective.aux0(drec0), jnp.asarray(v0),
                 jnp.zeros(()), jnp.zeros((), dtype=jnp.int32))
        return (inner, zeros, zeros, jnp.zeros((), dtype=jnp.int32))

    def run(self, base: dict, theta0, epochs: int, progress=None) -> OnlineRun:
        """Learn over ``epochs`` back-to-back replays of the protocol (inputs and target
        restart at t = 0; state, S, theta, g and Adam's moments carry on)."""
        theta0 = np.asarray(theta0, dtype=float)
        if self.o.relative and np.any(theta0 == 0):
            raise ModelError("relative steps need non-zero initial values; use "
                             "--absolute-steps for parameters that start at 0")
        scale = jnp.asarray(np.abs(theta0) if self.o.relative else np.ones_like(theta0))
        carry, rows = self.initial_carry(base, theta0), []
        epoch = self._compiled(True)
        for _ in range(epochs):                       # one compiled call per epoch
            carry, out = epoch(base, scale, carry)
            rows.append([np.asarray(x) for x in out])
            if not np.all(np.isfinite(rows[-1][0])):
                raise ModelError("online tuning: a parameter became non-finite (try a "
                                 "smaller --lr, --clip or bounds)")
            if progress is not None:
                progress(float(rows[-1][1].sum()))
        theta, loss, spikes, rate = (np.concatenate(c) for c in zip(*rows))
        t_ms = (np.arange(len(loss)) + 1) * self.o.every * self.dt
        return OnlineRun(t_ms, theta, loss, spikes, rate, theta[-1])

    def epoch_loss_and_grad(self, base: dict, theta) -> tuple[float, np.ndarray]:
        """Offline: the loss integrated over one run at fixed theta and its gradient (the
        same scan, no leak, no updates; t = 0 is not counted)."""
        theta = np.asarray(theta, dtype=float)
        carry = self.initial_carry(base, theta)
        carry, out = self._compiled(False)(base, jnp.ones_like(theta), carry)
        return float(np.sum(out[1])), np.asarray(carry[0][3])
