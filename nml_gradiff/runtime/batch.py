"""Batch conversion of many model files: worker processes, progress, report, up-to-date skip.

One model that fails does not stop the batch: its entry in ``OUT/report.json`` says why, and
which kind of failure it is (:data:`CATEGORIES`). A file with nothing to emit (a morphology, a
file of ComponentType definitions) is "skipped", with the reason. A model whose inputs (the
file and everything it includes), target and options hash to what its ``manifest.json``
recorded, and whose outputs are all still there, is "up-to-date" and not converted again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .. import __version__
from ..errors import ModelError, NothingToConvert, UnsupportedError
from ..ingest import xml
from . import needs

#: convert(path, include_dirs=...) -> {relative output name: text}; raises ModelError for
#: bad or unsupported input, NothingToConvert for a file with nothing to emit
Converter = Callable[..., dict[str, str]]


#: Kinds of failure, in the order the summary lists them.
CATEGORIES = ("unsupported", "not standalone", "input error", "internal error")
STATUSES = ("ok", "up-to-date", "skipped", "failed")


@dataclass
class Entry:
    file: str
    status: str                    # one of STATUSES
    out: str | None = None
    reason: str | None = None
    category: str | None = None    # failed: one of CATEGORIES
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    file: Path
    folder: Path                   # OUT/<where the file was found>
    include_dirs: tuple = ()


def expand(inputs: list[str]) -> list[Path]:
    """Files as given; folders searched for NeuroML (*.nml) and LEMS (LEMS_*.xml) files."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*")
                            if q.suffix == ".nml" or (q.suffix == ".xml"
                                                      and q.name.startswith("LEMS_")))
        elif p.is_file():
            files.append(p)
        else:
            raise ModelError(f"no such file or folder: {item}")
    return files


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """Hash of nml-gradiff's own code and templates: the version string alone does not
    change while the code does (a source checkout, a development install), and outputs
    emitted by other code must not pass as up to date."""
    from ..templating import template_folder
    package = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(__version__.encode())
    sources = sorted(package.rglob("*.py"))
    for path in sources:
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    for backend in ("neuron", "jax", "lems"):
        folder = template_folder(backend)
        for t in sorted(folder.iterdir(), key=lambda t: t.name):
            if t.name.endswith(".j2"):
                h.update(f"{backend}/{t.name}".encode() + b"\0" + t.read_bytes())
    return h.hexdigest()


def input_hash(path: Path, settings: dict, include_dirs=(), allow_outside=False) -> str:
    """Hash of every file the model reads, our code and the conversion settings."""
    h = hashlib.sha256(f"{code_fingerprint()}\n{json.dumps(settings, sort_keys=True)}"
                       .encode())
    for doc in xml.load(path, include_dirs=include_dirs,
                        allow_outside=allow_outside).documents:
        if not doc.core:
            h.update(str(doc.path).encode() + b"\0" + Path(doc.path).read_bytes())
    return h.hexdigest()


def out_folder(out_root: Path, path: Path, bases: list[Path]) -> Path:
    """OUT/<path relative to the folder it was found in, without suffix>."""
    base = base_of(path, bases)
    if base is None:
        return out_root / path.stem
    rel = path.resolve().relative_to(base.resolve())
    return out_root / rel.parent / rel.stem


def base_of(path: Path, bases: list[Path]) -> Path | None:
    """The first of ``bases`` that ``path`` lies in."""
    for base in bases:
        if path.resolve().is_relative_to(base.resolve()):
            return base
    return None


def _up_to_date(folder: Path, digest: str) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    data = json.loads(manifest.read_text())
    return data.get("input_hash") == digest and all(
        (folder / name).is_file() for name in data.get("files", []))


