"""The hardened front door: reading model files and resolving their includes.

Model files come from the internet, so everything here assumes a hostile input:

* no entity declarations (billion laughs, external entities reading local files): rejected by
  a scan of the DOCTYPE *before* libxml2 sees the document, and checked again after parsing;
* no network, no DTD loading, no XInclude, libxml2's size/depth limits kept (``huge_tree``
  off), and a cap on the file size;
* includes are resolved by us, never by libxml2, never from the current working directory,
  and only inside the model's folder or an ``-I`` folder unless ``--allow-outside`` is given;
  URLs are refused.

See ``docs/security.md`` for the policy and the include resolution order.

Comments and processing instructions are dropped at parse time, so code downstream only ever
iterates over elements (plus text); trees returned here are shared (the CoreTypes are cached
per process) and must be treated as read-only.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lxml import etree

from ..errors import ModelError
from . import coretypes

#: Default file-size cap in bytes; every entry point takes ``max_bytes`` to override it.
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Include chains deeper than this are refused (and would otherwise exhaust the stack).
MAX_INCLUDE_DEPTH = 100

NEUROML_NS = "http://www.neuroml.org/schema/neuroml2"
_KINDS = {"neuroml": "neuroml", "Lems": "lems"}
_XINCLUDE_NS = ("http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude")


@dataclass(eq=False)
class Document:
    """One parsed file.  ``path`` is the real path (symlinks resolved), or for a bundled
    CoreTypes file a pseudo path such as ``<jNeuroML-0.14.0.jar>/NeuroML2CoreTypes/Cells.xml``."""

    path: Path
    root: etree._Element
    kind: str                   # "neuroml" | "lems"
    core: bool = False          # one of the bundled NeuroML2 CoreTypes (shared, cached)


@dataclass
class Model:
    """A model file with everything it includes, each file once, includes before includers."""

    documents: list[Document]
    root_dir: Path              # real folder of the file the user named

    @property
    def main(self) -> Document:
        """The file the user named (always last: it includes everything else)."""
        return self.documents[-1]

    def with_core(self) -> list[Document]:
        """All bundled CoreTypes first, then this model's own files; none twice."""
        return load_core() + [d for d in self.documents if not d.core]


# ---------------------------------------------------------------------------------- parsing

def parse_file(path, *, max_bytes: int | None = None) -> etree._Element:
    """Parse one file with the hardened parser and return its root element."""
    return parse_bytes(_read(Path(path), max_bytes), Path(path))


def parse_bytes(data: bytes, label) -> etree._Element:
    """Parse ``data`` (named ``label`` in messages) with the hardened parser."""
    _refuse_entity_declarations(data, label)
    parser = etree.XMLParser(          # a fresh parser per call: lxml parsers are not thread-safe
        resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
        dtd_validation=False, attribute_defaults=False, remove_comments=True, remove_pis=True)
    try:
        tree = etree.parse(io.BytesIO(data), parser, base_url=str(label))
    except etree.XMLSyntaxError as e:
        raise ModelError(f"malformed XML: {e.msg}", file=label, line=e.lineno or None) from None
    # Second line of defence (encodings our pre-scan cannot read, e.g. EBCDIC).
    dtd = tree.docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise ModelError("entity declarations are not allowed", file=label, line=1)
    return tree.getroot()


def _read(path: Path, max_bytes: int | None) -> bytes:
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    if not path.is_file():  # also refuses devices and FIFOs (/dev/zero would never end)
        what = "is not a regular file" if path.exists() else "not found"
        raise ModelError(f"file {what}", file=path)
    if path.stat().st_size > limit:
        raise ModelError(_too_big(path.stat().st_size, limit), file=path)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)    # bounded even if the file grows meanwhile
    except OSError as e:
        raise ModelError(f"cannot read file: {e.strerror}", file=path) from None
    if len(data) > limit:
        raise ModelError(_too_big(len(data), limit), file=path)
    return data


def _too_big(size: int, limit: int) -> str:
    return f"file is {size / 2**20:.1f} MB, over the {limit / 2**20:.1f} MB limit for model files"


# ------------------------------------------------------------------------- DOCTYPE pre-scan
# A lexical scan of the prolog finds entity declarations without expanding anything.  Only the
# markup characters matter, and they are ASCII in every ASCII-compatible encoding, so such
# files are scanned as latin-1; UTF-16/32 are recognised by their first bytes.

_Q = r"""(?:"[^"]*"|'[^']*')"""
_PROLOG_ITEM = re.compile(r"\s+|<\?.*?\?>|<!--.*?-->", re.S)
_DOCTYPE_HEAD = re.compile(
    rf"<!DOCTYPE\s+[^\s\[>]+(?:\s+(?:SYSTEM\s+{_Q}|PUBLIC\s+{_Q}\s+{_Q}))?\s*")
