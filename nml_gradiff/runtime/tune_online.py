"""``tune --mode online`` and ``tune --target-rate``: the learner inside the simulation, and
the activity-level objective.

Online: the protocol is replayed ``--epochs`` times back to back (inputs and a target trace
restart at t = 0, the cell's state, its sensitivities, the tuned values, the leaky gradient
and Adam's moments carry on), with an Adam update every ``--update-every`` steps inside the
backend's simulation loop (backends/jax/learner.py).  Offline with ``--target-rate``: one
Adam step per epoch along the exact gradient of the time-integrated rate loss, through the
offline loop of runtime/tune.py.

Results go where offline tuning puts them (``history.json``, PNG plots, ``model/``); for
online runs the history is over simulated time, subsampled, and the tuned model carries the
final values.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ModelError, UnsupportedError
from .adam import Adam

HISTORY_POINTS = 1000                 # rows of an online history.json, at most


@dataclass
class OnlineSettings:
    """The options of the online learner and of the rate proxy (docs/tune.md)."""
    leak: float = 10.0                # lambda in 1/s: the gradient's memory is 1/lambda
    update_every: int | None = None   # steps between updates; None: 1 ms worth of steps
    positive: bool = False            # keep the tuned values >= 0
    rate_threshold: float = -20.0     # mV
    rate_slope: float = 2.0           # mV
    rate_tau: float = 100.0           # ms
    rate_width: float | None = None   # ms; None: calibrated on the initial run

    def check(self) -> None:
        """Nonsensical values fail before anything is loaded."""
        if not (self.leak >= 0 and np.isfinite(self.leak)):
            raise ModelError(f"--leak must be a non-negative rate (1/s), got {self.leak}")
        if self.update_every is not None and self.update_every < 1:
            raise ModelError(f"--update-every must be at least 1 step, got "
                             f"{self.update_every}")
        for name, value in (("--rate-slope", self.rate_slope), ("--rate-tau", self.rate_tau),
                            ("--rate-width", self.rate_width)):
            if value is not None and not (value > 0 and np.isfinite(value)):
                raise ModelError(f"{name} must be positive, got {value}")


#: 1/s: the leaky gradient forgets over 100 ms, a few spikes' worth of the demo's drive.
DEFAULT_LEAK = 10.0


def online_settings(args) -> OnlineSettings:
    """The CLI's online and rate options (cli.py ``tune``)."""
    return OnlineSettings(leak=DEFAULT_LEAK if args.leak is None else args.leak,
                          update_every=args.update_every,
                          positive=args.positive, rate_threshold=args.rate_threshold,
                          rate_slope=args.rate_slope, rate_tau=args.rate_tau,
                          rate_width=args.rate_width)


# ---------------------------------------------------------------------------- the rate proxy

def voltage_key(units: dict) -> str:
    """The recorded membrane potential the rate proxy reads: the first output in mV."""
    keys = [k for k, u in units.items() if u == "mV"]
    if not keys:
        raise ModelError("--target-rate needs the simulation to record a membrane potential "
                         "(an OutputColumn of v)")
    return keys[0]


def calibrate_width(t_ms, v, threshold: float, slope: float) -> float:
    """The time-integral of sigmoid((V - threshold) / slope) per threshold crossing, in ms:
    what one spike adds to the proxy's integral, so that proxy / width counts spikes."""
    crossings = int(np.sum((v[:-1] < threshold) & (v[1:] >= threshold)))
    if crossings == 0:
        raise ModelError("the initial run has no spike (no crossing of the rate threshold "
                         f"{threshold:g} mV) to calibrate the rate proxy on; give "
                         "--rate-width MS or a lower --rate-threshold")
    sig = 1.0 / (1.0 + np.exp(-(v - threshold) / slope))
    return float(np.sum(sig[1:]) * (t_ms[1] - t_ms[0]) / crossings)


def _proxy(objective, x0, settings: OnlineSettings):
    from ..backends.learning import RateProxy
    key = voltage_key(objective.units)
    width = settings.rate_width
    if width is None:
        t_ms, rec = objective.simulate(x0)
        width = calibrate_width(t_ms, rec[key], settings.rate_threshold, settings.rate_slope)
    return RateProxy(settings.rate_threshold, settings.rate_slope, settings.rate_tau,
                     width, key)


# ---------------------------------------------------------------------------- tuning

