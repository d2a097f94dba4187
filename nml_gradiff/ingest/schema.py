"""XSD validation of NeuroML documents against the schemas bundled with libNeuroML.

The XSD is chosen by the version the document names in ``xsi:schemaLocation``
(``NeuroML_v2beta4.xsd``, ``NeuroML_v2.0.xsd`` ... ``NeuroML_v2.3.1.xsd``); anything else,
or nothing, is validated against the newest bundled schema.  Each XSD is parsed once per
process.  Documents are read through the hardened parser of :mod:`.xml`.

LEMS files (root ``<Lems>``) have no XSD here: :func:`validate_xsd` returns ``[]`` for them;
their checking is the LEMS reader's job.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from lxml import etree

from .coretypes import InstallationError
from .xml import NEUROML_NS, Document, parse_file

#: Versions a document may select; others (v2alpha, v2beta3, ...) get the newest schema.
SELECTABLE = ("v2beta4", "v2.0", "v2.1", "v2.2", "v2.3", "v2.3.1")
LATEST = "v2.3.1"


def validate_xsd(path) -> list[str]:
    """Validate one NeuroML file; ``file:line: message`` for each problem, [] if valid.

    Malformed or hostile XML raises :class:`~nml_gradiff.errors.ModelError` as in
    :func:`.xml.parse_file`.  LEMS files are not XSD-validated and give [].
    """
    return validate_root(parse_file(path), path)


def validate_document(doc: Document) -> list[str]:
    """Same as :func:`validate_xsd` for an already loaded document (CoreTypes give [])."""
    return [] if doc.core else validate_root(doc.root, doc.path)


def validate_root(root, label) -> list[str]:
    if etree.QName(root).localname == "Lems":
        return []
    schema = _schema(schema_version(root))
    schema.validate(root.getroottree())
    # Drop the NeuroML namespace from element names: it is on every element and hides the
    # name that matters.
    return [f"{label}:{e.line}: {e.message.replace('{' + NEUROML_NS + '}', '')}"
            for e in schema.error_log]


def schema_version(root) -> str:
    """The schema version the document asks for, or the newest one."""
    loc = root.get("{http://www.w3.org/2001/XMLSchema-instance}schemaLocation") or ""
    m = re.search(r"NeuroML_(v2[0-9a-z.]*?)\.xsd", loc)
    return m.group(1) if m and m.group(1) in SELECTABLE else LATEST


def xsd_path(version: str) -> Path:
    spec = importlib.util.find_spec("neuroml")
    if spec is None or not spec.submodule_search_locations:
        raise InstallationError("libNeuroML is not installed (pip install libNeuroML)")
    path = Path(spec.submodule_search_locations[0]) / "nml" / f"NeuroML_{version}.xsd"
    if not path.is_file():
        raise InstallationError(f"libNeuroML's schema {path} is missing; reinstall libNeuroML")
    return path


@functools.lru_cache(maxsize=None)
def _schema(version: str) -> etree.XMLSchema:
    # The XSD comes with an installed package, but it is still read without network access.
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(xsd_path(version)), parser))
