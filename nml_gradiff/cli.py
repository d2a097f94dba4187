"""The one entry point: ``nml-gradiff COMMAND ...``.

Errors in the user's input (a model file, an option) print one line and exit with status 2;
see :mod:`nml_gradiff.errors`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .backends.jax.xla_flags import configure_xla
from .errors import ModelError
from .inspect_report import model_to_json, params_lines, summary_lines

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141          # 128 + SIGPIPE, what `yes | head` reports


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-I", "--include-dir", action="append", default=[], metavar="DIR",
                   help="extra folder to search for included files (after the including "
                        "file's own folder)")
    p.add_argument("--allow-outside", action="store_true",
                   help="allow includes that leave the model's folder and the -I folders")


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="fit parameters of a LEMS simulation with Adam "
                       "(docs/tune.md)")
    p.add_argument("file", metavar="LEMS_FILE", help="a LEMS file with a <Simulation>")
    p.add_argument("--backend", choices=["jax", "neuron"], default="jax",
                   help="simulator computing the loss and its gradient (default: jax)")
    p.add_argument("--params", nargs="+", metavar="GLOB", required=True,
                   help="parameters to tune (paths of `inspect --params`)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-trace", metavar="FILE",
                        help="a table as `run` writes it (time, then the columns of one of "
                             "the simulation's output files, SI units)")
    target.add_argument("--target-rate", type=float, metavar="VALUE",
                        help="a firing rate in spikes/s for the rate proxy (docs/tune.md)")
    p.add_argument("--mode", choices=["offline", "online"], default="offline",
                   help="offline: one Adam step per simulated protocol (default); online: "
                        "the parameters learn while the cell runs")
    p.add_argument("--epochs", type=int, default=50,
                   help="offline: Adam steps, one simulation each; online: replays of the "
                        "protocol (default 50)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate, in units of each initial value (default 0.01 "
                        "per epoch offline, 0.001 per update online)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default=None,
                   help="learning rate over the epochs: cosine decay to 0 (default offline) "
                        "or constant (online: always)")
    p.add_argument("--clip", type=float, default=None, help="largest gradient norm per step")
    p.add_argument("--absolute-steps", action="store_true",
                   help="take steps in parameter units, not relative to initial values")
    p.add_argument("-o", "--out", metavar="DIR", required=True,
                   help="folder for history.json, the plots and the tuned model (model/)")
    _add_online_options(p)
    _add_model_options(p)


def _add_online_options(p: argparse.ArgumentParser) -> None:
    """tune's options for --mode online and --target-rate (docs/tune.md, "Online mode")."""
    g = p.add_argument_group("online learner and rate proxy")
    g.add_argument("--leak", type=float, default=None, metavar="PER_S",
                   help="online: decay rate lambda of the leaky gradient, 1/s (default 10)")
    g.add_argument("--update-every", type=int, default=None, metavar="STEPS",
                   help="online: time steps between Adam updates (default: 1 ms of steps)")
    g.add_argument("--positive", action="store_true",
                   help="keep the tuned values >= 0")
    g.add_argument("--rate-threshold", type=float, default=-20.0, metavar="MV",
                   help="rate proxy: sigmoid midpoint, mV (default -20)")
    g.add_argument("--rate-slope", type=float, default=2.0, metavar="MV",
                   help="rate proxy: sigmoid slope factor, mV (default 2)")
    g.add_argument("--rate-tau", type=float, default=100.0, metavar="MS",
                   help="rate proxy: low-pass time constant, ms (default 100)")
    g.add_argument("--rate-width", type=float, default=None, metavar="MS",
                   help="rate proxy: sigmoid integral per spike, ms (default: measured on "
                        "the initial run)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nml-gradiff",
        description="Compile NeuroML2/LEMS models, with forward-sensitivity equations.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="show what a model file defines")
    p.add_argument("file", help="a NeuroML (.nml) or LEMS file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--params", nargs="*", metavar="GLOB", default=None,
                   help="print the tunable parameters as 'PATH VALUE UNIT', optionally "
                        "only those matching shell-style GLOBs")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change a parameter first (VALUE in the unit --params prints, or "
                        "a NeuroML quantity such as 120mS_per_cm2)")
    _add_model_options(p)

    p = sub.add_parser("validate", help="check many model files: XSD and ingest")
    p.add_argument("files", nargs="+", metavar="FILE_OR_DIR",
                   help="NeuroML or LEMS files, or folders searched for *.nml and LEMS_*.xml")
    _add_model_options(p)

    p = sub.add_parser("run", help="simulate a LEMS simulation and write its outputs")
    p.add_argument("file", help="a LEMS file with a <Simulation> (LEMS_*.xml)")
    p.add_argument("--backend", choices=["neuron", "jax"], default="neuron",
                   help="simulator (default: neuron)")
    p.add_argument("-o", "--out", metavar="DIR", default=None,
                   help="folder for the declared output files (default: beside the file)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change a parameter first (as for inspect; repeatable)")
    p.add_argument("--params", nargs="+", metavar="GLOB", default=[],
                   help="also write X.sens.npz: d(recorded quantity)/d(parameter)")
    p.add_argument("--integration", choices=["exact", "jnml_neuron"], default="exact",
                   help="how channel gates and pools are integrated (neuron, jax): 'exact' "
                        "(closed form, cnexp) or 'jnml_neuron' (forward Euler as the mods of "
                        "jNeuroML's NEURON export, to reproduce their data; docs/neuron.md)")
    _add_model_options(p)

    p = sub.add_parser("convert", help="convert model files or whole folders")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR",
                   help="model files, or folders searched for *.nml and LEMS_*.xml")
    p.add_argument("--target", choices=["neuron", "lems", "jax"], default="neuron",
                   help="neuron: mod files (and a runner for LEMS simulations); jax: a "
                        "Python module; lems: LEMS with sensitivity states (default: neuron)")
    p.add_argument("--params", nargs="+", metavar="GLOB", default=[],
                   help="the parameters whose sensitivities to emit (neuron: shadow cells)")
    p.add_argument("--sensitivity-units", choices=["si", "internal"], default=None,
                   help="lems target: sensitivity states with their own SI dimensions, or "
                        "dimensionless in internal units (default: si for jlems, internal "
                        "for jnml_neuron)")
    p.add_argument("--lems-simulator", choices=["jlems", "jnml_neuron"], default="jlems",
                   help="lems target: the simulator the sensitivities are exact for: jLEMS "
                        "(jnml -nogui) or jNeuroML's NEURON export (jnml -neuron); "
                        "docs/lems.md")
    p.add_argument("-o", "--out", metavar="DIR", required=True,
                   help="output folder: one subfolder per model, and report.json")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes")
    _add_model_options(p)

    p = sub.add_parser("omv", help="run the OSB model-validation tests under folders")
    p.add_argument("folders", nargs="+", metavar="DIR",
                   help="folders searched for OSB test files (.omt)")
    p.add_argument("--backend", choices=["neuron", "jax"], default="neuron",
                   help="simulator (default: neuron)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("-k", metavar="TEXT", default=None,
                   help="only tests whose .omt path contains TEXT")
    p.add_argument("--integration", choices=["reference", "exact"], default="reference",
                   help="neuron, jax: 'reference' integrates channel gates as the engine "
                        "that made the expected data (jNeuroML's exported mods: forward "
                        "Euler); 'exact': our default closed-form gates (docs/omv-neuron.md)")
    _add_tune(sub)
    return parser


