"""The NeuroML2 CoreTypes (LEMS definitions of every NeuroML element), read from jNeuroML.

We do not ship a copy: the jNeuroML jar bundled with pyNeuroML holds the CoreTypes that the
reference simulator uses, so reading them from there keeps us in step with it.  Members are
read with :mod:`zipfile` (no Java needed) once per process.  Reading them from the jar costs
~0.2 s of CPU (its central directory lists ~13,000 entries), a large share of a small
conversion, so the members are also kept in an on-disk cache (:func:`_cached_members`) keyed by the
jar's path, size and modification time and checked against a SHA-256 per member.

Only bytes come out of here; parsing goes through the hardened parser in
:mod:`nml_gradiff.ingest.xml` like any other file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

#: Basenames a model may include without having the file: they resolve to the bundled member.
CORE_FILES = frozenset({
    "Cells.xml", "Networks.xml", "Simulation.xml", "Channels.xml", "Synapses.xml",
    "Inputs.xml", "PyNN.xml", "NeuroMLCoreDimensions.xml", "NeuroMLCoreCompTypes.xml",
    "NeuroML2CoreTypes.xml",
})

_MEMBER_DIR = "NeuroML2CoreTypes/"
_JAR_GLOB = "jNeuroML-*-jar-with-dependencies.jar"


class InstallationError(Exception):
    """nml-gradiff's environment is incomplete (not the user's model's fault)."""


def _version_key(jar: Path) -> tuple:
    """Sort key: numeric version in the jar's name, then mtime (newest last)."""
    m = re.match(r"jNeuroML-([0-9][0-9.]*)", jar.name)
    nums = tuple(int(x) for x in m.group(1).strip(".").split(".") if x) if m else ()
    return nums, jar.stat().st_mtime


@functools.lru_cache(maxsize=None)
def jar_path() -> Path:
    """The newest jNeuroML jar inside the installed pyneuroml package."""
    # find_spec, not import: importing pyneuroml drags in matplotlib and friends.
    spec = importlib.util.find_spec("pyneuroml")
    if spec is None or not spec.submodule_search_locations:
        raise InstallationError(
            "pyneuroml is not installed: the NeuroML2 CoreTypes are read from the jNeuroML jar "
            "it bundles (pip install pyneuroml)")
    jars = [j for loc in spec.submodule_search_locations
            for j in (Path(loc) / "lib").glob(_JAR_GLOB)]
    if not jars:
        raise InstallationError(
            f"no {_JAR_GLOB} found in pyneuroml's lib folder "
            f"({', '.join(spec.submodule_search_locations)}); reinstall pyneuroml")
    return max(jars, key=_version_key)


def jar_label() -> str:
    """How the jar appears in pseudo paths and messages, e.g. ``<jNeuroML-0.14.0.jar>``."""
    name = jar_path().name.replace("-jar-with-dependencies", "")
    return f"<{name}>"


@functools.lru_cache(maxsize=None)
def _members() -> dict[str, bytes]:
    """Every ``NeuroML2CoreTypes/*.xml`` member of the jar, by basename."""
    jar = jar_path()
    out = _cached_members(jar)
    if out is None:
        out = _read_jar(jar)
        _store_members(jar, out)
    missing = CORE_FILES - out.keys()
    if missing:
        raise InstallationError(f"{jar} lacks CoreTypes members: {', '.join(sorted(missing))}")
    return out


def _read_jar(jar: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(jar) as zf:
            return {n[len(_MEMBER_DIR):]: zf.read(n) for n in zf.namelist()
                    if re.fullmatch(re.escape(_MEMBER_DIR) + r"[^/]+\.xml", n)}
    except (OSError, zipfile.BadZipFile) as e:
        raise InstallationError(f"cannot read the jNeuroML jar {jar}: {e}") from e


# ------------------------------------------------------------------------- on-disk cache

def cache_dir() -> Path:
    """``$NML_GRADIFF_CORETYPES_CACHE``, else ``~/.cache/nml-gradiff/coretypes``."""
    env = os.environ.get("NML_GRADIFF_CORETYPES_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "nml-gradiff" / "coretypes"


def _jar_key(jar: Path) -> dict:
    st = jar.stat()
    return {"jar": str(jar), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _entry(jar: Path) -> Path:
    key = json.dumps(_jar_key(jar), sort_keys=True).encode()
    return cache_dir() / hashlib.sha256(key).hexdigest()[:24]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cached_members(jar: Path) -> dict[str, bytes] | None:
    """The members cached for this very jar file, or None (no cache, another jar at that
    path, or any member not as stored: a damaged cache is ignored, never trusted)."""
    try:
        entry = _entry(jar)
        index = json.loads((entry / "index.json").read_text())
        if index.get("key") != _jar_key(jar):
            return None
        out = {}
        for name, digest in index["members"].items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+\.xml", name):
                return None
            data = (entry / name).read_bytes()
            if _digest(data) != digest:
                return None
            out[name] = data
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _store_members(jar: Path, members: dict[str, bytes]) -> None:
    """Write the cache entry into a temporary folder and rename it into place, so a reader
    sees a whole entry or none; a cache that cannot be written is only slower."""
    try:
        entry = _entry(jar)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        for name, data in members.items():
            (tmp / name).write_bytes(data)
        index = {"key": _jar_key(jar), "members": {n: _digest(d) for n, d in members.items()}}
        (tmp / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
        shutil.rmtree(entry, ignore_errors=True)        # a damaged entry: replaced
        try:
            os.replace(tmp, entry)
        except OSError:                 # another process stored it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass


def core_names() -> list[str]:
    """Basenames of all bundled CoreTypes files, sorted."""
    return sorted(_members())


def is_core_name(basename: str) -> bool:
    return basename in CORE_FILES


def pseudo_path(basename: str) -> Path:
    """``<jNeuroML-0.14.0.jar>/NeuroML2CoreTypes/Cells.xml``: clear in messages, never on disk."""
    return Path(jar_label()) / _MEMBER_DIR / basename


def core_file(basename: str) -> tuple[Path, bytes]:
    """``(pseudo_path, content)`` of one bundled CoreTypes file; KeyError if not bundled."""
    data = _members()[basename]
    return pseudo_path(basename), data
