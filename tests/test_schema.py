"""XSD validation against libNeuroML's bundled schemas."""

from __future__ import annotations

import pytest

from nml_gradiff.errors import ModelError
from nml_gradiff.ingest import schema
from nml_gradiff.ingest.schema import schema_version, validate_xsd

NS = "http://www.neuroml.org/schema/neuroml2"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def doc(body: str, version: str | None = None) -> str:
    url = f"https://raw.githubusercontent.com/NeuroML/NeuroML2/master/Schemas/NeuroML_{version}.xsd"
    loc = f' xmlns:xsi="{XSI}" xsi:schemaLocation="{NS} {url}"' if version else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<neuroml xmlns="{NS}"{loc} id="doc">\n'
            f'{body}\n</neuroml>\n')


VALID = ('    <izhikevich2007Cell id="iz" C="100pF" v0="-60mV" k="0.7nS_per_mV" vr="-60mV" '
         'vt="-40mV" vpeak="35mV" a="0.03per_ms" b="-2nS" c="-50.0mV" d="100pA"/>\n'
         '    <pulseGenerator id="pg" delay="10ms" duration="100ms" amplitude="0.1nA"/>')


def test_valid_document(tmp_path):
    f = tmp_path / "ok.nml"
    f.write_text(doc(VALID))
    assert validate_xsd(f) == []


def test_bad_attribute_reported_with_line(tmp_path):
    f = tmp_path / "bad.nml"
    f.write_text(doc(VALID + '\n    <pulseGenerator id="pg2" delay="10ms" duration="1ms" '
                     'amplitude="1nA" colour="red"/>'))
    msgs = validate_xsd(f)
    assert len(msgs) == 1
    assert msgs[0].startswith(f"{f}:5: ") and "colour" in msgs[0]
    assert NS not in msgs[0]          # namespace noise stripped


def test_bad_value_reported(tmp_path):
    f = tmp_path / "bad.nml"
    f.write_text(doc('<pulseGenerator id="pg" delay="ten" duration="1ms" amplitude="1nA"/>'))
    msgs = validate_xsd(f)
    assert msgs and msgs[0].startswith(f"{f}:3: ") and "delay" in msgs[0]


def test_lems_files_are_not_validated(tmp_path):
    f = tmp_path / "sim.xml"
    f.write_text('<Lems><Include file="Cells.xml"/><Whatever/></Lems>')
    assert validate_xsd(f) == []


def test_hostile_xml_still_refused(tmp_path):
    f = tmp_path / "xxe.nml"
    f.write_text('<!DOCTYPE neuroml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                 f'<neuroml xmlns="{NS}" id="x"><notes>&x;</notes></neuroml>')
    with pytest.raises(ModelError, match="entity declarations are not allowed"):
        validate_xsd(f)


@pytest.mark.parametrize("named, chosen", [
    ("v2beta4", "v2beta4"), ("v2.0", "v2.0"), ("v2.1", "v2.1"), ("v2.2", "v2.2"),
    ("v2.3", "v2.3"), ("v2.3.1", "v2.3.1"), ("v2beta3", schema.LATEST), (None, schema.LATEST),
])
def test_schema_chosen_by_schema_location(tmp_path, named, chosen):
    from nml_gradiff.ingest.xml import parse_file
    f = tmp_path / "v.nml"
    f.write_text(doc("", named))
    assert schema_version(parse_file(f)) == chosen
    assert schema.xsd_path(chosen).is_file()


def test_old_schema_used(tmp_path):
    # ionChannelVShift came after v2beta4: only the chosen older schema rejects it.
    body = ('<ionChannelVShift id="na" conductance="10pS" species="na" vShift="5mV">'
            '</ionChannelVShift>')
    new, old = tmp_path / "new.nml", tmp_path / "old.nml"
    new.write_text(doc(body, "v2.3"))
    old.write_text(doc(body, "v2beta4"))
    assert validate_xsd(new) == []
    assert any("ionChannelVShift" in m for m in validate_xsd(old))


def test_xsd_parsed_once():
    assert schema._schema("v2.3.1") is schema._schema("v2.3.1")