def _load(args):
    from .ingest.model import load_model
    from .ingest.overrides import apply_overrides
    model = load_model(args.file, include_dirs=args.include_dir,
                       allow_outside=args.allow_outside)
    apply_overrides(model, args.set)
    return model


def cmd_inspect(args) -> int:
    model = _load(args)
    if args.params is not None:
        if args.params:
            missing = model.unmatched(args.params)
            if missing:
                raise ModelError("no parameter matches " + ", ".join(map(repr, missing)))
        lines = params_lines(model, args.params or None)
        if args.json:
            print(json.dumps([dict(zip(("path", "value", "unit"), ln.split(" ", 2)))
                              for ln in lines], indent=1))
        else:
            print("\n".join(lines))
        return 0
    if args.json:
        print(json.dumps(model_to_json(model), indent=1))
    else:
        print("\n".join(summary_lines(model)))
    return 0


def cmd_validate(args) -> int:
    from .validate import validate_files
    failures = validate_files(args.files, args.include_dir, args.allow_outside)
    return EXIT_BAD_INPUT if failures else 0


def cmd_run(args) -> int:
    from .runtime.run import run_lems
    written = run_lems(Path(args.file), args.backend, Path(args.out) if args.out else None,
                       overrides=args.set, param_globs=args.params,
                       include_dirs=args.include_dir, allow_outside=args.allow_outside,
                       backend_options=_backend_options(args))
    for path in written:
        print(f"wrote {path}")
    return 0


def _backend_options(args) -> dict:
    if args.backend in ("neuron", "jax"):
        return {"integration": args.integration}
    if args.integration != "exact":
        raise ModelError(f"--integration {args.integration} is a neuron backend option")
    return {}


def cmd_convert(args) -> int:
    from .runtime.convert import convert_command
    return convert_command(args)


def cmd_omv(args) -> int:
    for folder in args.folders:        # else a typo reads as "0 of 0 tests passed"
        if not Path(folder).is_dir():
            raise ModelError(f"no such folder: {folder}")
    from .runtime.omv_command import omv_command
    return omv_command(args)


def cmd_tune(args) -> int:
    from .runtime.tune import tune_command
    return tune_command(args)


COMMANDS = {"inspect": cmd_inspect, "validate": cmd_validate, "run": cmd_run,
            "convert": cmd_convert, "omv": cmd_omv, "tune": cmd_tune}


def _check_out_dir(args) -> None:
    """``-o DIR`` naming an existing file would fail only when the results are written:
    after a whole ``tune``, say.  Refuse it before any work."""
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ModelError(f"-o {out}: exists and is not a folder")


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_xla()             # before anything imports jax (backends/jax/xla_flags.py)
    try:
        _check_out_dir(args)
        code = COMMANDS[args.command](args)
        sys.stdout.flush()      # a closed pipe fails here, not in Python's exit
        return code
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:     # the reader went away (`inspect ... | head`): stop quietly
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
