"""The one entry point: ``nml-gradiff COMMAND ...``.

Errors in the user's input (a model file, an option) print one line and exit with status 2;
see :mod:`nml_gradiff.errors`.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import ModelError
from .inspect_report import model_to_json, params_lines, summary_lines

EXIT_BAD_INPUT = 2


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-I", "--include-dir", action="append", default=[], metavar="DIR",
                   help="extra folder to search for included files (after the including "
                        "file's own folder)")
    p.add_argument("--allow-outside", action="store_true",
                   help="allow includes that leave the model's folder and the -I folders")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nml-gradiff",
        description="Compile NeuroML2/LEMS models, with forward-sensitivity equations.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show what a model file defines")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--params", nargs="*", metavar="GLOB", default=None,
                   help="print the tunable parameters as 'PATH VALUE UNIT', optionally "
                        "only those matching shell-style GLOBs")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change a parameter first (VALUE in the unit --params prints, or "
                        "a NeuroML quantity such as 120mS_per_cm2)")
    _add_model_options(p)

    p = sub.add_parser("validate", help="check many model files: XSD and ingest")
    p.add_argument("files", nargs="+")
    _add_model_options(p)
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


COMMANDS = {"inspect": cmd_inspect, "validate": cmd_validate}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