def _write(folder: Path, files: dict[str, str], digest: str, settings: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    manifest = {"generator": f"nml-gradiff {__version__}", "input_hash": digest,
                "settings": settings, "files": sorted(files)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _counts(files: dict[str, str]) -> dict:
    return {"files": len(files), "mods": sum(n.endswith(".mod") for n in files),
            "refused mechanisms": len(files.get("UNSUPPORTED.txt", "").splitlines())}


def convert_one(task: Task, convert: Converter, settings: dict, allow_outside=False) -> Entry:
    start = time.perf_counter()
    entry = Entry(str(task.file), "ok", str(task.folder))
    try:
        digest = input_hash(task.file, settings, task.include_dirs, allow_outside)
        if _up_to_date(task.folder, digest):
            entry.status = "up-to-date"
        else:
            files = convert(task.file, include_dirs=task.include_dirs)
            _write(task.folder, files, digest, settings)
            entry.counts = _counts(files)
    except NothingToConvert as exc:
        entry.status, entry.reason = "skipped", str(exc)
    except ModelError as exc:
        entry.status, entry.reason = "failed", str(exc)
        entry.category = "unsupported" if isinstance(exc, UnsupportedError) else "input error"
    except Exception as exc:        # a bug of ours: keep going, but say so loudly
        entry.status, entry.category = "failed", "internal error"
        entry.reason = f"internal error: {type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    entry.seconds = round(time.perf_counter() - start, 3)
    return entry


def _in_workers(tasks: list[Task], args: tuple, jobs: int, bar) -> list[Entry]:
    """convert_one over ``tasks`` in ``jobs`` processes; entries in task order."""
    # imported here: a one-process conversion should not pay for them at start-up
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    entries: dict[int, Entry] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(convert_one, t, *args): i for i, t in enumerate(tasks)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                entries[i] = fut.result()
            except BrokenProcessPool as exc:    # a worker died (killed, out of memory, ...)
                entries[i] = Entry(str(tasks[i].file), "failed", str(tasks[i].folder),
                                   f"internal error: worker process died: {exc}",
                                   "internal error")
            bar.update()
    return [entries[i] for i in range(len(tasks))]


def _explain_missing(entries: list[Entry], bases: list[Path]) -> None:
    """Turn "unknown ComponentType/ionChannel" failures into "not standalone: needs X from
    FILE" where another file under the batch's folders defines X."""
    todo = [e for e in entries if e.category == "input error"
            and needs.missing_name(e.reason or "")]
    if not todo:
        return
    index = needs.Index.of([b for b in bases if b.is_dir()])
    for e in todo:
        if (why := needs.explain(Path(e.file), e.reason, index)) is not None:
            e.reason, e.category = why, "not standalone"


def run_batch(tasks: list[Task], out_root: Path, convert: Converter, settings: dict, *,
              bases: list[Path], jobs: int = 1, allow_outside=False) -> list[Entry]:
    """Convert every task's file (in ``jobs`` worker processes), write OUT/report.json."""
    start = time.perf_counter()
    args = (convert, settings, allow_outside)
    bar = tqdm(total=len(tasks), desc="convert", unit="model", disable=None, file=sys.stderr)
    if jobs > 1 and len(tasks) > 1:
        entries = _in_workers(tasks, args, jobs, bar)
    else:
        entries = []
        for t in tasks:
            entries.append(convert_one(t, *args))
            bar.update()
    bar.close()
    _explain_missing(entries, bases)
    out_root.mkdir(parents=True, exist_ok=True)
    report = {"generator": f"nml-gradiff {__version__}", "settings": settings,
              "summary": summary(entries), "counts": counts(entries),
              "seconds": round(time.perf_counter() - start, 3),
              "models": [asdict(e) for e in entries]}
    (out_root / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return entries


def counts(entries: list[Entry]) -> dict:
    out = {s: sum(e.status == s for e in entries) for s in STATUSES}
    out["failed by category"] = {c: sum(e.category == c for e in entries) for c in CATEGORIES}
    return out


def summary(entries: list[Entry]) -> str:
    n = counts(entries)
    failed = ", ".join(f"{k} {v}" for k, v in n["failed by category"].items() if v)
    noun = "model" if len(entries) == 1 else "models"
    return (f"{len(entries)} {noun}: {n['ok']} converted, {n['up-to-date']} up to date, "
            f"{n['skipped']} with nothing to convert, {n['failed']} failed"
            + (f" ({failed})" if failed else ""))
