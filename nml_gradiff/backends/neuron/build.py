"""Compile mod files with ``nrnivmodl``, cached by content.

:func:`build` returns the compiled mechanism library for a set of mod files, compiling only
when that exact set (and that ``nrnivmodl``) has never been built before:

* the build folder is ``<cache>/<key>/`` where ``key`` is the sha256 of the sorted
  ``(file name, content without its COMMENT blocks)`` pairs (the header's source path and
  command change nothing nocmodl compiles), the NEURON version and a digest of the content
  of NEURON's library (``libnrniv``; no path, so a new virtual environment with the same
  NEURON reuses the cache); ``<cache>`` is ``cache_dir``, else
  ``$NML_GRADIFF_CACHE``, else ``~/.cache/nml-gradiff/neuron``;
* a build runs in a fresh temporary folder beside it and is renamed into place only when the
  library exists, so a build folder is always complete; when two processes build the same key,
  the second rename fails and that process uses the winner's folder;
* a failed build raises :class:`BuildError` with the tail of the nrnivmodl output.

NEURON cannot load a mechanism library twice, or two libraries defining the same mechanism, in
one process: load the returned path (``neuron.load_mechanisms(path.parent.parent)`` or
``h.nrn_load_dll(str(path))``) in a fresh process per library, e.g. a subprocess per run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["build", "BuildError", "nrnivmodl", "cache_root", "library_in"]

#: Where nrnivmodl leaves the library, per NEURON version and platform (first match wins).
_LIBRARY_GLOBS = ("*/libnrnmech.so", "*/libnrnmech.dylib", "*/.libs/libnrnmech.so",
                  "*/.libs/libnrnmech.dylib", "nrnmech.dll")
_TAIL_LINES = 40


class BuildError(RuntimeError):
    """nrnivmodl failed: generated code NEURON does not accept (a bug or an unsupported
    construct), or a broken NEURON installation."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("NML_GRADIFF_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "nml-gradiff" / "neuron"


def nrnivmodl() -> Path:
    """The nrnivmodl of the running Python's ``neuron`` package, else the one on PATH."""
    beside = Path(sys.executable).parent / "nrnivmodl"
    if beside.is_file() and importlib.util.find_spec("neuron") is not None:
        return beside
    found = shutil.which("nrnivmodl")
    if found is None:
        raise BuildError("nrnivmodl not found: install NEURON (pip install neuron)")
    return Path(found)


def _neuron_version(tool: Path) -> str:
    """What the compiled code depends on: the NEURON version and the content (not the path)
    of the NEURON library it links against, so that a fresh virtual environment with the
    same NEURON reuses the builds of an earlier one (CI creates a venv in a new temporary
    folder every run)."""
    lib = _libnrniv(tool)
    return f"{_version(tool)} {_file_digest(lib) if lib else tool.resolve()}"


@functools.lru_cache(maxsize=8)
def _version(tool: Path) -> str:
    try:
        return importlib.metadata.version("neuron")
    except importlib.metadata.PackageNotFoundError:
        nrniv = tool.parent / "nrniv"
        out = subprocess.run([str(nrniv), "--version"], capture_output=True, text=True)
        return out.stdout.strip()


def _libnrniv(tool: Path) -> Path | None:
    """NEURON's main library: in the pip package's ``.data/lib`` for the pip wrapper beside
    our Python, else in ``<prefix>/lib`` beside the ``bin`` of the nrnivmodl found."""
    folder = tool.resolve().parent.parent / "lib"
    spec = importlib.util.find_spec("neuron")
    if tool.parent == Path(sys.executable).parent and spec is not None \
            and spec.submodule_search_locations:
        folder = Path(spec.submodule_search_locations[0]) / ".data" / "lib"
    for name in ("libnrniv.so", "libnrniv.dylib"):
        if (folder / name).is_file():
            return folder / name
    return None


def _legacy_version(tool: Path) -> str:
    """The key ingredient of caches made before the key stopped naming paths: their builds
    are as good, and rebuilding a warm cache costs minutes. (Drop after a release.)"""
    return f"{_version(tool)} {tool.resolve()}"


def _file_digest(path: Path) -> str:
    st = path.stat()
    return _digest(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _digest(path: Path, mtime_ns: int, size: int) -> str:
    """Read once per process and version of the file (9 MB: ~20 ms)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


#: NMODL's block comments: the generated header names the source file and the command,
#: which nocmodl ignores.
_COMMENT_BLOCK = re.compile(r"^COMMENT\b.*?^ENDCOMMENT\b", re.MULTILINE | re.DOTALL)


def _key(files: dict[str, str], version: str) -> str:
    """The code, not the comments: the same channel read from another folder (a model copied
    to a temporary folder by every test or ``tune`` run) reuses the build."""
    h = hashlib.sha256(version.encode())
    for name in sorted(files):
        code = _COMMENT_BLOCK.sub("COMMENT", files[name])
        h.update(b"\0" + name.encode() + b"\0" + code.encode())
    return h.hexdigest()[:32]


def _file_names(mod_files: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, text in mod_files.items():
        stem = name[:-4] if name.endswith(".mod") else name
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", stem):
            raise ValueError(f"{name!r} is not a mod file name (a mechanism name, optionally "
                             "with .mod)")
        out[stem + ".mod"] = text
    return out


def library_in(folder: Path) -> Path | None:
    """The compiled mechanism library in a build folder, if there is one."""
    for pattern in _LIBRARY_GLOBS:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def build(mod_files: dict[str, str], cache_dir: str | os.PathLike | None = None) -> Path:
    """Compile ``{name: mod text}`` (names with or without ``.mod``); the library's path.

    Reuses a complete earlier build of the same files.  Raises :class:`BuildError` when
    nrnivmodl fails.
    """
    if not mod_files:
        raise ValueError("nothing to build: no mod files")
    files = _file_names(mod_files)
    tool = nrnivmodl()
    root = cache_root(cache_dir)
    final = root / _key(files, _neuron_version(tool))
    for folder in (final, root / _key(files, _legacy_version(tool))):
        if folder.is_dir() and (lib := library_in(folder)) is not None:
            return lib
    root.mkdir(parents=True, exist_ok=True)
    # a first build takes 20 s to minutes, with nothing else on the terminal: say why
    print(f"nml-gradiff: compiling {len(files)} mod files with nrnivmodl (once for these "
          f"mechanisms; cached in {root})", file=sys.stderr, flush=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        _compile(tool, work, files)
        _publish(work, final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    lib = library_in(final)
    if lib is None:  # another process published an incomplete folder: cannot happen by design
        raise BuildError(f"no mechanism library in {final}")
    return lib


def _compile(tool: Path, work: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (work / name).write_text(text)
    proc = subprocess.run([str(tool)], cwd=work, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (work / "nrnivmodl.log").write_text(log)
    if proc.returncode != 0 or library_in(work) is None:
        tail = "\n".join(log.splitlines()[-_TAIL_LINES:])
        raise BuildError(f"nrnivmodl failed (exit {proc.returncode}) on "
                         f"{', '.join(sorted(files))}:\n{tail}")


def _publish(work: Path, final: Path) -> None:
    """Rename the finished build into place; if another process was first, keep theirs."""
    try:
        os.rename(work, final)
    except OSError:
        if library_in(final) is None:
            raise
