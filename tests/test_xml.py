"""The hardened XML front door: parsing untrusted files and resolving includes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nml_gradiff.errors import ModelError
from nml_gradiff.ingest import xml
from nml_gradiff.ingest.xml import load, load_core, parse_file

NS = "http://www.neuroml.org/schema/neuroml2"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def nml(body: str = "", id_: str = "m") -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<neuroml xmlns="{NS}" id="{id_}">\n'
            f'{body}\n</neuroml>\n')


def inc(href: str) -> str:
    return f'    <include href="{href}"/>'


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def names(model) -> list[str]:
    return [d.path.name for d in model.documents]


def raises(fn, *args, match: str, **kw) -> ModelError:
    with pytest.raises(ModelError, match=match) as info:
        fn(*args, **kw)
    return info.value


# ------------------------------------------------------------------------------ hostile XML

def test_malformed_unclosed_tag(tmp_path):
    f = write(tmp_path / "bad.nml", nml('    <cell id="c">\n    <notes>x</notes>\n'))
    err = raises(parse_file, f, match="malformed XML")
    assert err.file == str(f) and err.line and err.line >= 4
    assert str(f) in str(err)


def test_billion_laughs_refused_before_expansion(tmp_path):
    ents = "\n".join(f'  <!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    f = write(tmp_path / "bomb.nml", f'<?xml version="1.0"?>\n<!DOCTYPE neuroml [\n'
              f'  <!ENTITY l0 "lol">\n{ents}\n]>\n<neuroml id="x"><notes>&l9;</notes></neuroml>\n')
    t0 = time.perf_counter()
    err = raises(parse_file, f, match="entity declarations are not allowed")
    assert time.perf_counter() - t0 < 1.0
    assert err.file == str(f) and err.line == 3


def test_external_entity_refused_and_never_read(tmp_path):
    f = write(tmp_path / "xxe.nml", '<?xml version="1.0"?>\n<!DOCTYPE neuroml [\n'
              '<!ENTITY x SYSTEM "file:///etc/passwd">\n]>\n'
              f'<neuroml xmlns="{NS}" id="x"><notes>&x;</notes></neuroml>\n')
    err = raises(load, f, match="entity declarations are not allowed")
    assert err.file == str(f) and err.line == 3
    passwd = Path("/etc/passwd")
    if passwd.exists():
        first = passwd.read_text(errors="replace").splitlines()[0]
        assert first not in str(err)


def test_entity_in_utf16_document_refused(tmp_path):
    text = ('<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE neuroml [<!ENTITY a "b">]>\n'
            '<neuroml id="x">&a;</neuroml>\n')
    f = write(tmp_path / "u16.nml", text, "utf-16")
    raises(parse_file, f, match="entity declarations are not allowed")


def test_parameter_entity_refused(tmp_path):
    f = write(tmp_path / "pe.nml", '<?xml version="1.0"?>\n<!DOCTYPE neuroml SYSTEM "x.dtd" [\n'
              '  <!-- a comment --> <!ENTITY % p SYSTEM "http://example.com/evil.dtd"> %p;\n]>\n'
              '<neuroml id="x"/>\n')
    raises(parse_file, f, match="entity declarations are not allowed")


def test_plain_doctype_is_fine(tmp_path):
    f = write(tmp_path / "dt.nml", f'<?xml version="1.0"?>\n<!DOCTYPE neuroml>\n{nml()[39:]}')
    assert parse_file(f).get("id") == "m"


def test_undefined_entity_is_malformed(tmp_path):
    f = write(tmp_path / "u.nml", nml("<notes>&nope;</notes>"))
    raises(parse_file, f, match="malformed XML")


def test_xinclude_not_processed(tmp_path):
    secret = write(tmp_path / "secret.txt", "TOP-SECRET-CONTENT")
    body = (f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{secret}" '
            'parse="text"/>')
    f = write(tmp_path / "xi.nml", nml(body))
    model = load(f)
    assert names(model) == ["xi.nml"]
    from lxml import etree
    assert b"TOP-SECRET" not in etree.tostring(model.main.root)


def test_comments_and_pis_never_reach_downstream(tmp_path):
    f = write(tmp_path / "c.nml", '<?xml version="1.0"?>\n<!-- leading comment -->\n'
              f'<?some-pi data?>\n<neuroml xmlns="{NS}" id="x"><!-- c --><?pi x?>'
              '<notes>n<!-- inside text --></notes></neuroml>\n')
    root = parse_file(f)
    assert [isinstance(c.tag, str) for c in root.iter()] == [True, True]
    assert root[0].text == "n"


def test_missing_file(tmp_path):
    err = raises(parse_file, tmp_path / "nope.nml", match="not found")
    assert err.file.endswith("nope.nml")
    raises(load, tmp_path / "nope.nml", match="not found")


def test_size_cap(tmp_path, monkeypatch):
    f = write(tmp_path / "big.nml", nml("<notes>" + "x" * 5000 + "</notes>"))
    err = raises(parse_file, f, max_bytes=1000, match="over the .* MB limit")
    assert err.file == str(f)
    monkeypatch.setattr(xml, "MAX_FILE_BYTES", 1000)
    raises(load, f, match="limit")
    monkeypatch.setattr(xml, "MAX_FILE_BYTES", 10**6)
    assert names(load(f)) == ["big.nml"]


def test_cap_applies_to_included_files(tmp_path):
    write(tmp_path / "big.nml", nml("<notes>" + "x" * 5000 + "</notes>", "big"))
    f = write(tmp_path / "main.nml", nml(inc("big.nml")))
    raises(load, f, max_bytes=2000, match="limit")


def test_not_neuroml_or_lems(tmp_path):
    f = write(tmp_path / "svg.xml", '<svg xmlns="http://www.w3.org/2000/svg"/>')
    raises(load, f, match="not a NeuroML or LEMS file")


# ----------------------------------------------------------------------- encodings, format

def test_utf16_file(tmp_path):
    text = nml("<notes>µ-opioid Ω</notes>").replace('encoding="UTF-8"', 'encoding="UTF-16"')
    f = write(tmp_path / "u16.nml", text, "utf-16")
    assert parse_file(f)[0].text == "µ-opioid Ω"


def test_latin1_declared_file(tmp_path):
    text = nml("<notes>µm, Ångström</notes>").replace("UTF-8", "ISO-8859-1")
    f = write(tmp_path / "l1.nml", text, "latin-1")
    assert load(f).main.root[0].text == "µm, Ångström"


def test_utf8_bom(tmp_path):
    f = tmp_path / "bom.nml"
    f.write_bytes(b"\xef\xbb\xbf" + nml("<notes>ok</notes>").encode())
    assert load(f).main.kind == "neuroml"


def test_leading_comment_before_root_and_no_prolog(tmp_path):
    f = write(tmp_path / "lc.nml", f'<!-- exported by a tool -->\n<neuroml xmlns="{NS}" id="x">'
              '<notes>ok</notes></neuroml>')
    assert load(f).main.root.get("id") == "x"


def test_rdf_annotation_and_odd_formatting(tmp_path):
    body = ('<annotation><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="x"/></rdf:RDF></annotation>'
            '<cell\n\tid = "c"\n></cell>')
    f = write(tmp_path / "rdf.nml", nml(body).replace("\n", "\r\n"))
    assert load(f).main.root[1].get("id") == "c"


# --------------------------------------------------------------------------------- includes

def test_lems_includes_neuroml_in_dependency_order(tmp_path):
    write(tmp_path / "chan.nml", nml(id_="chan"))
    write(tmp_path / "cell.nml", nml(inc("chan.nml"), "cell"))
    f = write(tmp_path / "sim.xml",
              '<Lems>\n<Include file="cell.nml"/>\n<Target component="s"/>\n</Lems>')
    model = load(f)
    assert names(model) == ["chan.nml", "cell.nml", "sim.xml"]
    assert [d.kind for d in model.documents] == ["neuroml", "neuroml", "lems"]
    assert model.root_dir == tmp_path.resolve() and model.main.path == f.resolve()


def test_diamond_loaded_once(tmp_path):
    write(tmp_path / "d.nml", nml(id_="d"))
    write(tmp_path / "b.nml", nml(inc("d.nml"), "b"))
    write(tmp_path / "sub" / "c.nml", nml(inc("../d.nml"), "c"))
    f = write(tmp_path / "a.nml", nml(inc("b.nml") + inc("sub/c.nml") + inc("./d.nml"), "a"))
    assert names(load(f)) == ["d.nml", "b.nml", "c.nml", "a.nml"]


def test_missing_include_names_file_line_and_places(tmp_path):
    inc_dir = tmp_path / "lib"
    inc_dir.mkdir()
    f = write(tmp_path / "a.nml", nml("\n" + inc("nowhere.nml")))
    err = raises(load, f, include_dirs=[inc_dir], match="'nowhere.nml' not found")
    assert err.file == str(f.resolve()) and err.line == 4 and err.element == "include"
    assert str(tmp_path.resolve() / "nowhere.nml") in err.message
    assert str(inc_dir.resolve() / "nowhere.nml") in err.message


@pytest.mark.parametrize("files, message", [
    ({"a.nml": "b.nml", "b.nml": "a.nml"}, "include cycle: a.nml -> b.nml -> a.nml"),
    ({"a.nml": "a.nml"}, "include cycle: a.nml -> a.nml"),
    ({"a.nml": "b.nml", "b.nml": "c.nml", "c.nml": "b.nml"}, "b.nml -> c.nml -> b.nml"),
])
def test_include_cycle(tmp_path, files, message):
    for name, target in files.items():
        write(tmp_path / name, nml(inc(target), name))
    err = raises(load, tmp_path / "a.nml", match=message)
    assert err.file and err.line == 3 and err.element == "include"


def test_include_outside_root_refused_unless_allowed(tmp_path):
    write(tmp_path / "shared" / "chan.nml", nml(id_="chan"))
    f = write(tmp_path / "model" / "cell.nml", nml(inc("../shared/chan.nml")))
    err = raises(load, f, match="outside the model folder")
    assert "--allow-outside" in err.message and err.line == 3 and err.file == str(f.resolve())
    assert names(load(f, allow_outside=True)) == ["chan.nml", "cell.nml"]
    # an -I folder widens what is allowed
    assert names(load(f, include_dirs=[tmp_path / "shared"])) == ["chan.nml", "cell.nml"]


def test_absolute_include_outside_refused(tmp_path):
    other = write(tmp_path / "elsewhere" / "x.nml", nml(id_="x"))
    f = write(tmp_path / "model" / "m.nml", nml(inc(str(other))))
    raises(load, f, match="outside the model folder")
    assert names(load(f, allow_outside=True)) == ["x.nml", "m.nml"]


def test_absolute_include_inside_root_allowed(tmp_path):
    inner = write(tmp_path / "model" / "x.nml", nml(id_="x"))
    f = write(tmp_path / "model" / "m.nml", nml(inc(str(inner))))
    assert names(load(f)) == ["x.nml", "m.nml"]


def test_symlink_escaping_root_refused(tmp_path):
    target = write(tmp_path / "private" / "real.nml", nml(id_="r"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "link.nml").symlink_to(target)
    f = write(tmp_path / "model" / "m.nml", nml(inc("link.nml")))
    raises(load, f, match="outside the model folder")


@pytest.mark.parametrize("href", ["http://example.com/x.nml", "https://example.com/x.nml",
                                  "file:///etc/passwd", "ftp://h/x.nml"])
def test_url_include_refused(tmp_path, href):
    f = write(tmp_path / "m.nml", nml(inc(href)))
    err = raises(load, f, allow_outside=True, match="URL")
    assert err.line == 3 and "network" in err.message


def test_lems_url_attribute_refused(tmp_path):
    f = write(tmp_path / "m.xml", '<Lems><Include url="http://example.com/x.xml"/></Lems>')
    raises(load, f, match="URL")


def test_include_dir_used_in_order(tmp_path):
    write(tmp_path / "lib1" / "chan.nml", nml(id_="first"))
    write(tmp_path / "lib2" / "chan.nml", nml(id_="second"))
    write(tmp_path / "lib2" / "only2.nml", nml(id_="only2"))
    f = write(tmp_path / "model" / "m.nml", nml(inc("chan.nml") + inc("only2.nml")))
    model = load(f, include_dirs=[tmp_path / "lib1", tmp_path / "lib2"])
    assert [d.root.get("id") for d in model.documents] == ["first", "only2", "m"]


def test_including_folder_wins_over_include_dirs(tmp_path):
    write(tmp_path / "lib" / "chan.nml", nml(id_="lib"))
    write(tmp_path / "model" / "chan.nml", nml(id_="local"))
    f = write(tmp_path / "model" / "m.nml", nml(inc("chan.nml")))
    assert load(f, include_dirs=[tmp_path / "lib"]).documents[0].root.get("id") == "local"


def test_missing_include_dir(tmp_path):
    f = write(tmp_path / "m.nml", nml())
    raises(load, f, include_dirs=[tmp_path / "nope"], match="include folder not found")


def test_cwd_never_used(tmp_path, monkeypatch):
    write(tmp_path / "cwd" / "chan.nml", nml(id_="chan"))
    f = write(tmp_path / "model" / "m.nml", nml(inc("chan.nml")))
    monkeypatch.chdir(tmp_path / "cwd")
    err = raises(load, f, match="not found")
    assert str(tmp_path / "cwd") not in err.message


def test_relative_top_level_path(tmp_path, monkeypatch):
    write(tmp_path / "chan.nml", nml(id_="chan"))
    write(tmp_path / "m.nml", nml(inc("chan.nml")))
    monkeypatch.chdir(tmp_path)
    assert names(load("m.nml")) == ["chan.nml", "m.nml"]


def test_segment_group_include_is_not_a_file_include(tmp_path):
    body = ('<cell id="c"><morphology id="m"><segment id="0"><distal x="0" y="0" z="0" '
            'diameter="1"/></segment><segmentGroup id="all"><include segmentGroup="soma"/>'
            '</segmentGroup></morphology></cell>')
    f = write(tmp_path / "m.nml", nml(body))
    assert names(load(f)) == ["m.nml"]


def test_include_file_attribute_in_neuroml(tmp_path):
    # Published models (SolinasEtAl-GolgiCell) write <include file=...> in NeuroML files.
    write(tmp_path / "chan.nml", nml(id_="chan"))
    f = write(tmp_path / "m.nml", nml('<include file="chan.nml"/>'))
    assert names(load(f)) == ["chan.nml", "m.nml"]


def test_include_without_href(tmp_path):
    f = write(tmp_path / "m.nml", nml("<include/>"))
    err = raises(load, f, match="needs an href")
    assert err.line == 3


def test_malformed_included_file_is_located(tmp_path):
    bad = write(tmp_path / "bad.nml", nml("<cell>"))
    f = write(tmp_path / "m.nml", nml(inc("bad.nml")))
    err = raises(load, f, match="malformed XML")
    assert err.file == str(bad.resolve())


def test_deep_include_chain_refused(tmp_path):
    n = xml.MAX_INCLUDE_DEPTH + 5
    for i in range(n):
        write(tmp_path / f"f{i}.nml", nml(inc(f"f{i + 1}.nml")))
    write(tmp_path / f"f{n}.nml", nml())
    raises(load, tmp_path / "f0.nml", match="nested more than")


# ------------------------------------------------------------------------------- CoreTypes

def test_load_core_complete_and_cached():
    core = load_core()
    got = {d.path.name for d in core}
    assert {"Cells.xml", "Networks.xml", "Simulation.xml", "NeuroMLCoreDimensions.xml",
            "PyNN.xml", "NeuroML2CoreTypes.xml"} <= got
    assert len(got) == len(core) and all(d.core and d.kind == "lems" for d in core)
    assert str(core[0].path).startswith("<jNeuroML-") and "NeuroML2CoreTypes/" in str(core[0].path)
    assert all(a is b for a, b in zip(core, load_core()))
    order = [d.path.name for d in core]
    assert order.index("NeuroMLCoreDimensions.xml") < order.index("Cells.xml")


def test_core_include_resolves_to_bundled(tmp_path):
    f = write(tmp_path / "LEMS_sim.xml", '<Lems>\n<Include file="Cells.xml"/>\n'
              '<Include file="Networks.xml"/>\n'
              '<Include file="NeuroML2CoreTypes/Simulation.xml"/>\n</Lems>')
    model = load(f)
    core_docs = [d for d in model.documents if d.core]
    core_ids = {id(d) for d in load_core()}
    assert core_docs and all(id(d) in core_ids for d in core_docs)
    assert len({id(d) for d in core_docs}) == len(core_docs)     # each once
    assert names(model)[-1] == "LEMS_sim.xml" and not model.main.core
    assert names(model).index("NeuroMLCoreDimensions.xml") < names(model).index("Cells.xml")
    merged = model.with_core()
    assert len(merged) == len(load_core()) + 1 and len({id(d) for d in merged}) == len(merged)


def test_local_file_wins_over_bundled_core(tmp_path):
    write(tmp_path / "Cells.xml", '<Lems><ComponentType name="mine"/></Lems>')
    f = write(tmp_path / "m.xml", '<Lems><Include file="Cells.xml"/></Lems>')
    model = load(f)
    first = model.documents[0]
    assert not first.core and first.path == (tmp_path / "Cells.xml").resolve()


# ----------------------------------------------------------------------------- real corpus

# The corpus keeps each repository's layout; files include across folders of their repository
# ("../channels/x.nml"), so the repository folder is passed as an -I folder (it is the trust
# boundary here).  Extra -I folders for files whose includes only work from another folder:
EXTRA_INCLUDE_DIRS = {
    # includes "../examples/..." but lives one folder deeper than its siblings; the NeuroML2
    # repository's regression script runs it from LEMSexamples/.
    "NeuroML+NeuroML2/LEMSexamples/regression-tests/LEMS_NML2_Ex5_DetCell_unformatted.xml":
        ["NeuroML+NeuroML2/LEMSexamples"],
}


def test_corpus_every_file_loads():
    if not CORPUS.is_dir():
        pytest.skip(f"real-model corpus not found at {CORPUS} (only present in the dev/CI tree)")
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".nml", ".xml") and p.is_file())
    failures, docs = [], 0
    for p in files:
        rel = p.relative_to(CORPUS).as_posix()
        dirs = [CORPUS / rel.split("/")[0]] + [CORPUS / d for d in EXTRA_INCLUDE_DIRS.get(rel, [])]
        try:
            parse_file(p)
            docs += len(load(p, include_dirs=dirs).documents)
        except ModelError as e:
            failures.append(str(e))
    print(f"\ncorpus: {len(files)} files parsed and loaded ({docs} documents incl. includes)")
    assert not failures, "\n".join(failures)
    assert len(files) > 100


# ------------------------------------------------------------------------ defence in depth

def test_entities_refused_even_if_prescan_missed_them(tmp_path, monkeypatch):
    # The lexical pre-scan is the first line; the parsed DTD is checked again (no expansion
    # happened in between: resolve_entities=False, load_dtd=False).
    monkeypatch.setattr(xml, "_refuse_entity_declarations", lambda data, label: None)
    f = write(tmp_path / "xxe.nml",
              '<!DOCTYPE neuroml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
              f'<neuroml xmlns="{NS}" id="x"><notes>&x;</notes></neuroml>')
    err = raises(parse_file, f, match="entity declarations are not allowed")
    assert err.file == str(f) and err.line == 1


def test_core_file_pseudo_path():
    from nml_gradiff.ingest import coretypes
    path, data = coretypes.core_file("Cells.xml")
    assert str(path).startswith("<jNeuroML-")
    assert str(path).endswith("/NeuroML2CoreTypes/Cells.xml")
    assert b"<Lems" in data
    assert coretypes.is_core_name("Cells.xml") and not coretypes.is_core_name("cells.nml")


def test_missing_pyneuroml_is_an_installation_error(monkeypatch):
    from nml_gradiff.ingest import coretypes
    real = coretypes.importlib.util.find_spec
    monkeypatch.setattr(coretypes.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyneuroml" else real(name, *a))
    coretypes.jar_path.cache_clear()
    try:
        with pytest.raises(coretypes.InstallationError, match="pyneuroml is not installed"):
            coretypes.jar_path()
    finally:
        monkeypatch.undo()
        coretypes.jar_path.cache_clear()


def test_coretypes_disk_cache_is_used_checked_and_repaired(tmp_path, monkeypatch):
    """The jar's CoreTypes members are cached on disk (opening the 28 MB jar costs more
    than a small conversion); a cache entry is trusted only when every member matches its
    recorded SHA-256 and the jar's path, size and mtime are the ones it was made from."""
    from nml_gradiff.ingest import coretypes
    monkeypatch.setenv("NML_GRADIFF_CORETYPES_CACHE", str(tmp_path / "cache"))
    jar = coretypes.jar_path()
    from_jar = coretypes._read_jar(jar)
    assert coretypes._cached_members(jar) is None          # empty cache
    coretypes._store_members(jar, from_jar)
    assert coretypes._cached_members(jar) == from_jar

    entry = coretypes._entry(jar)
    (entry / "Cells.xml").write_bytes(b"<Lems/>")            # damaged member: not trusted
    assert coretypes._cached_members(jar) is None
    coretypes._members.cache_clear()
    try:
        assert coretypes._members() == from_jar              # read from the jar again ...
        assert coretypes._cached_members(jar) == from_jar    # ... and the entry repaired
    finally:
        coretypes._members.cache_clear()

    index = json.loads((entry / "index.json").read_text())
    index["key"]["size"] += 1                                # made from another jar
    (entry / "index.json").write_text(json.dumps(index))
    assert coretypes._cached_members(jar) is None
