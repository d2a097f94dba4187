"""nml-gradiff's JAX backend against Jaxley, side by side in one run (issue 4, item 5).

Same cell, same dt, same simulated time, CPU, float64:

1. agreement: the primal voltage traces of both (max |dV|, spike times), and the loss gradients
   of both on the same loss (relative difference), before anything is timed;
2. time per loss gradient (mean squared error of the recorded voltages against a target trace)
   for P conductance parameters: ours (reverse-mode ``jax.value_and_grad`` through the emitted
   module and, when the emitted module has them, its forward sensitivities
   ``loss_and_grad``) against Jaxley's ``jax.value_and_grad`` of ``jx.integrate``; every function
   is compiled ahead of time (compile time reported separately), then run once to warm up, then
   timed ``--repeat`` times (median);
3. our sensitivity run against our own primal, and against the target ``1 + 0.5 P``;
4. peak memory (the RSS high-water mark, VmHWM, of a fresh subprocess per configuration) of
   one loss gradient for 100 ms, 1 s and 10 s simulated; Jaxley by default and
   with its documented memory-saving option (``checkpoint_lengths``, two levels of ~sqrt(n)).

Cells: ``hh`` = models/hh/LEMS_hh.xml (one compartment, dt 0.01 ms); ``tree`` =
bench/models/LEMS_hh_tree.xml (128 compartments in 16 branches, one density per branch,
dt 0.025 ms). The Jaxley cells are built here with the same geometry, Jaxley's own ``HH``
channel (its rates are the HH 1952 rates of models/hh/hh_channels.nml, in the same units:
S/cm2, mV, ms) and the same current step, sampled at mid-step as our module evaluates it.

Usage: python bench/bench_jaxley.py [--quick] [--repeat N] [--cells hh tree] [--no-memory |
       --memory-only] [--mem-budget-gb 5] [--xla-small-loop-bytes BYTES] [--json OUT]
Needs jax and jaxley (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class CellCase:
    """A benchmark cell: the LEMS file for our side, and what Jaxley needs to build the same."""
    name: str
    lems: Path
    include_dirs: tuple[Path, ...]
    dt_ms: float
    p_values: tuple[int, ...]


CELLS = {
    "hh": CellCase("hh", ROOT / "models/hh/LEMS_hh.xml", (), 0.01, (1, 3, 4)),
    "tree": CellCase("tree", ROOT / "bench/models/LEMS_hh_tree.xml", (ROOT / "models/hh",),
                     0.025, (1, 4, 16)),
}
TREE_PARENTS = [-1] + [(i - 1) // 2 for i in range(1, 16)]   # as in bench/models/hh_tree.nml
TREE_DIAMETERS = {0: 20.0, 1: 3.0, 2: 2.0, 3: 1.5, 4: 1.0}    # um, by depth


def param_choice(case: CellCase, p: int) -> list[tuple[str, tuple[int | None, str]]]:
    """P parameters: (our parameter path, (Jaxley branch or None for the cell, Jaxley name)).

    The single compartment has three conductances: P = 1, 3 are conductances, P = 4 adds the
    leak reversal potential. The tree has a gNa per branch: P = 1, 4, 16 are gNa of branches
    0..P-1."""
    if case.name == "hh":
        every = [("hh_cell/naChans/condDensity", (None, "HH_gNa")),
                 ("hh_cell/kChans/condDensity", (None, "HH_gK")),
                 ("hh_cell/leak/condDensity", (None, "HH_gLeak")),
                 ("hh_cell/leak/erev", (None, "HH_eLeak"))]
        return every[:p]
    return [(f"hh_tree/naChans_b{b}/condDensity", (b, "HH_gNa")) for b in range(p)]


# ---------------------------------------------------------------------------------- our side

def ours_module(case: CellCase, sens_paths: list[str] | None = None):
    """Emit and load our JAX module; with ``sens_paths``, ask for emitted sensitivities of
    those parameters when this version of ``emit`` supports it (keyword ``params``)."""
    from nml_gradiff.backends.jax.emit import emit, load_module
    from nml_gradiff.ingest.simulation import load_simulation
    model, sim = load_simulation(str(case.lems), include_dirs=[str(d) for d in case.include_dirs])
    kwargs = {}
    if sens_paths is not None and "params" in inspect.signature(emit).parameters:
        kwargs["params"] = list(sens_paths)
    name = f"bench_{case.name}_{len(sens_paths or [])}"
    return load_module(emit(model, sim, **kwargs), name=name)


def has_sensitivities(mod) -> bool:
    return hasattr(mod, "loss_and_grad") and hasattr(mod, "SENS_PARAMS")


def ours_primal(mod, case: CellCase, duration: float):
    return lambda params: mod.simulate(params, duration, case.dt_ms)


def sq_error(traces: list, targets: list, dt_ms: float):
    """The loss of every side: dt * sum over recorded keys and the T = n + 1 recorded times
    of (v - target)^2 (mV^2 ms), the definition of our module's loss_and_grad."""
    import jax.numpy as jnp
    return dt_ms * sum(jnp.sum((v - w) ** 2) for v, w in zip(traces, targets))


