"""What a new user meets on the command line: help texts, a closed pipe, an -o that is a
file, a missing folder, and the lines `convert` prints for models it skips or fails."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from conftest import MODELS

from nml_gradiff import cli
from nml_gradiff.backends.neuron import build as build_module

HH_CELL = MODELS / "hh" / "hh_cell.nml"
HH_LEMS = MODELS / "hh" / "LEMS_hh.xml"


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_commands_listed_in_the_readmes_order():
    assert list(_subcommands()) == ["inspect", "validate", "run", "convert", "omv", "tune"]


@pytest.mark.parametrize("command", ["inspect", "validate", "run", "convert", "omv", "tune"])
def test_every_argument_has_a_help_text(command):
    parser = _subcommands()[command]
    bare = [a.dest for a in parser._actions if not a.help]
    assert not bare, f"{command}: no help for {bare}"


def test_closed_pipe_ends_quietly():
    """`nml-gradiff inspect FILE --params | head` must not print a traceback when head
    leaves: here the reader closes the pipe before anything is written."""
    proc = subprocess.Popen([sys.executable, "-m", "nml_gradiff.cli", "inspect", str(HH_CELL),
                             "--params"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == cli.EXIT_BROKEN_PIPE


@pytest.mark.parametrize("argv", [
    ["run", HH_LEMS, "-o", "{out}"],
    ["convert", HH_CELL, "-o", "{out}"],
    ["tune", HH_LEMS, "--params", "hh_cell/kChans/condDensity", "--target-rate", "40",
     "-o", "{out}"],
])
def test_output_folder_that_is_a_file_is_refused_before_any_work(tmp_path, capsys,
                                                                  monkeypatch, argv):
    """Before: a traceback, and for tune only after all its epochs (at the first write)."""
    taken = tmp_path / "taken"
    taken.write_text("")

    def no_work(args):
        raise AssertionError("the command started")
    monkeypatch.setattr(cli, "COMMANDS", {name: no_work for name in cli.COMMANDS})
    code, _, err = run(capsys, *[str(a).replace("{out}", str(taken)) for a in argv])
    assert code == 2
    assert f"error: -o {taken}: exists and is not a folder" in err


def test_omv_on_a_missing_folder_is_bad_input(tmp_path, capsys):
    """Before: `0 of 0 tests passed` and exit status 0."""
    code, _, err = run(capsys, "omv", tmp_path / "nope")
    assert code == 2 and f"no such folder: {tmp_path / 'nope'}" in err


def test_omv_with_no_matching_test_is_bad_input(capsys):
    """Before: `0 of 0 tests passed` and exit status 0 for a -k that matches nothing."""
    code, _, err = run(capsys, "omv", MODELS, "-k", "no-such-test")
    assert code == 2 and "no OSB tests" in err and "'no-such-test'" in err


def test_lems_target_without_params_fails_once_before_the_batch(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "convert", MODELS, "--target", "lems", "-o", out)
    assert code == 2
    assert "--target lems needs --params" in err and stdout == ""
    assert not out.exists()


def test_lems_target_skips_a_file_without_simulation(tmp_path, capsys):
    """A cell file has nothing for the LEMS target, as for the JAX target: skipped, with
    the reason printed (it was an input error, failing every .nml of a folder)."""
    code, stdout, _ = run(capsys, "convert", HH_CELL, "--target", "lems", "--params",
                          "hh_cell/*/condDensity", "-o", tmp_path / "out")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith(f"skipped {HH_CELL}: nothing to convert: no <Simulation>")
    assert lines[-1].startswith("1 model: 0 converted, 0 up to date, 1 with nothing to "
                                "convert, 0 failed")


def test_failed_line_names_the_file_once(tmp_path, capsys):
    bad = tmp_path / "bad.nml"
    bad.write_text("<neuroml>\n<unclosed>\n</neuroml>\n")
    code, stdout, _ = run(capsys, "convert", bad, "-o", tmp_path / "out")
    assert code == 2
    line = stdout.splitlines()[0]
    assert line.startswith(f"FAILED {bad}:3: malformed XML"), line
    assert line.count("bad.nml") == 1


def test_run_on_a_cell_file_says_what_to_give(capsys):
    code, _, err = run(capsys, "run", HH_CELL, "--backend", "jax")
    assert code == 2
    assert "name it explicitly" not in err
    assert "give a LEMS file with a <Target> and a <Simulation>" in err


def test_first_build_says_it_compiles(tmp_path, monkeypatch, capsys):
    """nrnivmodl takes 20 s to minutes the first time, silently: one line on stderr says
    so; a cached build says nothing."""
    def fake_compile(tool, work, files):
        (work / "x86_64").mkdir()
        (work / "x86_64" / "libnrnmech.so").write_text("")
    monkeypatch.setattr(build_module, "_compile", fake_compile)
    mod = "NEURON { SUFFIX tpas }\n"
    build_module.build({"tpas": mod}, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert f"compiling 1 mod files with nrnivmodl (once for these mechanisms; cached in " \
           f"{tmp_path})" in err
    build_module.build({"tpas": mod}, cache_dir=tmp_path)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("assignment, message", [
    ("hh_cell/kChans/condDensity=3mV",
     "--set hh_cell/kChans/condDensity=3mV: '3mV' is a voltage, expected conductanceDensity"),
    ("hh_cell/kChans/condDensity=abc",
     "--set hh_cell/kChans/condDensity=abc: 'abc' is not a number with an optional unit"),
    ("hh_cell/kChans/condDensity=1e999",
     "--set hh_cell/kChans/condDensity=1e999: value '1e999' is not a finite number"),
])
def test_set_errors_name_the_assignment(capsys, assignment, message):
    """Before: `error: '3mV' is a voltage, expected conductanceDensity`, not saying which of
    several --set options it was about."""
    code, _, err = run(capsys, "inspect", HH_CELL, "--set", assignment, "--params")
    assert code == 2 and err.strip() == f"error: {message}"


def test_validate_a_folder(tmp_path, capsys):
    """Before: `FAILED models: file is not a regular file`."""
    code, out, _ = run(capsys, "validate", MODELS)
    lines = out.splitlines()
    assert code == 0
    assert f"ok     {MODELS / 'hh' / 'LEMS_hh.xml'}" in lines
    assert f"ok     {HH_CELL}" in lines
    assert lines[-1] == "3 of 3 files valid"


def test_tune_prints_the_start_value_not_the_first_history_row(tmp_path, capsys):
    """Online, history[0] is the end of the first block of updates: the summary printed
    `0.032406479999943255 -> ...` for a start of 0.0324."""
    from nml_gradiff.runtime.tune import TuneResult, print_values
    moved = {"epoch": 0, "params": {"g": 0.032406479999943255}}
    final = {"epoch": 9, "params": {"g": 0.036}}
    result = TuneResult(["g"], ["S_per_cm2"], [moved, final], final, tmp_path / "model",
                        initial={"g": 0.0324})
    print_values(result, moved, final, tmp_path)
    assert capsys.readouterr().out.splitlines()[0] == "g 0.0324 -> 0.036 S_per_cm2"