def _learner(request, objective, x0, target):
    from ..backends.learning import OnlineOptions
    s, a = request.online, request.adam
    every = s.update_every or max(1, int(round(1.0 / objective.dt)))
    lower = tuple(0.0 for _ in x0) if s.positive else a.lower
    options = OnlineOptions(lr=a.lr, leak=s.leak, every=every, clip=a.clip,
                            relative=a.relative, lower=lower, upper=a.upper)
    proxy = _proxy(objective, x0, s) if request.target_rate is not None else None
    return objective.learner(options, target=target, proxy=proxy,
                             rate=request.target_rate), proxy


def _check(request) -> None:
    request.online.check()
    if request.backend not in ("jax", "neuron"):
        raise UnsupportedError(f"tune --backend {request.backend} --mode online / "
                               "--target-rate: only the jax and neuron backends have the "
                               "learner")
    if request.mode == "online" and request.adam.schedule != "constant":
        raise ModelError("online tuning uses a constant learning rate: drop --schedule "
                         f"{request.adam.schedule} (or give --schedule constant)")
    if request.target_rate is not None and not (request.target_rate >= 0
                                                and np.isfinite(request.target_rate)):
        raise ModelError(f"--target-rate must be a rate in spikes/s >= 0, got "
                         f"{request.target_rate}")


def tune_online(request):
    """``tune`` for ``--mode online`` and for ``--target-rate`` (runtime/tune.py dispatches)."""
    from .tune import TuneResult, save_model, setup
    if request.online is None:
        request.online = OnlineSettings()
    _check(request)
    s = setup(request)
    objective, x0, paths, t_ms = _online(s.objective, request.backend), s.x0, s.paths, s.t_ms
    target = s.target_file.on_grid(t_ms, objective.scales) if s.target_file else None
    learner, proxy = _learner(request, objective, x0, target)
    history, best, final = _learn(request, learner, objective, x0, paths, proxy)
    _, after = objective.simulate(final)
    tuned = save_model(request, s, final)
    out, units, before = Path(request.out_dir), s.units, s.before
    summary = _summary(learner, objective, x0, final, proxy)
    if request.mode == "online":
        summary["learner"] = asdict(learner.o)       # the options as the learner ran
    _write_history(out / "history.json", request, paths, units, history, best, tuned,
                   proxy, summary)
    from .tune_online_plots import plot_all
    shown = target if target is not None else {proxy.key: None}
    plot_all(out, history, paths, t_ms, before, after, shown, objective.units,
             request.mode, request.target_rate)
    return TuneResult(paths, units, history, best, tuned,
                      initial={p: float(v) for p, v in zip(paths, x0)})


def _online(objective, backend: str):
    """The objective the learner needs: NEURON's wraps its offline one
    (backends/neuron/learner.py); JAX's is both."""
    if backend == "neuron":
        from ..backends.neuron.learner import NeuronOnlineObjective
        return NeuronOnlineObjective(objective)
    return objective


def _learn(request, learner, objective, x0, paths, proxy):
    """(history, the row written back, its values): online, the final values; offline
    (a rate target), tune.py's epochs on the learner's loss and the best epoch."""
    from .tune import _epochs
    if request.mode == "online":
        run = _run_online(learner, objective, x0, request.epochs)
        history = _online_history(run, paths, proxy, request.target_rate)
        return history, history[-1], run.final_theta
    if request.online.positive:
        request.adam.lower = np.zeros_like(x0)
    history = _epochs(_RateLoss(learner, objective), None, x0, Adam(x0, request.adam),
                      request.epochs, paths)
    best = min(history, key=lambda h: h["loss"])
    return history, best, np.array([best["params"][p] for p in paths])


class _RateLoss:
    """The offline loop's objective for a rate target: the loss integrated over one run."""

    def __init__(self, learner, objective):
        self.learner, self.base = learner, objective.base

    def loss_and_grad(self, x, _target):
        return self.learner.epoch_loss_and_grad(self.base, x)


def _run_online(learner, objective, x0, epochs: int):
    bar = tqdm(total=epochs, desc="tune online", unit="epoch", disable=None,
               file=sys.stderr)

    def progress(loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4g}")
    try:
        return learner.run(objective.base, x0, epochs, progress)
    finally:
        bar.close()


