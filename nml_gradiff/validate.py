"""``nml-gradiff validate FILE_OR_DIR...``: XSD plus our own ingest checks, one line per file.

A folder stands for its NeuroML (``*.nml``) and LEMS (``LEMS_*.xml``) files, found and
allowed to include each other as ``convert`` does (docs/convert.md)."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from .errors import ModelError
from .ingest.model import load_model
from .ingest.schema import validate_xsd


def validate_one(path: str, include_dirs, allow_outside) -> str | None:
    """None when ``path`` is fine, else the first problem found."""
    try:
        problems = validate_xsd(path)
        if problems:
            return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                  else "")
        load_model(path, include_dirs=include_dirs, allow_outside=allow_outside)
    except ModelError as exc:
        return str(exc)
    return None


def _expand(inputs: list[str], include_dirs) -> list[tuple[str, tuple]]:
    """(file, its include folders): a folder's files may include files under it."""
    from .runtime.batch import expand
    found = []
    for item in inputs:
        if Path(item).is_dir():
            found += [(str(f), (*include_dirs, item)) for f in expand([item])]
        else:           # a missing file is reported on its own line
            found.append((item, tuple(include_dirs)))
    return found


def validate_files(inputs: list[str], include_dirs=(), allow_outside=False) -> int:
    """Print one line per file; return the number of files that failed."""
    failures = 0
    files = _expand(inputs, include_dirs)
    paths = [f for f, _ in files]
    for path, dirs in tqdm(files, desc="validate", unit="file", disable=None,
                           file=sys.stderr):
        problem = validate_one(path, dirs, allow_outside)
        if problem is None:
            tqdm.write(f"ok     {path}")
        else:
            failures += 1
            tqdm.write(f"FAILED {path}: {problem}")
    if len(paths) > 1:
        print(f"{len(paths) - failures} of {len(paths)} files valid")
    return failures
