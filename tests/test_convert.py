"""``nml-gradiff convert`` as a batch: statuses, reasons and categories in OUT/report.json.

(Conversion of one model into mods + plan is exercised by tests/test_neuron_run.py; nothing
here compiles or runs NEURON.)
"""

from __future__ import annotations

import json
from pathlib import Path

from nml_gradiff.cli import main

MODELS = Path(__file__).resolve().parents[1] / "models"
HH_CELL = (MODELS / "hh" / "hh_cell.nml").read_text()
NEUROML = '<neuroml xmlns="http://www.neuroml.org/schema/neuroml2" id="{id}">{body}</neuroml>'


def repository(root: Path) -> Path:
    """A model repository laid out as published ones are: channels in one folder, cells in
    another including them by ``../``, plus files that are not models on their own."""
    (root / "channels").mkdir(parents=True)
    (root / "cells").mkdir()
    (root / "channels" / "hh_channels.nml").write_text(
        (MODELS / "hh" / "hh_channels.nml").read_text())
    (root / "cells" / "cell.nml").write_text(
        HH_CELL.replace('href="hh_channels.nml"', 'href="../channels/hh_channels.nml"'))
    (root / "cells" / "bare.nml").write_text(
        HH_CELL.replace('<include href="hh_channels.nml"/>', ""))
    (root / "cells" / "uses_bare.nml").write_text(NEUROML.format(
        id="uses", body='<include href="../channels/hh_channels.nml"/>'
                        '<include href="bare.nml"/>'))
    (root / "morph.nml").write_text(NEUROML.format(
        id="m", body='<morphology id="mo"><segment id="0"><proximal x="0" y="0" z="0" '
                     'diameter="2"/><distal x="0" y="0" z="2" diameter="2"/></segment>'
                     '</morphology>'))
    (root / "gap.nml").write_text(NEUROML.format(
        id="g", body='<gapJunction id="gj" conductance="10pS"/>'))
    return root


def report(out: Path) -> dict:
    data = json.loads((out / "report.json").read_text())
    data["by_name"] = {Path(m["file"]).name: m for m in data["models"]}
    return data


def test_batch_statuses_reasons_and_summary(tmp_path, capsys):
    repo = repository(tmp_path / "repo")
    out = tmp_path / "out"
    assert main(["convert", str(repo), "-o", str(out)]) == 2     # some failed
    printed = capsys.readouterr().out
    data = report(out)
    m = data["by_name"]
    # a folder named on the command line is the collection: ../channels is inside it
    assert m["cell.nml"]["status"] == "ok", m["cell.nml"]
    assert (out / "cells" / "cell" / "mods" / "hh_na.mod").is_file()
    assert m["cell.nml"]["counts"]["mods"] == 3
    assert m["uses_bare.nml"]["status"] == "ok"
    assert m["hh_channels.nml"]["status"] == "ok"
    # a cell without the include of its channels: where they are, and who uses it
    assert m["bare.nml"]["category"] == "not standalone"
    assert m["bare.nml"]["reason"] == (
        "not standalone: needs ionChannel 'hh_na' from ../channels/hh_channels.nml, which it "
        "does not include; used by uses_bare.nml")
    # nothing to emit is not a failure
    assert m["morph.nml"]["status"] == "skipped"
    assert m["morph.nml"]["reason"].endswith(
        "nothing to convert: no ion channel, concentration model, input or <Simulation>; "
        "found <morphology> 'mo'")
    # a file whose only component is refused says why
    assert m["gap.nml"]["category"] == "unsupported"
    assert "gj (<gapJunction>)" in m["gap.nml"]["reason"]
    assert "reads another cell instance" in m["gap.nml"]["reason"]
    expected = ("6 models: 3 converted, 0 up to date, 1 with nothing to convert, 2 failed "
                "(unsupported 1, not standalone 1)")
    assert data["summary"] == expected
    assert expected in printed
    assert data["counts"]["failed by category"]["not standalone"] == 1


def test_rerun_skips_up_to_date_and_redoes_changed(tmp_path):
    repo = repository(tmp_path / "repo")
    out = tmp_path / "out"
    main(["convert", str(repo), "-o", str(out)])
    main(["convert", str(repo), "-o", str(out)])
    m = report(out)["by_name"]
    assert m["cell.nml"]["status"] == m["hh_channels.nml"]["status"] == "up-to-date"
    # an included file changed: every model that includes it is converted again
    chans = repo / "channels" / "hh_channels.nml"
    chans.write_text(chans.read_text().replace('conductance="10pS"', 'conductance="20pS"', 1))
    main(["convert", str(repo), "-o", str(out)])
    m = report(out)["by_name"]
    assert m["cell.nml"]["status"] == m["hh_channels.nml"]["status"] == "ok"


def test_rerun_after_a_change_of_our_code_converts_again(tmp_path, monkeypatch):
    """The version string stays while the code changes (a checkout, an editable install):
    outputs emitted by other code are not up to date."""
    from nml_gradiff.runtime import batch
    repo = repository(tmp_path / "repo")
    out = tmp_path / "out"
    main(["convert", str(repo), "-o", str(out)])
    monkeypatch.setattr(batch, "code_fingerprint", lambda: "other code")
    main(["convert", str(repo), "-o", str(out)])
    assert report(out)["by_name"]["cell.nml"]["status"] == "ok"
    main(["convert", str(repo), "-o", str(out)])
    assert report(out)["by_name"]["cell.nml"]["status"] == "up-to-date"


def test_a_file_named_alone_may_not_include_outside_its_folder(tmp_path):
    repo = repository(tmp_path / "repo")
    out = tmp_path / "out"
    assert main(["convert", str(repo / "cells" / "cell.nml"), "-o", str(out)]) == 2
    m = report(out)["by_name"]["cell.nml"]
    assert m["category"] == "input error"
    assert "outside the model folder" in m["reason"]


def test_workers_give_the_same_report(tmp_path):
    repo = repository(tmp_path / "repo")
    main(["convert", str(repo), "-o", str(tmp_path / "one")])
    main(["convert", str(repo), "-o", str(tmp_path / "two"), "--jobs", "2"])
    strip = [{k: v for k, v in m.items() if k not in ("seconds", "out")}
             for m in report(tmp_path / "one")["models"]]
    assert strip == [{k: v for k, v in m.items() if k not in ("seconds", "out")}
                     for m in report(tmp_path / "two")["models"]]