def ours_ad_loss(mod, case: CellCase, duration: float, targets: list):
    """loss(theta) with theta = {path: value} for the chosen parameters, others fixed."""
    keys = list(mod.OUTPUTS)

    def loss(theta):
        _, rec = mod.simulate({**mod.PARAMS, **theta}, duration, case.dt_ms)
        return sq_error([rec[k] for k in keys], targets, case.dt_ms)
    return loss


def ours_sens_loss_and_grad(mod, case: CellCase, duration: float, targets: list):
    """The emitted online sensitivities: (params) -> (loss, grad {path: value})."""
    target = dict(zip(mod.OUTPUTS, targets))
    return lambda params: mod.loss_and_grad(params, target, duration, case.dt_ms)


# ------------------------------------------------------------------------------- Jaxley side

def pulse_of(mod) -> dict:
    """The current step's parameters (ms, nA), as our module's PARAMS hold them."""
    return {k: float(v) for k, v in mod.PARAMS.items() if k.startswith("step/")}


def pulse_samples(p: dict, case: CellCase, n: int) -> np.ndarray:
    """Our pulse generator's current at each step, evaluated at mid-step (t + dt/2) as our
    module (and NEURON's ELECTRODE_CURRENT BREAKPOINT) does: Jaxley applies sample k to the
    step from t_k to t_k+1."""
    t = (np.arange(n) + 0.5) * case.dt_ms
    on = (t >= p["step/delay"]) & (t < p["step/delay"] + p["step/duration"])
    return np.where(on, p["step/amplitude"] * p["step/weight"], 0.0)


def jaxley_cell(case: CellCase, current: np.ndarray):
    """The Jaxley cell equivalent to ``case``, stimulated with ``current`` (nA per step) and
    recording v where our OUTPUTS record it (in the same order)."""
    import jax.numpy as jnp
    import jaxley as jx
    from jaxley.channels import HH
    comp = jx.Compartment()
    if case.name == "hh":
        cell = jx.Cell(jx.Branch(comp, ncomp=1), parents=[-1])
        cell.set("radius", 17.841242 / 2)   # models/hh/hh_cell.nml: a 1000 um2 cylinder
        cell.set("length", 17.841242)
        cell.set("axial_resistivity", 35.4)
        recorded = [(0, 0)]
    else:
        depth = [0] * len(TREE_PARENTS)
        for i in range(1, len(depth)):
            depth[i] = depth[TREE_PARENTS[i]] + 1
        cell = jx.Cell([jx.Branch(comp, ncomp=8)] * len(TREE_PARENTS), parents=TREE_PARENTS)
        for b, d in enumerate(depth):
            cell.branch(b).set("radius", TREE_DIAMETERS[d] / 2)
            cell.branch(b).set("length", (20.0 if b == 0 else 100.0) / 8)
        cell.set("axial_resistivity", 100.0)
        recorded = [(0, 0), (15, 0)]   # segments 0 and 120 of hh_tree.nml
    cell.set("capacitance", 1.0)
    cell.insert(HH())
    cell.set("HH_eLeak", -54.387)   # Jaxley's default is -54.3
    cell.set("v", -65.0)
    cell.init_states()              # gates at steady state for v, as NeuroML's HH gates start
    cell.branch(0).comp(0).stimulate(jnp.asarray(current), verbose=False)
    for b, c in recorded:
        cell.branch(b).comp(c).record("v", verbose=False)
    return cell


def make_trainable(cell, choice) -> None:
    for _, (branch, name) in choice:
        view = cell if branch is None else cell.branch(branch)
        view.make_trainable(name, verbose=False)


def checkpoint_lengths(n: int) -> list[int]:
    """Jaxley's documented memory option: nested checkpointing, two levels of ~sqrt(n) steps
    (their product must cover the n steps)."""
    a = int(np.ceil(np.sqrt(n)))
    return [a, int(np.ceil(n / a))]


