"""Why a model file is not standalone: where the definitions it lacks live.

Model repositories split a model over files (one per channel, a cell file, a LEMS file that
includes them all). Converted on its own, a cell or channel file then fails with "unknown
ComponentType 'T'" or "uses unknown ionChannel 'X'". For a batch report that is not a useful
reason; this module finds, among the files under the folders of the batch, the file that
defines the missing name and the LEMS/NeuroML files that include the failing file, so the
reason can say "not standalone: needs ionChannel 'IT' from IT.channel.nml, which it does not
include; used by LEMS_IT.nernstCa.xml" (paths relative to the failing file's folder).

Files are read with the hardened parser of :mod:`..ingest.xml` (comments are dropped, so a
commented-out definition does not count); a file that does not parse is left out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ..errors import ModelError
from ..ingest import xml

#: Ingest messages that mean "defined elsewhere": (regex, what the name is).
_MISSING = (
    (re.compile(r"unknown ComponentType '([^']+)'"), "ComponentType"),
    (re.compile(r"uses unknown ionChannel '([^']+)'"), "ionChannel"),
    (re.compile(r"uses unknown concentrationModel '([^']+)'"), "concentrationModel"),
)
#: How many includers a reason names at most.
_MAX_USERS = 2


def missing_name(reason: str) -> tuple[str, str] | None:
    """(kind, name) when ``reason`` says a definition is missing, else None."""
    for pattern, kind in _MISSING:
        if m := pattern.search(reason):
            return kind, m.group(1)
    return None


@dataclass
class Index:
    """Who defines what and who includes whom, over every .nml/.xml file under some folders."""

    bases: list[Path]
    types: dict[str, list[Path]] = field(default_factory=dict)   # ComponentType name -> files
    ids: dict[str, list[Path]] = field(default_factory=dict)     # top-level id -> files
    includers: dict[Path, list[Path]] = field(default_factory=dict)

    @classmethod
    def of(cls, bases: list[Path]) -> "Index":
        index = cls([b.resolve() for b in bases])
        for base in index.bases:
            for path in sorted(base.rglob("*")):
                if path.suffix in (".nml", ".xml") and path.is_file():
                    index._add(path.resolve())
        return index

    def _add(self, path: Path) -> None:
        try:
            root = xml.parse_file(path)
        except (ModelError, OSError):
            return
        for el in root:
            if not isinstance(el.tag, str):
                continue
            tag = etree.QName(el).localname
            if tag == "ComponentType" and el.get("name"):
                self.types.setdefault(el.get("name"), []).append(path)
            elif tag.lower() == "include":
                href = el.get("href") or el.get("file")
                if href and not re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", href):
                    target = (path.parent / href).resolve()
                    self.includers.setdefault(target, []).append(path)
            elif el.get("id"):
                self.ids.setdefault(el.get("id"), []).append(path)

    def definers(self, kind: str, name: str) -> list[Path]:
        return self.types.get(name, []) if kind == "ComponentType" else self.ids.get(name, [])

    def users(self, path: Path) -> list[Path]:
        """The files that include ``path``, directly or not, that nobody includes in turn
        (the entry points a user would convert), LEMS files first."""
        seen, todo, tops = {path}, [path], []
        while todo:
            for parent in self.includers.get(todo.pop(), []):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
                    if parent not in self.includers:
                        tops.append(parent)
        return sorted(tops, key=lambda p: (not p.name.startswith("LEMS_"), str(p)))

    @staticmethod
    def show(path: Path, here: Path) -> str:
        """``path`` as an include in ``here`` would name it."""
        return os.path.relpath(path, here.parent)


def explain(path: Path, reason: str, index: Index) -> str | None:
    """A "not standalone: ..." reason for a file whose ``reason`` names a missing definition
    that some other file under the batch's folders provides; None otherwise."""
    missing = missing_name(reason)
    if missing is None:
        return None
    kind, name = missing
    here = path.resolve()
    definers = [p for p in index.definers(kind, name) if p != here]
    if not definers:
        return None
    text = (f"not standalone: needs {kind} '{name}' from "
            + ", ".join(index.show(p, here) for p in definers[:_MAX_USERS])
            + ", which it does not include")
    users = index.users(here)
    if users:
        text += "; used by " + ", ".join(index.show(p, here) for p in users[:_MAX_USERS])
        if len(users) > _MAX_USERS:
            text += f" (and {len(users) - _MAX_USERS} more)"
    return text
