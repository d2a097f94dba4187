"""The command line: inspect, --params, --set, validate, and bad input handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import MODELS

from nml_gradiff.cli import main

HH_CELL = MODELS / "hh" / "hh_cell.nml"
NML = ('<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="doc">\n{}\n</neuroml>\n')


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_summary(capsys):
    code, out, _ = run(capsys, "inspect", HH_CELL)
    assert code == 0
    assert "channel hh_na (ionChannelHH, ion na)" in out
    assert "state m_q" in out and "cell hh_cell" in out


def test_inspect_params_lines_are_path_value_unit(capsys):
    code, out, _ = run(capsys, "inspect", HH_CELL, "--params")
    lines = out.splitlines()
    assert code == 0 and lines
    table = {}
    for line in lines:
        path, value, unit = line.split(" ")
        table[path] = (float(value), unit)
    assert table["hh_na/m/forwardRate/midpoint"] == (-40.0, "mV")
    assert table["hh_cell/naChans/condDensity"] == (0.12, "S_per_cm2")
    assert table["hh_k/n/instances"] == (4.0, "1")


def test_params_glob_and_json(capsys):
    code, out, _ = run(capsys, "inspect", HH_CELL, "--params", "hh_na/h/*", "--json")
    rows = json.loads(out)
    assert code == 0 and rows
    assert all(r["path"].startswith("hh_na/h/") for r in rows)


def test_set_in_printed_unit_and_as_quantity(capsys):
    code, out, _ = run(capsys, "inspect", HH_CELL, "--set", "hh_na/m/forwardRate/midpoint=-38",
                       "--set", "hh_cell/naChans/condDensity=100mS_per_cm2",
                       "--params", "hh_na/m/forwardRate/midpoint", "hh_cell/naChans/*")
    assert code == 0
    assert "hh_na/m/forwardRate/midpoint -38.0 mV" in out
    assert "hh_cell/naChans/condDensity 0.1 S_per_cm2" in out


@pytest.mark.parametrize("argv, message", [
    (["--set", "nope/x=1"], "no parameter 'nope/x'"),
    (["--set", "hh_na/m/forwardRate/midpoint=5nS"], "expected voltage"),
    (["--set", "hh_na/m/forwardRate/midpoint"], "PATH=VALUE"),
    (["--params", "zzz*"], "no parameter matches 'zzz*'"),
])
def test_bad_options(capsys, argv, message):
    code, out, err = run(capsys, "inspect", HH_CELL, *argv)
    assert code == 2 and message in err and not out


def test_json_summary(capsys):
    code, out, _ = run(capsys, "inspect", HH_CELL, "--json")
    data = json.loads(out)
    assert code == 0
    assert {m["name"] for m in data["mechanisms"]} == {"hh_na", "hh_k", "hh_leak"}
    assert data["cells"][0]["id"] == "hh_cell"


BAD_INPUTS = {
    "malformed": ("<neuroml><ionChannelHH id='a'></neuroml>", "malformed XML"),
    "entity bomb": ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>\n<neuroml>&lol2;</neuroml>',
                    "entity"),
    "external entity": ('<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM '
                        '"file:///etc/passwd">]>\n<neuroml>&e;</neuroml>', "entity"),
    "missing include": (NML.format('<include href="nothere.nml"/>'), "nothere.nml"),
    "unknown type": (NML.format('<ionChannelWeird id="x"/>'), "unknown ComponentType"),
    "unknown unit": (NML.format('<ionChannelHH id="x" conductance="10pQ"/>'), "unknown unit"),
    "dimension mismatch": (NML.format('<ionChannelHH id="x" conductance="10mV"/>'),
                           "expected conductance"),
    "duplicate id": (NML.format('<ionChannelHH id="x" conductance="1pS"/>'
                                '<ionChannelHH id="x" conductance="1pS"/>'), "duplicate id"),
    "invalid id": (NML.format('<ionChannelHH id="x;rm" conductance="1pS"/>'), "invalid id"),
    "undefined symbol": ("<Lems><ComponentType name='r' extends='baseVoltageDepRate'>"
                         "<Dynamics><DerivedVariable name='r' exposure='r' "
                         "dimension='per_time' value='foo'/></Dynamics></ComponentType>"
                         "<ionChannelHH id='c' conductance='1pS'><gateHHrates id='g' "
                         "instances='1'><forwardRate type='r'/><reverseRate type='r'/>"
                         "</gateHHrates></ionChannelHH></Lems>", "undefined symbol 'foo'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_exit_2(tmp_path, capsys, case):
    text, message = BAD_INPUTS[case]
    path = tmp_path / "bad.nml"
    path.write_text(text)
    before = set(tmp_path.iterdir())
    code, out, err = run(capsys, "inspect", path)
    assert code == 2, err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err
    assert set(tmp_path.iterdir()) == before          # nothing written


def test_include_cycle(tmp_path, capsys):
    (tmp_path / "a.nml").write_text(NML.format('<include href="b.nml"/>'))
    (tmp_path / "b.nml").write_text(NML.format('<include href="a.nml"/>'))
    code, _, err = run(capsys, "inspect", tmp_path / "a.nml")
    assert code == 2 and "include cycle" in err


def test_include_outside_needs_permission(tmp_path, capsys):
    (tmp_path / "lib").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "lib" / "ch.nml").write_text(NML.format('<ionChannelHH id="c" '
                                                         'conductance="1pS"/>'))
    main_file = tmp_path / "model" / "m.nml"
    main_file.write_text(NML.format('<include href="../lib/ch.nml"/>'))
    code, _, err = run(capsys, "inspect", main_file)
    assert code == 2 and "--allow-outside" in err
    assert run(capsys, "inspect", main_file, "--allow-outside")[0] == 0
    assert run(capsys, "inspect", main_file, "-I", tmp_path / "lib")[0] == 0


def test_validate_many_files(tmp_path, capsys):
    bad = tmp_path / "bad.nml"
    bad.write_text("<neuroml")
    code, out, err = run(capsys, "validate", HH_CELL, MODELS / "hh" / "hh_channels.nml", bad)
    text = out + err
    assert code == 2
    assert f"ok     {HH_CELL}" in text and f"FAILED {bad}" in text
    assert "2 of 3 files valid" in text


def test_no_traceback_from_the_console(tmp_path):
    path = tmp_path / "bad.nml"
    path.write_text("<neuroml><unclosed></neuroml>")
    proc = subprocess.run([sys.executable, "-m", "nml_gradiff.cli", "inspect", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "malformed XML" in proc.stderr