def jaxley_loss(cell, case: CellCase, targets: list, ckpt: list[int] | None):
    import jaxley as jx

    def loss(params):
        v = jx.integrate(cell, params=params, delta_t=case.dt_ms, checkpoint_lengths=ckpt)
        return sq_error(list(v), targets, case.dt_ms)
    return loss


# ---------------------------------------------------------------------------------- timing

def block(x):
    import jax
    return jax.block_until_ready(x)


def compile_and_time(fn, args: tuple, repeat: int) -> tuple[float, tuple[float, float], object]:
    """(compile seconds, (median, min, min CPU) run seconds, result): ahead-of-time compile,
    one warm-up run, then ``repeat`` timed runs (the min shows what other processes on a
    shared machine cost the median).  "min CPU" is the least process CPU time (all threads)
    of a run: what the run itself computed, which other processes on a loaded machine inflate
    far less than its wall time."""
    import jax
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    result = block(compiled(*args))
    runs, cpu = [], []
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        block(compiled(*args))
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return compile_s, (statistics.median(runs), min(runs), min(cpu)), result


def n_steps(case: CellCase, duration: float) -> int:
    return int(round(duration / case.dt_ms))


def targets_for(mod, case: CellCase, duration: float) -> list:
    """The target traces: our primal with every conductance 5 % lower (a fitting problem with
    a known answer); both simulators are fitted to the same arrays."""
    import jax
    shifted = {k: v * 0.95 if k.endswith("/condDensity") else v for k, v in mod.PARAMS.items()}
    _, rec = jax.jit(ours_primal(mod, case, duration))(shifted)
    return [rec[k] for k in mod.OUTPUTS]


def agreement(mod, case: CellCase, duration: float) -> dict:
    """Primal traces of both sides: max |dV| and spike times (upward 0 mV crossings)."""
    import jax
    import jaxley as jx
    n = n_steps(case, duration)
    _, rec = jax.jit(ours_primal(mod, case, duration))(mod.PARAMS)
    cell = jaxley_cell(case, pulse_samples(pulse_of(mod), case, n))
    theirs = np.asarray(jx.integrate(cell, delta_t=case.dt_ms))
    ours = np.array([np.asarray(rec[k]) for k in mod.OUTPUTS])
    if ours.shape != theirs.shape:
        raise RuntimeError(f"trace shapes differ: ours {ours.shape}, Jaxley {theirs.shape}")

    def spikes(v):   # the times of the first sample above 0 mV
        up = np.nonzero((v[1:] > 0) & (v[:-1] <= 0))[0] + 1
        return list(np.round(up * case.dt_ms, 6))
    same = all(spikes(a) == spikes(b) for a, b in zip(ours, theirs))
    return {"max_dv_mV": float(np.abs(ours - theirs).max()), "same_spike_times": same,
            "spikes_ours": [spikes(v) for v in ours]}


def time_gradients(case: CellCase, duration: float, repeat: int) -> list[dict]:
    """One row per P: compile and median run times of every gradient, and their agreement."""
    import jax
    base = ours_module(case)
    n = n_steps(case, duration)
    targets = targets_for(base, case, duration)
    _, primal_s, _ = compile_and_time(ours_primal(base, case, duration), (base.PARAMS,), repeat)
    jaxley_primal_s = time_jaxley_primal(case, base, duration, repeat)
    rows = []
    for p in case.p_values:
        choice = param_choice(case, p)
        row = {"cell": case.name, "P": p, "steps": n, "ours_primal_s": primal_s,
               "jaxley_primal_s": jaxley_primal_s}
        theta = {path: base.PARAMS[path] for path, _ in choice}
        c, r, (loss_o, grad_o) = compile_and_time(   # slow: fewer repeats
            jax.value_and_grad(ours_ad_loss(base, case, duration, targets)), (theta,),
            min(repeat, 3))
        row.update(ours_ad_compile_s=c, ours_ad_s=r)
        cell = jaxley_cell(case, pulse_samples(pulse_of(base), case, n))
        make_trainable(cell, choice)
        c, r, (loss_j, grad_j) = compile_and_time(
            jax.value_and_grad(jaxley_loss(cell, case, targets, None)),
            (cell.get_parameters(),), repeat)
        row.update(jaxley_compile_s=c, jaxley_s=r)
        g_o = np.array([float(grad_o[path]) for path, _ in choice])
        g_j = np.array([float(list(d.values())[0][0]) for d in grad_j])
        row["loss_rel_diff"] = abs(float(loss_o) - float(loss_j)) / abs(float(loss_j))
        row["grad_rel_diff"] = float(np.max(np.abs(g_o - g_j)) / np.max(np.abs(g_j)))
        row.update(time_sensitivities(case, duration, choice, targets, g_j, repeat))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def time_jaxley_primal(case: CellCase, base, duration: float, repeat: int):
    """jx.integrate as a function of one trainable parameter (an argument, so XLA cannot
    fold the simulation into a constant)."""
    import jaxley as jx
    cell = jaxley_cell(case, pulse_samples(pulse_of(base), case, n_steps(case, duration)))
    make_trainable(cell, param_choice(case, 1))
    _, run_s, _ = compile_and_time(
        lambda params: jx.integrate(cell, params=params, delta_t=case.dt_ms),
        (cell.get_parameters(),), repeat)
    return run_s


