"""Batch conversion of many model files: worker processes, progress, report, up-to-date skip.

One model that fails does not stop the batch: its entry in ``OUT/report.json`` says why.
A model whose inputs (the file and everything it includes), target and options hash to what
its ``manifest.json`` recorded, and whose outputs are all still there, is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .. import __version__
from ..errors import ModelError
from ..ingest import xml

#: convert(path) -> {relative output name: text}; raises ModelError for bad/unsupported input
Converter = Callable[[Path], dict[str, str]]


@dataclass
class Entry:
    file: str
    status: str                    # "ok", "failed", "up-to-date"
    out: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)


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


def input_hash(path: Path, settings: dict, include_dirs=(), allow_outside=False) -> str:
    """Hash of every file the model reads, our version and the conversion settings."""
    h = hashlib.sha256(f"{__version__}\n{json.dumps(settings, sort_keys=True)}".encode())
    for doc in xml.load(path, include_dirs=include_dirs,
                        allow_outside=allow_outside).documents:
        if not doc.core:
            h.update(str(doc.path).encode() + b"\0" + Path(doc.path).read_bytes())
    return h.hexdigest()


def out_folder(out_root: Path, path: Path, bases: list[Path]) -> Path:
    """OUT/<path relative to the folder it was found in, without suffix>."""
    for base in bases:
        try:
            rel = path.resolve().relative_to(base.resolve())
            return out_root / rel.parent / rel.stem
        except ValueError:
            continue
    return out_root / path.stem


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


def convert_one(path: Path, folder: Path, convert: Converter, settings: dict,
                include_dirs=(), allow_outside=False) -> Entry:
    start = time.perf_counter()
    entry = Entry(str(path), "ok", str(folder))
    try:
        digest = input_hash(path, settings, include_dirs, allow_outside)
        if _up_to_date(folder, digest):
            entry.status = "up-to-date"
        else:
            files = convert(path)
            _write(folder, files, digest, settings)
            entry.counts = {"files": len(files)}
    except ModelError as exc:
        entry.status, entry.reason = "failed", str(exc)
    except Exception as exc:        # a bug of ours: keep going, but say so loudly
        entry.status = "failed"
        entry.reason = f"internal error: {type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    entry.seconds = round(time.perf_counter() - start, 3)
    return entry


def run_batch(files: list[Path], out_root: Path, convert: Converter, settings: dict, *,
              bases: list[Path], jobs: int = 1, include_dirs=(),
              allow_outside=False) -> list[Entry]:
    """Convert every file (in ``jobs`` worker processes), write OUT/report.json."""
    tasks = [(f, out_folder(out_root, f, bases)) for f in files]
    args = (convert, settings, include_dirs, allow_outside)
    bar = tqdm(total=len(tasks), desc="convert", unit="model", disable=None, file=sys.stderr)
    entries: list[Entry] = []
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(convert_one, f, d, *args) for f, d in tasks]
            for fut in futures:
                entries.append(fut.result())
                bar.update()
    else:
        for f, d in tasks:
            entries.append(convert_one(f, d, *args))
            bar.update()
    bar.close()
    out_root.mkdir(parents=True, exist_ok=True)
    report = {"generator": f"nml-gradiff {__version__}", "settings": settings,
              "models": [asdict(e) for e in entries]}
    (out_root / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return entries


def summary(entries: list[Entry]) -> str:
    counts = {s: sum(e.status == s for e in entries) for s in ("ok", "up-to-date", "failed")}
    return (f"{len(entries)} models: {counts['ok']} converted, {counts['up-to-date']} "
            f"up to date, {counts['failed']} failed")