_SUBSET_ITEM = re.compile(rf"\s+|<!--.*?-->|<\?.*?\?>|%[^;\s]+;|<!(?:[^>\"']|{_Q})*>", re.S)


def _refuse_entity_declarations(data: bytes, label) -> None:
    text = _prolog_text(data)
    if text is None:
        return
    pos = _entity_declaration(text)
    if pos is not None:
        raise ModelError("entity declarations are not allowed (DOCTYPE with <!ENTITY>)",
                         file=label, line=text.count("\n", 0, pos) + 1)


def _prolog_text(data: bytes) -> str | None:
    """The document as text for the scan, or None if it certainly has no DOCTYPE."""
    for bom, enc in ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
                     (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
                     (b"<\x00", "utf-16-le"), (b"\x00<", "utf-16-be")):
        if data.startswith(bom):
            text = data.decode(enc, errors="replace").lstrip("\ufeff")
            return text if "<!DOCTYPE" in text else None
    if b"<!DOCTYPE" not in data:
        return None
    return data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")


def _entity_declaration(text: str) -> int | None:
    """Offset of an ``<!ENTITY`` in the DOCTYPE's internal subset, if any."""
    pos = 0
    while m := _PROLOG_ITEM.match(text, pos):
        pos = m.end()
    if not text.startswith("<!DOCTYPE", pos):
        return None                         # no DOCTYPE before the root element
    head = _DOCTYPE_HEAD.match(text, pos)
    if head is None:                        # odd DOCTYPE: be conservative
        return _find(text, "<!ENTITY", pos)
    pos = head.end()
    if not text.startswith("[", pos):
        return None
    pos += 1
    while not text.startswith("]", pos):
        m = _SUBSET_ITEM.match(text, pos)
        if m is None:                       # unreadable subset: be conservative
            return _find(text, "<!ENTITY", pos)
        if m.group().startswith("<!ENTITY"):
            return pos
        pos = m.end()
    return None


def _find(text: str, what: str, start: int) -> int | None:
    i = text.find(what, start)
    return None if i < 0 else i


# ---------------------------------------------------------------------------------- loading

def load(path, include_dirs=(), allow_outside: bool = False, *,
         max_bytes: int | None = None) -> Model:
    """Read a NeuroML or LEMS file and, recursively, everything it includes."""
    top = Path(path)
    if not top.is_file():
        raise ModelError("file not found" if not top.exists() else "file is not a regular file",
                         file=top)
    top = top.resolve()
    dirs = []
    for d in include_dirs:
        if not Path(d).is_dir():
            raise ModelError(f"include folder not found: {d}")
        dirs.append(Path(d).resolve())
    loader = _Loader(top.parent, tuple(dirs), allow_outside, max_bytes)
    loader.visit(_Source.file(top, loader.root_dir), (), _At(top))
    return Model(documents=loader.order, root_dir=top.parent)


@functools.lru_cache(maxsize=None)
def _load_core() -> tuple[Document, ...]:
    loader = _Loader(Path("/"), (), False, None)
    for name in coretypes.core_names():
        loader.visit(_Source.core(name), (), _At())
    return tuple(loader.order)


def load_core() -> list[Document]:
    """Every bundled NeuroML2 CoreTypes file, includes first; the same objects on every call
    (and the same objects ``load`` puts in a model that includes a CoreTypes file)."""
    return list(_load_core())


@functools.lru_cache(maxsize=None)
def _core_document(name: str) -> Document:
    pseudo, data = coretypes.core_file(name)
    root = parse_bytes(data, pseudo)
    return Document(path=pseudo, root=root, kind=_kind(root, pseudo), core=True)


def _kind(root, path) -> str:
    kind = _KINDS.get(etree.QName(root).localname)
    if kind is None:
        raise ModelError(f"not a NeuroML or LEMS file: root element is <{root.tag}>, "
                         "expected <neuroml> or <Lems>", file=path, line=root.sourceline)
    return kind


@dataclass(frozen=True)
class _Source:
    """Something to load: a real file or a bundled CoreTypes member."""

    key: tuple
    display: str
    path: Path | None = None
    core_name: str | None = None

    @staticmethod
    def file(real: Path, root_dir: Path) -> "_Source":
        shown = real.relative_to(root_dir) if real.is_relative_to(root_dir) else real
        return _Source(("file", real), str(shown), path=real)

    @staticmethod
    def core(name: str) -> "_Source":
        return _Source(("core", name), str(coretypes.pseudo_path(name)), core_name=name)