def time_sensitivities(case, duration, choice, targets, g_ref, repeat) -> dict:
    """Our emitted forward sensitivities, when the emitted module has them."""
    mod = ours_module(case, [path for path, _ in choice])
    if not has_sensitivities(mod):
        return {}
    _, primal_s, _ = compile_and_time(ours_primal(mod, case, duration), (mod.PARAMS,), repeat)
    c, r, (_, grad) = compile_and_time(ours_sens_loss_and_grad(mod, case, duration, targets),
                                       (mod.PARAMS,), repeat)
    g = np.array([float(grad[path]) for path, _ in choice])
    diff = float(np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref)))
    return {"ours_sens_compile_s": c, "ours_sens_s": r, "ours_sens_primal_s": primal_s,
            "sens_grad_rel_diff_vs_jaxley": diff}


# ---------------------------------------------------------------------------------- memory

MEMORY_MODES = ("ours_primal", "ours_ad", "ours_sens", "jaxley_grad", "jaxley_grad_ckpt")


def memory_child(cell_name: str, mode: str, duration: float, pulse: dict) -> None:
    """Run one loss gradient (or primal) in this fresh process; print its wall time as JSON.
    The target is a constant -65 mV (memory does not depend on it), so the Jaxley process never
    builds our module."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    case = CELLS[cell_name]
    n = n_steps(case, duration)
    choice = param_choice(case, max(case.p_values))
    start = time.perf_counter()
    if mode.startswith("jaxley"):
        cell = jaxley_cell(case, pulse_samples(pulse, case, n))
        make_trainable(cell, choice)
        ckpt = checkpoint_lengths(n) if mode.endswith("ckpt") else None
        targets = [jnp.full(n + 1, -65.0)] * len(cell.recordings)
        block(jax.jit(jax.value_and_grad(jaxley_loss(cell, case, targets, ckpt)))(
            cell.get_parameters()))
    else:
        mod = ours_module(case, [path for path, _ in choice] if mode == "ours_sens" else None)
        targets = [jnp.full(n + 1, -65.0)] * len(mod.OUTPUTS)
        if mode == "ours_primal":
            block(jax.jit(ours_primal(mod, case, duration))(mod.PARAMS))
        elif mode == "ours_ad":
            theta = {path: mod.PARAMS[path] for path, _ in choice}
            block(jax.jit(jax.value_and_grad(ours_ad_loss(mod, case, duration, targets)))(theta))
        elif has_sensitivities(mod):
            block(jax.jit(ours_sens_loss_and_grad(mod, case, duration, targets))(mod.PARAMS))
        else:
            print(json.dumps({"skipped": "the emitted module has no loss_and_grad yet",
                              "peak_rss_mb": _vm_kb("VmHWM") / 1024}))
            return
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "peak_rss_mb": _vm_kb("VmHWM") / 1024}))


def peak_rss(cell_name: str, mode: str, duration: float, pulse: dict, budget_gb: float) -> dict:
    """Run memory_child in a fresh interpreter, which reports its own RSS high-water mark
    (VmHWM: wait4's ru_maxrss would count the RSS of this big parent at fork time). The child
    is killed, and reported so, when its RSS passes the budget: the machine is shared."""
    cmd = [sys.executable, __file__, "--child", cell_name, mode, str(duration),
           json.dumps(pulse)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        seen = 0.0
        while proc.poll() is None:
            seen = max(seen, _vm_kb("VmRSS", proc.pid) / 1024 ** 2)
            if seen > budget_gb:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = {"cell": cell_name, "mode": mode, "duration_ms": duration}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if seen > budget_gb:
        result.update(peak_rss_mb=seen * 1024, killed_over_budget_gb=budget_gb)
    elif proc.returncode != 0 or not lines:
        result["error"] = (stderr.strip().splitlines() or ["failed"])[-1]
    else:
        result.update(json.loads(lines[-1]))
    print(json.dumps(result), flush=True)
    return result


def _vm_kb(field: str, pid: int | str = "self") -> int:
    """A VmRSS/VmHWM line of /proc/PID/status, in kB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


# ---------------------------------------------------------------------------------- report

def set_small_loop_threshold(nbytes: int) -> None:
    """XLA's CPU backend runs a while loop (our lax.scan, Jaxley's) kernel by kernel, each
    kernel a dispatch, unless the bytes its body accesses per iteration are below a threshold
    (1024 by default; XLA's SmallWhileLoopHoistingPass): then the loop is compiled into one
    function.  Read once, when jax's CPU backend starts: must run before jax is imported.
    Subprocesses (the memory runs) inherit it."""
    if "jax" in sys.modules:
        raise SystemExit("--xla-small-loop-bytes must be set before jax is imported")
    from nml_gradiff.backends.jax.xla_flags import OPTION    # jax-free; what the CLI sets
    flag = f"--xla_backend_extra_options={OPTION}={nbytes}"
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), flag]))


