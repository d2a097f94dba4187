"""Writing tuned values back into a copy of a model's files (runtime/writeback.py)."""

from __future__ import annotations

import filecmp

import pytest

from conftest import MODELS
from nml_gradiff.errors import ModelError
from nml_gradiff.ingest.model import load_model
from nml_gradiff.ingest.simulation import load_simulation
from nml_gradiff.runtime.writeback import write_values

HH = MODELS / "hh" / "LEMS_hh.xml"


def _values(model) -> dict[str, float]:
    return {p.path: p.value for p in model.parameters()}


def test_changed_values_read_back_and_the_rest_is_untouched(tmp_path):
    model, _ = load_simulation(HH)
    new = {"hh_cell/naChans/condDensity": 0.1234, "hh_na/m/forwardRate/midpoint": -41.25,
           "step/amplitude": 0.15, "hh_cell/specificCapacitance/all": 1.05}
    entry = write_values(HH, model.parameters(), new, tmp_path / "tuned")
    assert entry == tmp_path / "tuned" / "LEMS_hh.xml"
    tuned, _ = load_simulation(entry)
    before, after = _values(model), _values(tuned)
    for path, value in before.items():
        assert after[path] == pytest.approx(new.get(path, value), rel=1e-15), path
    # Only the changed attributes differ: same lines, comments kept.
    for name in ("hh_cell.nml", "hh_channels.nml", "LEMS_hh.xml"):
        old = (HH.parent / name).read_text().splitlines()
        out = (tmp_path / "tuned" / name).read_text().splitlines()
        assert len(old) == len(out)
        changed = [a for a, b in zip(old, out) if a != b]
        assert len(changed) == {"hh_cell.nml": 2, "hh_channels.nml": 1, "LEMS_hh.xml": 1}[name]


def test_every_parameter_of_a_corpus_cell_round_trips(corpus, tmp_path):
    cell = corpus / "OpenSourceBrain+ACnet2/neuroConstruct/generatedNeuroML2/pyr_4_sym.cell.nml"
    model = load_model(cell)
    writable = [p for p in model.parameters() if p.origin is not None]
    assert len(writable) > 40
    new = {p.path: p.value * 1.37 + (0.5 if p.value == 0 else 0) for p in writable}
    entry = write_values(cell, model.parameters(), new, tmp_path / "out")
    after = _values(load_model(entry))
    for path, value in new.items():
        assert after[path] == pytest.approx(value, rel=1e-14, abs=1e-300), path
    unchanged = [p for p in model.parameters() if p.origin is None]
    for p in unchanged:
        assert after[p.path] == p.value


def test_unchanged_files_are_byte_copies(tmp_path):
    model, _ = load_simulation(HH)
    write_values(HH, model.parameters(), {"step/amplitude": 0.2}, tmp_path / "t")
    assert filecmp.cmp(HH.parent / "hh_cell.nml", tmp_path / "t" / "hh_cell.nml",
                       shallow=False)


@pytest.mark.parametrize("values, message", [
    ({"step/weight": 2.0}, "not an attribute of its own"),
    ({"no/such/param": 1.0}, "no parameter 'no/such/param'"),
])
def test_values_that_cannot_be_written_write_nothing(tmp_path, values, message):
    model, _ = load_simulation(HH)
    with pytest.raises(ModelError, match=message):
        write_values(HH, model.parameters(), values, tmp_path / "t")
    assert list(tmp_path.iterdir()) == []


def test_a_model_found_through_include_folders_is_copied_self_contained(tmp_path):
    """The cell comes through -I: the copy must load without -I, and load the tuned cell,
    not the original through the old include folder."""
    import shutil
    sim_dir, lib = tmp_path / "sim", tmp_path / "lib"
    sim_dir.mkdir()
    shutil.copytree(HH.parent, lib, ignore=shutil.ignore_patterns("LEMS_*"))
    shutil.copy(HH, sim_dir / HH.name)
    model, _ = load_simulation(sim_dir / HH.name, include_dirs=[lib])
    entry = write_values(sim_dir / HH.name, model.parameters(),
                         {"hh_cell/naChans/condDensity": 0.1111}, tmp_path / "out",
                         include_dirs=[lib])
    tuned, _ = load_simulation(entry)          # no -I
    assert _values(tuned)["hh_cell/naChans/condDensity"] == 0.1111
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "LEMS_hh.xml", "hh_cell.nml", "hh_channels.nml"]


def test_include_folder_below_the_model_folder(tmp_path):
    """The layout of docs/tune.md's worked example: LEMS file here, cell in ./cell, -I cell."""
    import shutil
    shutil.copytree(HH.parent, tmp_path / "cell", ignore=shutil.ignore_patterns("LEMS_*"))
    shutil.copy(HH, tmp_path / HH.name)
    model, _ = load_simulation(tmp_path / HH.name, include_dirs=[tmp_path / "cell"])
    entry = write_values(tmp_path / HH.name, model.parameters(),
                         {"hh_cell/kChans/condDensity": 0.04}, tmp_path / "out",
                         include_dirs=[tmp_path / "cell"])
    tuned, _ = load_simulation(entry)
    assert _values(tuned)["hh_cell/kChans/condDensity"] == 0.04
