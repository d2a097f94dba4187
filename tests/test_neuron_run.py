"""run/convert through the NEURON backend on our HH model (the README's main job)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import MODELS

from nml_gradiff.cli import main

pytest.importorskip("neuron")
LEMS = MODELS / "hh" / "LEMS_hh.xml"


def test_run_writes_declared_outputs_in_jneuroml_format(tmp_path, capsys):
    assert main(["run", str(LEMS), "--backend", "neuron", "-o", str(tmp_path)]) == 0
    table = np.loadtxt(tmp_path / "results" / "hh_v.dat")
    assert table.shape == (10001, 2)                     # 100 ms at 0.01 ms, t = 0 included
    assert table[0, 1] == pytest.approx(-0.065)          # SI: volts
    assert table[-1, 0] == pytest.approx(0.1)            # SI: seconds
    spikes = np.loadtxt(tmp_path / "results" / "hh_spikes.spikes", ndmin=2)
    # a 0.1 nA step on 1000 um2 HH membrane from 20 to 80 ms: a regular train of 5
    assert len(spikes) == 5 and np.all(np.diff(spikes[:, 0]) > 0.010)


def test_run_refuses_an_output_path_outside(tmp_path, capsys):
    lems = tmp_path / "LEMS_x.xml"
    lems.write_text(LEMS.read_text().replace("results/hh_v.dat", "../../escape.dat")
                    .replace('file="hh_cell.nml"', f'file="{MODELS / "hh" / "hh_cell.nml"}"'))
    code = main(["run", str(lems), "-o", str(tmp_path / "out"), "--allow-outside"])
    assert code == 2 and "out of the output folder" in capsys.readouterr().err
    assert not (tmp_path / "escape.dat").exists()


def test_convert_batch_report_and_up_to_date(tmp_path, capsys):
    bad = tmp_path / "in" / "bad.nml"
    bad.parent.mkdir()
    bad.write_text("<neuroml")
    out = tmp_path / "out"
    assert main(["convert", str(MODELS / "hh"), str(bad), "-o", str(out)]) == 2
    report = json.loads((out / "report.json").read_text())
    status = {m["file"].split("/")[-1]: m["status"] for m in report["models"]}
    assert status == {"LEMS_hh.xml": "ok", "hh_cell.nml": "ok", "hh_channels.nml": "ok",
                      "bad.nml": "failed"}
    assert (out / "LEMS_hh" / "mods" / "hh_na.mod").is_file()
    assert (out / "LEMS_hh" / "plan.json").is_file()
    main(["convert", str(MODELS / "hh"), "-o", str(out)])
    again = json.loads((out / "report.json").read_text())
    assert {m["status"] for m in again["models"]} == {"up-to-date"}
