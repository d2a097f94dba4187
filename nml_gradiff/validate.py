"""``nml-gradiff validate FILE...``: XSD plus our own ingest checks, one line per file."""

from __future__ import annotations

import sys

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


def validate_files(paths: list[str], include_dirs=(), allow_outside=False) -> int:
    """Print one line per file; return the number of files that failed."""
    failures = 0
    for path in tqdm(paths, desc="validate", unit="file", disable=None, file=sys.stderr):
        problem = validate_one(path, include_dirs, allow_outside)
        if problem is None:
            tqdm.write(f"ok     {path}")
        else:
            failures += 1
            tqdm.write(f"FAILED {path}: {problem}")
    if len(paths) > 1:
        print(f"{len(paths) - failures} of {len(paths)} files valid")
    return failures