@dataclass(frozen=True)
class _Include:
    element: etree._Element
    tag: str
    href: str


class _Loader:
    """Depth-first include walk; a document is appended after everything it includes."""

    def __init__(self, root_dir, include_dirs, allow_outside, max_bytes):
        self.root_dir = root_dir
        self.include_dirs = include_dirs
        self.allow_outside = allow_outside
        self.max_bytes = max_bytes
        self.done: dict[tuple, Document] = {}
        self.order: list[Document] = []

    def visit(self, src: _Source, chain: tuple[_Source, ...], via: _At):
        """Load ``src`` and its includes; ``via`` locates the include that led here."""
        if src.key in self.done:
            return
        keys = [s.key for s in chain]
        if src.key in keys:
            cycle = [s.display for s in chain[keys.index(src.key):]] + [src.display]
            raise via.error("include cycle: " + " -> ".join(cycle))
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise via.error(f"includes nested more than {MAX_INCLUDE_DEPTH} deep")
        doc = self._open(src)
        for inc in _includes(doc):
            where = _At(doc.path, inc.element.sourceline, inc.tag)
            self.visit(self._resolve(doc, inc, where), chain + (src,), where)
        self.done[src.key] = doc
        self.order.append(doc)

    def _open(self, src: _Source) -> Document:
        if src.core_name is not None:
            return _core_document(src.core_name)
        root = parse_bytes(_read(src.path, self.max_bytes), src.path)
        return Document(path=src.path, root=root, kind=_kind(root, src.path))

    def _resolve(self, doc: Document, inc: _Include, where: _At) -> _Source:
        href = inc.href
        if not href or "\x00" in href:
            raise where.error(f"invalid include reference {href!r}")
        if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", href):
            raise where.error(
                f"include of URL {href!r} refused: nml-gradiff never reads from the network "
                "or from URLs; download the file and include it by a relative path")
        name = PurePosixPath(href).name
        if doc.core:                        # the CoreTypes only ever include each other
            if name not in coretypes.core_names():
                raise coretypes.InstallationError(f"{doc.path} includes {href}, not in the jar")
            return _Source.core(name)
        rel = Path(href)
        candidates = [rel] if rel.is_absolute() else (
            [doc.path.parent / rel] + [d / rel for d in self.include_dirs])
        for cand in candidates:
            if cand.is_file():
                real = cand.resolve()
                self._check_inside(real, href, where)
                return _Source.file(real, self.root_dir)
        if coretypes.is_core_name(name):
            return _Source.core(name)
        searched = ", ".join(str(c) for c in candidates)
        raise where.error(
            f"included file {href!r} not found; searched: {searched}")

    def _check_inside(self, real: Path, href: str, where: _At) -> None:
        allowed = (self.root_dir,) + self.include_dirs
        if self.allow_outside or any(real.is_relative_to(a) for a in allowed):
            return
        raise where.error(
            f"include {href!r} resolves to {real}, outside the model folder {self.root_dir}"
            + (" and every -I folder" if self.include_dirs else "")
            + "; add its folder with -I or pass --allow-outside to permit it")


@dataclass(frozen=True)
class _At:
    """Where an include element is, for error messages (all None for the top-level file)."""

    file: Path | None = None
    line: int | None = None
    element: str | None = None

    def error(self, message: str) -> ModelError:
        return ModelError(message, file=self.file, line=self.line, element=self.element)


def _includes(doc: Document) -> list[_Include]:
    """Top-level ``<include href>`` (NeuroML) and ``<Include file>`` (LEMS) elements.

    Only children of the root count: ``<include segmentGroup=...>`` inside a segmentGroup is a
    different thing.  Namespace-agnostic, and ``file``/``href`` are accepted on either
    spelling because published models mix them (SolinasEtAl-GolgiCell has
    ``<include file=...>`` in a NeuroML file); ``url`` is read only to refuse it.
    """
    out = []
    for el in doc.root:
        if not isinstance(el.tag, str) or etree.QName(el).localname.lower() != "include":
            continue
        if etree.QName(el).namespace in _XINCLUDE_NS:
            continue    # never processed, never followed: it is just an unknown element
        tag = etree.QName(el).localname
        href = next((el.get(a) for a in ("href", "file", "url") if el.get(a) is not None), None)
        if href is None:
            raise ModelError(f"<{tag}> needs an href (NeuroML) or file (LEMS) attribute",
                             file=doc.path, line=el.sourceline, element=tag)
        out.append(_Include(el, tag, href.strip()))
    return out
