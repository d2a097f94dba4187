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

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ...errors import ModelError
from ..learning import OnlineOptions, OnlineRun, RateProxy

__all__ = ["OnlineLearner", "OnlineOptions", "OnlineRun", "RateProxy"]


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
        s, S, theta, (g, e_prev), aux, v_prev, loss, spikes = carry
        k, y_k = xs
        new, S_new, rec, drec = module.step_sens(_with(base, paths, theta), s, S, k * dt, dt)
        l, e, aux = objective(rec, drec, aux, y_k, dt)
        if o.delay:                         # NEURON's learner: e of the step before
            e, e_prev = e_prev, e
        g = (decay * g + e * dt, e_prev)
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
            theta, m, v, k_upd = _adam(theta, g[0], m, v, k_upd, scale, o)
        out = (theta, loss, spikes, aux[0])
        return ((s, S, theta, g, aux, v_prev, loss, spikes), m, v, k_upd), out

    return chunk


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
        # g is (the leaky gradient, e of the last step: for OnlineOptions.delay)
        inner = (s0, S0, theta0, (zeros, zeros), self.objective.aux0(drec0), jnp.asarray(v0),
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
        return float(np.sum(out[1])), np.asarray(carry[0][3][0])