def spike_rate(t_ms, spikes, tau_ms: float, r0: float) -> np.ndarray:
    """The real spike rate (1/s) filtered like the proxy: threshold crossings per interval
    through the same exponential low-pass of time constant tau, starting at r0 as the proxy
    does (at the target)."""
    out, r, last = np.empty(len(spikes)), float(r0), 0.0
    for i, (t, n) in enumerate(zip(t_ms, spikes)):
        r = r * np.exp(-(t - last) / tau_ms) + n * 1000.0 / tau_ms
        out[i], last = r, t
    return out


def _online_history(run, paths, proxy, rate) -> list[dict]:
    """At most HISTORY_POINTS rows over simulated time: per block of update intervals, the
    loss per ms and, at the block's end, the parameters and (rate objective) the rate proxy
    and the real spike rate filtered the same way."""
    rows = len(run.loss)
    block = max(1, -(-rows // HISTORY_POINTS))
    real = spike_rate(run.t_ms, run.spikes, proxy.tau_ms, rate) if proxy is not None else None
    history = []
    for end in range(block, rows + 1, block):
        span = run.t_ms[end - 1] - (run.t_ms[end - block - 1] if end > block else 0.0)
        row = {"t_ms": float(run.t_ms[end - 1]),
               "loss": float(run.loss[end - block:end].sum() / span),
               "params": {p: float(v) for p, v in zip(paths, run.theta[end - 1])}}
        if proxy is not None:
            row["rate_proxy"] = float(run.rate[end - 1])
            row["spike_rate"] = float(real[end - 1])
        history.append(row)
    return history


def _count_rate(t_ms, v, threshold: float) -> float:
    """Threshold crossings per second over a run."""
    crossings = int(np.sum((v[:-1] < threshold) & (v[1:] >= threshold)))
    return crossings / (t_ms[-1] - t_ms[0]) * 1000.0


def _summary(learner, objective, x0, final, proxy) -> dict:
    """Where the tuned model ends up: its loss over one run at the final values and, for a
    rate target, its real spike rate over one run before and after."""
    loss, _ = learner.epoch_loss_and_grad(objective.base, final)
    summary = {"final_epoch_loss": loss}
    if proxy is not None:
        for name, x in (("spike_rate_before", x0), ("spike_rate_after", final)):
            t_ms, rec = objective.simulate(x)
            summary[name] = _count_rate(t_ms, rec[proxy.key], proxy.threshold_mv)
    return summary


def _write_history(path: Path, request, paths, units, history, best, tuned, proxy,
                   summary) -> None:
    online = request.mode == "online"
    doc = {"model": str(request.model_file), "backend": request.backend,
           "mode": request.mode,
           "target_trace": None if request.target_trace is None else str(request.target_trace),
           "target_rate": request.target_rate,
           "loss": ("(r - target_rate)^2, r in 1/s" if proxy is not None else
                    "sum over recorded keys of (y - target)^2, internal units")
           + (" (per ms, averaged per row)" if online else ", integrated over one run (dt)"),
           "lr": request.adam.lr, "relative_steps": request.adam.relative,
           "clip": request.adam.clip, "online": asdict(request.online),
           "rate_proxy": None if proxy is None else asdict(proxy),
           "parameters": [{"path": p, "unit": u} for p, u in zip(paths, units)],
           "tuned_model": str(tuned), "summary": summary}
    if online:
        doc["history"] = history
    else:
        doc["best_epoch"] = best["epoch"]
        doc["epochs"] = history
    path.write_text(json.dumps(doc, indent=1) + "\n")


def online_command(request, args) -> int:
    """``tune --mode online`` / ``--target-rate``: the CLI's defaults for these modes, tune,
    print a summary."""
    from .tune import print_values, tune
    request.online = online_settings(args)
    if request.mode == "online":
        if args.schedule == "cosine":
            raise ModelError("online tuning uses a constant learning rate: drop "
                             "--schedule cosine")
        request.adam.schedule, request.adam.steps = "constant", None
        request.adam.lr = 1e-3 if args.lr is None else args.lr
    result = tune(request)
    summary = json.loads((Path(args.out) / "history.json").read_text())["summary"]
    first, last = result.history[0], result.best
    print(f"loss {first['loss']:.6g} -> {last['loss']:.6g} "
          + ("(online, last history row)" if request.mode == "online" else
             f"(best epoch {last['epoch']})"))
    if "spike_rate_after" in summary:
        print(f"spike rate over one run: {summary['spike_rate_before']:.4g}/s -> "
              f"{summary['spike_rate_after']:.4g}/s (target {request.target_rate:g}/s)")
    print_values(result, first, last, Path(args.out))
    return 0
