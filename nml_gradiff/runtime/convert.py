"""``nml-gradiff convert FILE_OR_DIR... --target T -o OUT``."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from .batch import expand, run_batch, summary

EXIT_BAD_INPUT = 2


def _converter(target: str):
    if target == "neuron":
        from ..backends.neuron.convert import convert_file
        return convert_file
    raise ValueError(target)


def convert_command(args) -> int:
    files = expand(args.inputs)
    bases = [Path(i) if Path(i).is_dir() else Path(i).parent for i in args.inputs]
    convert = partial(_converter(args.target), include_dirs=tuple(args.include_dir),
                      allow_outside=args.allow_outside)
    settings = {"target": args.target}
    entries = run_batch(files, Path(args.out), convert, settings, bases=bases,
                        jobs=max(1, args.jobs), include_dirs=tuple(args.include_dir),
                        allow_outside=args.allow_outside)
    for e in entries:
        if e.status == "failed":
            print(f"FAILED {e.file}: {e.reason}")
    print(summary(entries) + f"; report: {Path(args.out) / 'report.json'}")
    return EXIT_BAD_INPUT if any(e.status == "failed" for e in entries) else 0
