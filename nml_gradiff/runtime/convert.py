"""``nml-gradiff convert FILE_OR_DIR... --target T -o OUT``.

A folder named on the command line is the model collection: a file found in it may include
any file under that folder (it is added as an include folder, as with ``-I``), which is how
model repositories share channel files between cells (``../channels/Kd.channel.nml``).
Nothing outside the folders named, or the ``-I`` folders, is read unless ``--allow-outside``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ..errors import ModelError
from .batch import Entry, Task, base_of, expand, out_folder, run_batch, summary

EXIT_BAD_INPUT = 2


def _converter(target: str):
    if target == "neuron":
        from ..backends.neuron.convert import convert_file
        return convert_file
    if target == "lems":
        from ..backends.lems.convert import convert_file
        return convert_file
    if target == "jax":
        from ..backends.jax.convert import convert_file
        return convert_file
    raise ValueError(target)


def tasks_for(inputs: list[str], out: Path, include_dirs: tuple) -> tuple[list[Task], list]:
    """One task per model file; and the folders the files were found in."""
    bases = [Path(i) if Path(i).is_dir() else Path(i).parent for i in inputs]
    folders = [Path(i) for i in inputs if Path(i).is_dir()]
    tasks = []
    for f in expand(inputs):
        collection = base_of(f, folders)
        dirs = include_dirs + ((str(collection),) if collection is not None else ())
        tasks.append(Task(f, out_folder(out, f, bases), dirs))
    return tasks, bases


def _check_options(args) -> None:
    """Option errors that would fail every model of the batch alike: say so once."""
    if args.target == "lems" and not args.params:
        raise ModelError("--target lems needs --params GLOB... (the parameters whose "
                         "sensitivities to emit; `nml-gradiff inspect FILE --params` lists "
                         "them)")


def outcome_line(entry: Entry) -> str:
    """``FAILED file: reason`` / ``skipped file: reason``; a reason that starts with the
    file's own location (``file:line: <element>: ...``) is not prefixed with it again."""
    word = "FAILED" if entry.status == "failed" else entry.status
    reason = entry.reason or ""
    names = {entry.file, str(Path(entry.file).resolve())}
    if any(reason.startswith(n + ":") for n in names):
        return f"{word} {reason}"
    return f"{word} {entry.file}: {reason}"


def convert_command(args) -> int:
    _check_options(args)
    out = Path(args.out)
    tasks, bases = tasks_for(args.inputs, out, tuple(args.include_dir))
    convert = partial(_converter(args.target), allow_outside=args.allow_outside)
    settings = {"target": args.target}
    if args.target in ("lems", "jax", "neuron"):       # which sensitivities to emit
        convert = partial(convert, params=tuple(args.params))
        settings["params"] = list(args.params)
    if args.target == "lems":       # how sensitivity states are declared (docs/lems.md)
        convert = partial(convert, sensitivity_units=args.sensitivity_units,
                          simulator=args.lems_simulator)
        settings["sensitivity_units"] = args.sensitivity_units
        settings["lems_simulator"] = args.lems_simulator
    entries = run_batch(tasks, out, convert, settings, bases=bases, jobs=max(1, args.jobs),
                        allow_outside=args.allow_outside)
    for e in entries:
        if e.status in ("failed", "skipped"):
            print(outcome_line(e))
    print(summary(entries) + f"; report: {out / 'report.json'}")
    return EXIT_BAD_INPUT if any(e.status == "failed" for e in entries) else 0