def machine() -> str:
    import jax
    import jaxley
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"jax {jax.__version__}, jaxley {jaxley.__version__}, backend {jax.default_backend()}"
            f", XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 repeats, 20 ms gradients, memory at 100 ms and 1 s only")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--duration", type=float, default=None,
                    help="simulated ms of the gradient timings (default 100, quick 20)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--memory-durations", type=float, nargs="+", default=None)
    ap.add_argument("--mem-budget-gb", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=None, help="write every row to this file")
    ap.add_argument("--xla-small-loop-bytes", type=int, default=None, metavar="BYTES",
                    help="XLA CPU compiles a while loop whose body accesses fewer bytes than "
                         "this into one function instead of dispatching each of its kernels "
                         "(XLA's default: 1024); set for the whole process, so for both sides")
    ap.add_argument("--child", nargs=4, metavar=("CELL", "MODE", "MS", "PULSE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        memory_child(args.child[0], args.child[1], float(args.child[2]), json.loads(args.child[3]))
        return 0
    if args.xla_small_loop_bytes is not None:
        set_small_loop_threshold(args.xla_small_loop_bytes)
    import jax
    jax.config.update("jax_enable_x64", True)
    repeat = args.repeat or (3 if args.quick else 7)
    duration = args.duration or (20.0 if args.quick else 100.0)
    mem_durations = args.memory_durations or ([100.0, 1000.0] if args.quick
                                              else [100.0, 1000.0, 10000.0])
    out = {"machine": machine(), "command": " ".join([Path(sys.executable).name] + sys.argv),
           "agreement": {}, "gradients": [], "memory": []}
    print(out["machine"], flush=True)
    for name in [] if args.memory_only else args.cells:
        case = CELLS[name]
        out["agreement"][name] = agreement(ours_module(case), case, 100.0)
        print(name, json.dumps(out["agreement"][name]), flush=True)
        if out["agreement"][name]["max_dv_mV"] > 1e-3:
            raise SystemExit(f"{name}: the two primal traces differ by more than 1e-3 mV")
        out["gradients"] += time_gradients(case, duration, repeat)
    if not args.no_memory:
        for name in args.cells:
            pulse = pulse_of(ours_module(CELLS[name]))
            for ms in mem_durations:
                for mode in MEMORY_MODES:
                    out["memory"].append(peak_rss(name, mode, ms, pulse, args.mem_budget_gb))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    print_tables(out)
    return 0


def _t(x) -> str:
    """'median (min)' of a (median, min) pair of seconds, in ms."""
    return "n/a" if x is None else f"{x[0] * 1e3:.4g} ({x[1] * 1e3:.4g})"


def _ratio(a, b) -> str:
    """a / b for the medians (and the mins)."""
    if a is None or b is None:
        return "n/a"
    return f"{a[0] / b[0]:.3g} ({a[1] / b[1]:.3g})"


def print_tables(out: dict) -> None:
    print("\nTimes in ms, median (min) of the repeats; compile times in s.\n")
    print("| cell | P | steps | ours primal | Jaxley primal | ours sens grad | ours AD grad"
          " | Jaxley grad | compile s: ours sens / ours AD / Jaxley |")
    print("|" + "---|" * 9)
    for r in out["gradients"]:
        sc = r.get("ours_sens_compile_s")
        print(f"| {r['cell']} | {r['P']} | {r['steps']} | {_t(r['ours_primal_s'])} | "
              f"{_t(r['jaxley_primal_s'])} | {_t(r.get('ours_sens_s'))} | {_t(r['ours_ad_s'])} | "
              f"{_t(r['jaxley_s'])} | {'n/a' if sc is None else f'{sc:.1f}'} / "
              f"{r['ours_ad_compile_s']:.1f} / {r['jaxley_compile_s']:.1f} |")
    print("\n| cell | P | Jaxley grad / ours sens grad | Jaxley grad / ours AD grad"
          " | ours sens grad / ours primal | 1 + 0.5 P | grad rel. diff vs Jaxley: sens, AD"
          " | loss rel. diff |")
    print("|" + "---|" * 8)
    for r in out["gradients"]:
        sd = r.get("sens_grad_rel_diff_vs_jaxley")
        print(f"| {r['cell']} | {r['P']} | {_ratio(r['jaxley_s'], r.get('ours_sens_s'))} | "
              f"{_ratio(r['jaxley_s'], r['ours_ad_s'])} | "
              f"{_ratio(r.get('ours_sens_s'), r.get('ours_sens_primal_s'))} | "
              f"{1 + 0.5 * r['P']:g} | {'n/a' if sd is None else f'{sd:.1e}'}, "
              f"{r['grad_rel_diff']:.1e} | {r['loss_rel_diff']:.1e} |")
    print_cpu_tables(out["gradients"])
    print_memory(out["memory"])


def print_cpu_tables(rows: list[dict]) -> None:
    """The same runs by their least process CPU time (ms; robust to a loaded machine)."""
    print("\nLeast CPU time of the repeats (ms), and its ratios.\n")
    print("| cell | P | ours primal | Jaxley primal | ours sens grad | ours AD grad | Jaxley grad"
          " | Jaxley grad / ours sens grad | ours sens grad / its module's primal |")
    print("|" + "---|" * 9)
    for r in rows:
        cpu = {k: _cpu(r.get(k)) for k in ("ours_primal_s", "jaxley_primal_s", "ours_sens_s",
                                           "ours_ad_s", "jaxley_s", "ours_sens_primal_s")}
        ms = {k: "n/a" if v is None else f"{v * 1e3:.4g}" for k, v in cpu.items()}
        print(f"| {r['cell']} | {r['P']} | {ms['ours_primal_s']} | {ms['jaxley_primal_s']} | "
              f"{ms['ours_sens_s']} | {ms['ours_ad_s']} | {ms['jaxley_s']} | "
              f"{_div(cpu['jaxley_s'], cpu['ours_sens_s'])} | "
              f"{_div(cpu['ours_sens_s'], cpu['ours_sens_primal_s'])} |")


def _cpu(x):
    return x[2] if x is not None and len(x) > 2 else None


def _div(a, b) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.3g}"


def print_memory(rows: list[dict]) -> None:
    """Peak RSS in MB, one column per simulated time (wall seconds of the whole process,
    build and compile included, in parentheses); nothing when memory was not measured."""
    if not rows:
        return
    durations = sorted({m["duration_ms"] for m in rows})
    print("\n| cell | what | " + " | ".join(f"{d:g} ms" for d in durations) + " |")
    print("|---|---|" + "---|" * len(durations))
    cells = {}
    for m in rows:
        cells.setdefault((m["cell"], m["mode"]), {})[m["duration_ms"]] = m
    for (cell, mode), by_ms in cells.items():
        print(f"| {cell} | {mode} | " + " | ".join(_memory_cell(by_ms.get(d)) for d in durations)
              + " |")


def _memory_cell(m: dict | None) -> str:
    if m is None:
        return "not run"
    if "killed_over_budget_gb" in m:
        return f"> {m['killed_over_budget_gb']:g} GB (killed)"
    if "error" in m:
        return m["error"][:90]
    if "skipped" in m:
        return "n/a"
    return f"{m['peak_rss_mb']:.0f} ({m['seconds']:.0f} s)"


if __name__ == "__main__":
    sys.exit(main())
