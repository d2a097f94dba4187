"""The NeuroML2 CoreTypes (LEMS definitions of every NeuroML element), read from jNeuroML.

We do not ship a copy: the jNeuroML jar bundled with pyNeuroML holds the CoreTypes that the
reference simulator uses, so reading them from there keeps us in step with it.  Members are
read with :mod:`zipfile` (no Java needed) once per process.

Only bytes come out of here; parsing goes through the hardened parser in
:mod:`nml_gradiff.ingest.xml` like any other file.
"""

from __future__ import annotations

import functools
import importlib.util
import re
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
    try:
        with zipfile.ZipFile(jar) as zf:
            out = {n[len(_MEMBER_DIR):]: zf.read(n) for n in zf.namelist()
                   if re.fullmatch(re.escape(_MEMBER_DIR) + r"[^/]+\.xml", n)}
    except (OSError, zipfile.BadZipFile) as e:
        raise InstallationError(f"cannot read the jNeuroML jar {jar}: {e}") from e
    missing = CORE_FILES - out.keys()
    if missing:
        raise InstallationError(f"{jar} lacks CoreTypes members: {', '.join(sorted(missing))}")
    return out


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
