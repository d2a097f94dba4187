"""``nml-gradiff tune``: fit parameters of a LEMS simulation to a target with Adam.

Offline mode: each epoch simulates the whole protocol once with sensitivities, takes the
exact gradient of the loss (computed online by the backend, in memory independent of the
simulated time) and makes one Adam step.  The loss is the squared error to the target trace
integrated over time, sum_k (y_k - target_k)^2 dt, in the internal units of the recorded
quantity (mV^2 ms for a voltage).

Results go to one folder: ``history.json`` (loss and parameters per epoch), PNG plots, and
the tuned model as NeuroML/LEMS files with the new values written in (``model/``).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ModelError
from ..ingest.simulation import load_simulation
from .adam import Adam, AdamOptions
from .targets import read_target
from .writeback import write_values

MODES = ("offline", "online")

#: Adam's beta2 for offline fits, not Kingma & Ba's 0.999: a fit lasts 10^2 epochs, less than
#: 0.999's memory (~1000 steps), so v would stay the mean of all squared gradients since the
#: start, dominated by the large early ones; near the minimum the steps then shrink with the
#: gradient and a fit stalls in the narrow valleys of correlated conductances (measured on
#: ACnet2's pyr_4_sym, docs/tune.md "Worked example").  0.9 normalises by the recent size.
OFFLINE_BETA2 = 0.9


@dataclass
class TuneRequest:
    model_file: Path
    param_globs: list[str]
    out_dir: Path
    backend: str = "jax"
    target_trace: Path | None = None
    target_rate: float | None = None
    mode: str = "offline"
    epochs: int = 50
    adam: AdamOptions = field(default_factory=lambda: AdamOptions(beta2=OFFLINE_BETA2))
    include_dirs: tuple = ()
    allow_outside: bool = False
    online: object = None             # tune_online.OnlineSettings: online/rate options

    def check(self) -> None:
        if (self.target_trace is None) == (self.target_rate is None):
            raise ModelError("give exactly one of --target-trace FILE and --target-rate VALUE")
        if self.mode not in MODES:
            raise ModelError(f"--mode must be one of {', '.join(MODES)}")
        if self.epochs < 1:
            raise ModelError(f"--epochs must be at least 1, got {self.epochs}")
        self.adam.check()


@dataclass
class TuneResult:
    paths: list[str]
    units: list[str]
    history: list[dict]
    best: dict                        # the epoch with the lowest loss: the tuned values
    tuned_model: Path
    initial: dict | None = None       # path -> start value (online: history[0] has moved)


def _objective(backend: str, model, sim, paths: list[str]):
    if backend == "jax":
        from ..backends.jax.objective import JaxObjective
        return JaxObjective(model, sim, paths)
    if backend == "neuron":
        from ..backends.neuron.objective import NeuronObjective
        return NeuronObjective(model, sim, paths)
    raise ModelError(f"tune: unknown backend {backend!r}")


def _epochs(objective, target: dict, x0: np.ndarray, adam: Adam, epochs: int,
            paths: list[str]) -> list[dict]:
    history, x = [], x0
    bar = tqdm(range(epochs + 1), desc="tune", unit="epoch", disable=None, file=sys.stderr)
    for epoch in bar:
        loss, grad = objective.loss_and_grad(x, target)
        if not (math.isfinite(loss) and np.all(np.isfinite(grad))):
            raise ModelError(f"tune: the loss or its gradient is not finite at epoch {epoch} "
                             "(try a smaller --lr or bounds)")
        history.append({"epoch": epoch, "loss": loss,
                        "params": {p: float(v) for p, v in zip(paths, x)}})
        bar.set_postfix(loss=f"{loss:.4g}")
        if epoch < epochs:
            x = adam.step(x, grad)
    return history


def _check_writable(by_path: dict, paths: list[str]) -> None:
    """Refuse, before any simulation, parameters whose tuned value could not be saved."""
    hidden = [p for p in paths if by_path[p].origin is None]
    if hidden:
        raise ModelError(f"cannot tune {', '.join(hidden)}: the value is not an attribute of "
                         "its own in the model files, so the tuned model could not be written")


@dataclass
class Setup:
    """What every mode starts from: the model, the tuned paths, the objective, the target
    file (None for a rate target) and the initial run."""

    model: object
    paths: list[str]
    units: list[str]
    objective: object
    target_file: object
    x0: np.ndarray
    t_ms: np.ndarray
    before: dict


def setup(request: TuneRequest) -> Setup:
    """Load, select and check (bad input fails before any simulation), then run once."""
    model, sim = load_simulation(request.model_file, request.include_dirs,
                                 request.allow_outside)
    paths = model.select_paths(request.param_globs)
    by_path = {p.path: p for p in model.parameters()}
    _check_writable(by_path, paths)
    target_file = (read_target(request.target_trace, sim)
                   if request.target_trace is not None else None)
    objective = _objective(request.backend, model, sim, paths)
    x0 = np.array([by_path[p].value for p in paths])
    t_ms, before = objective.simulate(x0)
    return Setup(model, paths, [by_path[p].unit for p in paths], objective, target_file,
                 x0, t_ms, before)


def save_model(request: TuneRequest, s: Setup, final: np.ndarray) -> Path:
    """The tuned model, written back into a copy of its files under ``DIR/model``."""
    out = Path(request.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_values(request.model_file, s.model.parameters(), dict(zip(s.paths, final)),
                        out / "model", request.include_dirs, request.allow_outside)


def tune(request: TuneRequest) -> TuneResult:
    request.check()
    if request.mode == "online" or request.target_rate is not None:
        from .tune_online import tune_online        # the learner and the rate objective
        return tune_online(request)
    s = setup(request)
    target = s.target_file.on_grid(s.t_ms, s.objective.scales)
    history = _epochs(s.objective, target, s.x0, Adam(s.x0, request.adam), request.epochs,
                      s.paths)
    # Spiking losses are not convex and Adam overshoots: the tuned model is the best epoch.
    best = min(history, key=lambda h: h["loss"])
    final = np.array([best["params"][p] for p in s.paths])
    _, after = s.objective.simulate(final)
    tuned = save_model(request, s, final)
    out = Path(request.out_dir)
    _write_history(out / "history.json", request, s.paths, s.units, history, best, tuned)
    from .tune_plots import plot_all
    plot_all(out, history, s.paths, s.t_ms, {k: s.before[k] for k in target},
             {k: after[k] for k in target}, target, s.objective.units)
    return TuneResult(s.paths, s.units, history, best, tuned)


def _write_history(path: Path, request: TuneRequest, paths, units, history, best,
                   tuned) -> None:
    doc = {"model": str(request.model_file), "backend": request.backend,
           "mode": request.mode, "target_trace": str(request.target_trace),
           "loss": "sum over steps of (y - target)^2 * dt, internal units",
           "lr": request.adam.lr, "beta2": request.adam.beta2,
           "schedule": request.adam.schedule,
           "relative_steps": request.adam.relative,
           "parameters": [{"path": p, "unit": u} for p, u in zip(paths, units)],
           "best_epoch": best["epoch"], "tuned_model": str(tuned), "epochs": history}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _refuse_online_options(args) -> None:
    """Options of the online learner mean nothing to an offline fit to a trace: say so
    rather than ignore them."""
    given = [flag for flag, value in (("--leak", args.leak),
                                      ("--update-every", args.update_every))
             if value is not None]
    if given:
        raise ModelError(f"{', '.join(given)}: online options; add --mode online")


def tune_command(args) -> int:
    """``nml-gradiff tune``: parse options into a request, tune, print a summary."""
    request = TuneRequest(
        model_file=Path(args.file), param_globs=args.params, out_dir=Path(args.out),
        backend=args.backend,
        target_trace=Path(args.target_trace) if args.target_trace else None,
        target_rate=args.target_rate, mode=args.mode, epochs=args.epochs,
        adam=AdamOptions(lr=0.01 if args.lr is None else args.lr, clip=args.clip,
                         beta2=OFFLINE_BETA2, relative=not args.absolute_steps,
                         schedule=args.schedule or "cosine", steps=args.epochs),
        include_dirs=tuple(args.include_dir), allow_outside=args.allow_outside)
    if args.mode == "online" or args.target_rate is not None:
        from .tune_online import online_command
        return online_command(request, args)
    _refuse_online_options(args)
    result = tune(request)
    first, best = result.history[0], result.best
    print(f"loss {first['loss']:.6g} -> {best['loss']:.6g} (best of "
          f"{len(result.history) - 1} epochs: epoch {best['epoch']})")
    print_values(result, first, best, Path(args.out))
    return 0


def print_values(result: TuneResult, first: dict, final: dict, out: Path) -> None:
    """The command's last lines (offline and online): each parameter from its start value
    (``result.initial``, else ``first``'s) to ``final``'s (history rows), and what was
    written."""
    start = result.initial or first["params"]
    for path, unit in zip(result.paths, result.units):
        print(f"{path} {start[path]!r} -> {final['params'][path]!r} {unit}")
    print(f"wrote {out / 'history.json'} and the tuned model {result.tuned_model}")
