"""Write changed parameter values back into a copy of the model's NeuroML/LEMS files.

``tune`` ends with the tuned model as files a user can open, diff against the original and
simulate with any NeuroML tool.  Every file of the model (the named file and everything it
includes, bundled CoreTypes excepted) is copied under the output folder with its layout kept,
so relative ``<include>``s still resolve; files found through ``-I`` folders are placed so
that the copy loads without them, and the copy is checked to load on its own.  A tuned value
replaces the attribute it was read from (:class:`~nml_gradiff.ir.mechanism.Origin`), written
with its internal unit.  Nothing is written unless every value can be placed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from lxml import etree

from ..errors import ModelError
from ..ingest import xml
from ..ingest.units import UnitSystem
from ..ir.mechanism import Parameter

__all__ = ["quantity_text", "write_values"]


def quantity_text(value: float, param: Parameter, units: UnitSystem) -> str:
    """``value`` (internal unit) as NeuroML text, checked to parse back to the same value."""
    plain = param.unit in ("", "1")
    text = repr(float(value)) if plain else f"{float(value)!r}{param.unit}"
    dim = units.dimension(param.dimension or "none")
    back = units.parse_quantity(text, dim).internal       # as ingest reads it
    if abs(back - value) > 1e-12 * max(abs(value), 1e-300):
        raise ModelError(f"cannot write {param.path} = {value!r} {param.unit}: "
                         f"'{text}' reads back as {back!r}")
    return text


def _tag(root, origin) -> str:
    """The local name of the one element on ``origin.line`` that has the attribute."""
    found = [el for el in root.iter() if isinstance(el.tag, str)
             and el.sourceline == origin.line and origin.attribute in el.attrib]
    if len(found) != 1:
        raise ModelError(f"cannot locate attribute '{origin.attribute}' on line "
                         f"{origin.line} ({len(found)} candidates)", file=origin.file)
    return etree.QName(found[0]).localname


_ATTR = r"""[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*')"""


def _line_start(text: str, line: int) -> int:
    start = 0
    for _ in range(line - 1):            # XML counts lines by "\n" only
        start = text.index("\n", start) + 1
    return start


def _replace(text: str, origin, tag: str, value: str) -> str:
    """Replace one attribute value in the raw text, keeping comments and layout: a start
    tag ``<tag ...>`` that begins on ``origin.line`` is matched whole, then the attribute
    inside it."""
    start = _line_start(text, origin.line)
    end = text.find("\n", start)
    start_tag = re.compile(rf"<(?:[\w.-]+:)?{re.escape(tag)}(?:\s+{_ATTR})*\s*/?>")
    attr = re.compile(rf"""(\s{re.escape(origin.attribute)}\s*=\s*)("[^"]*"|'[^']*')""")
    for m in start_tag.finditer(text, start):
        if end != -1 and m.start() > end:
            break
        a = attr.search(text, m.start(), m.end())
        if a is not None:
            quote = a.group(2)[0]
            return text[:a.start(2)] + quote + value + quote + text[a.end(2):]
    raise ModelError(f"cannot locate attribute '{origin.attribute}' of <{tag}> in the text",
                     file=origin.file, line=origin.line)


def _edits(params: list[Parameter], values: dict[str, float],
           units: UnitSystem) -> dict[str, list[tuple]]:
    """file -> [(origin, text)] for every changed value; errors before anything is written."""
    by_path = {p.path: p for p in params}
    edits: dict[str, list[tuple]] = {}
    for path, value in values.items():
        param = by_path.get(path)
        if param is None:
            raise ModelError(f"no parameter '{path}' in the model")
        if param.origin is None:
            raise ModelError(f"cannot write {path} back: its value is not an attribute of "
                             "its own in the source (a ComponentType default or a constant "
                             "inside an expression)")
        edits.setdefault(param.origin.file, []).append(
            (param.origin, quantity_text(value, param, units)))
    return edits


def _common_layout(docs) -> dict[Path, Path]:
    root = Path(os.path.commonpath([str(d.path.parent) for d in docs]))
    return {d.path: d.path.relative_to(root) for d in docs}


def _include_layout(docs, include_dirs) -> dict[Path, Path] | None:
    """Each file relative to the deepest folder it was found in (the entry's own or an
    ``-I`` one): a file that came through ``-I`` lands beside the entry."""
    bases = [docs[-1].path.parent, *(Path(d).resolve() for d in include_dirs)]
    layout = {}
    for doc in docs:
        found = [b for b in bases if doc.path.is_relative_to(b)]
        if not found:
            return None
        layout[doc.path] = doc.path.relative_to(max(found, key=lambda b: len(b.parts)))
    return layout if len(set(layout.values())) == len(layout) else None


def _layouts(docs, include_dirs) -> list[dict[Path, Path]]:
    """Where each file goes in the copy, relative to its root, in the order to try: the
    copy must load without ``-I`` (else it would load the original files through it)."""
    layouts = [_include_layout(docs, include_dirs)] if include_dirs else []
    return [lay for lay in layouts if lay is not None] + [_common_layout(docs)]


def _loads_alone(entry: Path, written: set[Path], allow_outside: bool) -> bool:
    """Whether the copy loads without ``-I``, from exactly the files written."""
    try:
        loaded = {d.path for d in xml.load(entry, (), allow_outside).documents if not d.core}
    except ModelError:
        return False
    return loaded == {p.resolve() for p in written}


def write_values(entry, params: list[Parameter], values: dict[str, float], out_dir,
                 include_dirs=(), allow_outside: bool = False,
                 units: UnitSystem | None = None) -> Path:
    """Copy the model named by ``entry`` into ``out_dir`` with ``values`` (parameter path ->
    internal value) written in; returns the path of the copy of ``entry``."""
    units = units or UnitSystem.standard()
    docs = [d for d in xml.load(entry, include_dirs, allow_outside).documents if not d.core]
    edits = _edits(params, values, units)
    unknown = set(edits) - {str(d.path) for d in docs}
    if unknown:
        raise ModelError(f"values come from files outside the model: {sorted(unknown)}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for layout in _layouts(docs, include_dirs):
        staging = Path(tempfile.mkdtemp(prefix=".nmlg-", dir=out_dir.parent))
        try:
            for doc in docs:
                _write_doc(doc, edits.get(str(doc.path), []), staging / layout[doc.path])
            if _loads_alone(staging / layout[docs[-1].path],
                            {staging / rel for rel in layout.values()}, allow_outside):
                if out_dir.exists():
                    shutil.rmtree(out_dir)
                staging.rename(out_dir)
                return out_dir / layout[docs[-1].path]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise ModelError("cannot write a copy of the model that loads on its own (without -I): "
                     "put the files it includes beside it or below its folder")


def _write_doc(doc, edits: list[tuple], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not edits:
        shutil.copyfile(doc.path, target)
        return
    tree = xml.parse_file(doc.path)
    encoding = tree.getroottree().docinfo.encoding or "UTF-8"
    text = doc.path.read_bytes().decode(encoding)
    for origin, value in edits:
        text = _replace(text, origin, _tag(tree, origin), value)
    target.write_bytes(text.encode(encoding))
