"""NEURON backend, mechanism half: the nrnivmodl build cache, and the generated mechanisms
compiled and run in NEURON.

A process can load one mechanism library only, so every NEURON run here is a subprocess
(:func:`run_neuron`).  Builds go to the normal cache ($NML_GRADIFF_CACHE or
~/.cache/nml-gradiff/neuron), so after the first run only the simulations cost time.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import mpmath
import pytest
import sympy

from nml_gradiff.backends.neuron import build as build_module
from nml_gradiff.backends.neuron.build import BuildError, build, library_in
from nml_gradiff.backends.neuron.emit import Binding, emit
from nml_gradiff.errors import ModelError, UnsupportedError
from nml_gradiff.ingest.model import load_model
from nml_gradiff.ir.mechanism import symbol

from test_neuron_emit import MODELS, TEST_NML

neuron = pytest.importorskip("neuron", reason="NEURON (pip install neuron) is not installed")

RUNNER = """\
import json, math, sys
from neuron import h
h.nrn_load_dll(sys.argv[1])
h.load_file("stdrun.hoc")
"""


def run_neuron(lib: Path, code: str) -> dict:
    """Run ``code`` in a fresh Python with NEURON and ``lib`` loaded; it ends by printing one
    JSON object, which is returned."""
    script = RUNNER + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script, str(lib)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the cache

PASSIVE = """\
NEURON { SUFFIX tpas NONSPECIFIC_CURRENT i RANGE g, e }
UNITS { (mA) = (milliamp) (mV) = (millivolt) (S) = (siemens) }
PARAMETER { g = 0.001 (S/cm2) e = -70 (mV) }
ASSIGNED { v (mV) i (mA/cm2) }
BREAKPOINT { i = g*(v - e) }
"""


def test_build_reuses_a_complete_build(tmp_path, monkeypatch):
    lib = build({"tpas": PASSIVE}, cache_dir=tmp_path)
    assert lib.is_file() and lib.name.startswith("libnrnmech")
    folder = lib.parent.parent
    assert (folder / "tpas.mod").read_text() == PASSIVE

    def no_compile(*args):
        raise AssertionError("compiled again")
    monkeypatch.setattr(build_module, "_compile", no_compile)
    assert build({"tpas.mod": PASSIVE}, cache_dir=tmp_path) == lib   # with or without .mod
    monkeypatch.setenv("NML_GRADIFF_CACHE", str(tmp_path))
    assert build({"tpas": PASSIVE}) == lib
    # other content, other folder (would compile: the stub says so)
    with pytest.raises(AssertionError, match="compiled again"):
        build({"tpas": PASSIVE.replace("-70", "-60")}, cache_dir=tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cache_key_names_no_installation_path(tmp_path, monkeypatch):
    """A new virtual environment (CI makes one in a new temporary folder every run) with the
    same NEURON reuses the builds: the key holds NEURON's version and library content."""
    lib = build({"tpas": PASSIVE}, cache_dir=tmp_path / "cache")
    real = build_module._libnrniv(build_module.nrnivmodl())
    venv = tmp_path / "elsewhere" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib").mkdir()
    tool = venv / "bin" / "nrnivmodl"
    tool.write_text(build_module.nrnivmodl().read_text())
    (venv / "lib" / real.name).symlink_to(real)

    def no_compile(*args):
        raise AssertionError("compiled again")
    monkeypatch.setattr(build_module, "_compile", no_compile)
    monkeypatch.setattr(build_module, "nrnivmodl", lambda: tool)
    assert build({"tpas": PASSIVE}, cache_dir=tmp_path / "cache") == lib
    # another NEURON library (another build of NEURON): another key
    (venv / "lib" / real.name).unlink()
    (venv / "lib" / real.name).write_bytes(b"not the same library")
    with pytest.raises(AssertionError, match="compiled again"):
        build({"tpas": PASSIVE}, cache_dir=tmp_path / "cache")


def test_cache_key_ignores_the_header_comment(tmp_path, monkeypatch):
    """The header names the source file: a model copied to a new temporary folder (every
    test run, every tune run) has the same code and must not compile again."""
    lib = build({"tpas": "COMMENT\n source: /tmp/a/x.nml\nENDCOMMENT\n" + PASSIVE},
                cache_dir=tmp_path)

    def no_compile(*args):
        raise AssertionError("compiled again")
    monkeypatch.setattr(build_module, "_compile", no_compile)
    assert build({"tpas": "COMMENT\n source: /tmp/b/x.nml\nENDCOMMENT\n" + PASSIVE},
                 cache_dir=tmp_path) == lib
    with pytest.raises(AssertionError, match="compiled again"):     # the code counts
        build({"tpas": PASSIVE.replace("-70", "-60")}, cache_dir=tmp_path)


def test_build_failure_reports_the_compiler_output(tmp_path):
    broken = PASSIVE.replace("BREAKPOINT { i = g*(v - e) }", "BREAKPOINT { i = g*(v - e }")
    with pytest.raises(BuildError) as info:
        build({"tpas": broken}, cache_dir=tmp_path)
    assert "tpas.mod" in str(info.value) and "line" in str(info.value)
    assert list(tmp_path.iterdir()) == []     # no half build left behind


def test_publish_keeps_the_first_complete_build(tmp_path):
    final, work = tmp_path / "key", tmp_path / ".key.work"
    for folder in (final, work):
        (folder / "x86_64").mkdir(parents=True)
        (folder / "x86_64" / "libnrnmech.so").write_text(folder.name)
    build_module._publish(work, final)        # another process was first: no error
    assert library_in(final).read_text() == "key"


def test_build_rejects_bad_names(tmp_path):
    with pytest.raises(ValueError):
        build({"../evil": PASSIVE}, cache_dir=tmp_path)
    with pytest.raises(ValueError):
        build({}, cache_dir=tmp_path)


# ----------------------------------------------------------------------------- HH


@pytest.fixture(scope="module")
def hh_mechs():
    return load_model(MODELS / "hh" / "hh_channels.nml").mechanisms


@pytest.fixture(scope="module")
def hh_lib(hh_mechs):
    return build(dict(emit(m) for m in hh_mechs.values()))


HH_RUN = """
def cell(kind):
    s = h.Section(name=kind)
    s.L = s.diam = math.sqrt(1000 / math.pi)          # 1000 um2
    s.cm = 1
    if kind == "ours":
        for m, g, e in (("hh_na", .12, 50), ("hh_k", .036, -77), ("hh_leak", .0003, -54.387)):
            s.insert(m)
            setattr(s(0.5), "gmax_" + m, g)
            setattr(s(0.5), "erev_" + m, e)
    else:
        s.insert("hh")
        seg = s(0.5)
        seg.gnabar_hh, seg.gkbar_hh, seg.gl_hh, seg.el_hh = .12, .036, .0003, -54.387
        seg.ena, seg.ek = 50, -77
    stim = h.IClamp(s(0.5))
    stim.delay, stim.dur, stim.amp = 20, 60, 0.1
    nc = h.NetCon(s(0.5)._ref_v, None, sec=s)
    nc.threshold = 0
    spikes = h.Vector()
    nc.record(spikes)
    v = h.Vector().record(s(0.5)._ref_v)
    return s, stim, nc, spikes, v

h.celsius = 6.3
h.dt = 0.01
out = {}
for table in (0, 1):
    h.usetable_hh = table
    ours, builtin = cell("ours"), cell("hh")
    h.finitialize(-65)
    h.continuerun(100)
    out[table] = {"ours": list(ours[3]), "hh": list(builtin[3]),
                  "area": ours[0](0.5).area(),
                  "max_dv": max(abs(a - b) for a, b in zip(ours[4], builtin[4]))}
print(json.dumps(out))
"""


def test_hh_matches_neurons_builtin_hh(hh_lib, capsys):
    """Same equations as NEURON's hh at 6.3 degC (hh's q10 factor is 1 there).  With hh's rate
    tables off, both compute the same rates by the same cnexp update: they agree to rounding.
    hh's default tables (linear interpolation on a 1 mV grid) shift its spikes by up to ~0.2 ms
    over 5 spikes; ours has no tables."""
    out = run_neuron(hh_lib, HH_RUN)
    exact, tables = out["0"], out["1"]
    assert exact["area"] == pytest.approx(1000)
    assert len(exact["ours"]) >= 4 and len(exact["ours"]) == len(exact["hh"])
    assert max(abs(a - b) for a, b in zip(exact["ours"], exact["hh"])) < 0.1
    assert exact["max_dv"] < 1e-6
    assert tables["ours"] == exact["ours"]
    with capsys.disabled():
        diffs = [round(a - b, 3) for a, b in zip(tables["ours"], tables["hh"])]
        print(f"\nHH vs builtin hh: spikes {exact['ours']}; max |dV| {exact['max_dv']:.2e} mV "
              f"without hh's tables; with them spike-time differences {diffs} ms")


GATE_RUN = """
s = h.Section(name="s")
s.insert("hh_na")
s.insert("hh_k")                  # gmax 0: no current, so v stays where it is put
h.dt = 0.025
out = []
for vc in VOLTAGES:
    h.finitialize(-65)
    q0 = [s(0.5).m_q_hh_na, s(0.5).h_q_hh_na, s(0.5).n_q_hh_k]
    for seg in s.allseg():        # the zero-area end nodes too, or axial current flows
        seg.v = vc
    h.fadvance()
    out.append({"v": s(0.5).v, "q0": q0,
                "q1": [s(0.5).m_q_hh_na, s(0.5).h_q_hh_na, s(0.5).n_q_hh_k]})
print(json.dumps(out))
"""

#: Includes -40 and -55 mV, where the m and n forward rates are 0/0 (exprelr(0)).
VOLTAGES = [-80.0, -55.0, -40.0, -20.0, 0.0, 30.0]


def gate_inf_tau(mech, gate: str, v: float) -> tuple[mpmath.mpf, mpmath.mpf]:
    """inf and tau of ``gate`` at ``v`` from the IR expressions, in 50-digit arithmetic."""
    values = {symbol(n): sympy.Float(p.value, 50) for n, p in mech.parameters.items()}
    values[symbol("v")] = sympy.Float(v, 50)
    for n, d in mech.derived.items():
        expr = d.expr.xreplace(values)
        if not expr.free_symbols:
            values[symbol(n)] = expr.evalf(50)
    return (mpmath.mpf(str(values[symbol(f"{gate}_inf")])),
            mpmath.mpf(str(values[symbol(f"{gate}_tau")])))


def test_gate_update_is_exact_for_frozen_v(hh_lib, hh_mechs):
    """One step at clamped v moves each gate to inf + (q0 - inf) exp(-dt/tau): cnexp on the
    closed form is the exact solution for frozen v."""
    out = run_neuron(hh_lib, f"VOLTAGES = {VOLTAGES}\n" + GATE_RUN)
    mpmath.mp.dps = 50
    gates = [(hh_mechs["hh_na"], "m"), (hh_mechs["hh_na"], "h"), (hh_mechs["hh_k"], "n")]
    for vc, row in zip(VOLTAGES, out):
        assert row["v"] == vc
        for k, (mech, gate) in enumerate(gates):
            q0 = gate_inf_tau(mech, gate, -65.0)[0]
            inf, tau = gate_inf_tau(mech, gate, vc)
            assert abs(row["q0"][k] - q0) < 1e-15
            expected = inf + (q0 - inf) * mpmath.exp(-mpmath.mpf("0.025") / tau)
            assert abs(row["q1"][k] - expected) < 1e-12, (gate, vc)


EXPRELR_POINTS = [0.0, 1e-300, -1e-300, 1e-16, -1e-16, 1e-10, -1e-10, 1e-5, -1e-5, 0.01, -0.01,
                  0.5, -0.5, 1.0, -1.0, 10.0, -10.0, 36.0, -40.0, 699.0, -699.0, 701.0, -701.0,
                  1000.0, -1000.0]


def test_exprelr_function_is_accurate(hh_lib):
    code = f"print(json.dumps([h.exprelr_hh_na(x) for x in {EXPRELR_POINTS}]))"
    values = run_neuron(hh_lib, code)
    mpmath.mp.dps = 50
    for x, got in zip(EXPRELR_POINTS, values):
        exact = mpmath.mpf(1) if x == 0 else mpmath.mpf(x) / mpmath.expm1(mpmath.mpf(x))
        assert abs(got - exact) <= 4e-16 * abs(exact) + 1e-300, x


# ----------------------------------------------------------------------------- other kinds


@pytest.fixture(scope="module")
def test_mechs(tmp_path_factory):
    path = tmp_path_factory.mktemp("nml") / "nrn_backend_test.nml"
    path.write_text(TEST_NML)
    return load_model(path).mechanisms


@pytest.fixture(scope="module")
def test_lib(test_mechs):
    names = ("caLeak", "nsLeak", "pool", "pulse", "iaf")
    return build(dict(emit(test_mechs[n]) for n in names))


POOL_RUN = """
s = h.Section(name="s")
s.L = s.diam = math.sqrt(1000 / math.pi)
for m, e in (("caLeak", 100.0), ("nsLeak", -230.0)):   # equal and opposite at -65 mV
    s.insert(m)
    setattr(s(0.5), "gmax_" + m, G)
    setattr(s(0.5), "erev_" + m, e)
s.insert("pool")
s(0.5).initialConcentration_pool = C0
h.dt = 0.025
cai = h.Vector().record(s(0.5)._ref_cai)
v = h.Vector().record(s(0.5)._ref_v)
h.finitialize(-65)
h.continuerun(100)
print(json.dumps({"cai": list(cai), "v": [min(v), max(v)], "ica": s(0.5).ica,
                  "shellVolume": s(0.5).shellVolume_pool, "area": s(0.5).area()}))
"""


def test_decaying_pool_against_closed_form(test_lib, test_mechs):
    """A constant Ca current into a decayingPoolConcentrationModel: the LEMS equation
    dC/dt = iCa/(2 F V) - (C - rest)/tau with V the shell volume as Cells.xml defines it
    (with its pi = 3.14159) has the closed form C(t) = Css + (C0 - Css) exp(-t/tau)."""
    g, c0 = 1e-4, 5e-5
    out = run_neuron(test_lib, f"G, C0 = {g}, {c0}\n" + POOL_RUN)
    assert out["v"] == [-65.0, -65.0]
    ica = g * (-65.0 - 100.0)                       # mA/cm2, outward positive
    assert out["ica"] == pytest.approx(ica, rel=1e-15)
    pool = test_mechs["pool"].parameters
    rest, tau = pool["restingConc"].value, pool["decayConstant"].value
    thick = pool["shellThickness"].value
    area = out["area"]                              # um2
    i_ca = -ica * area * 1e-2                       # nA into the cell: mA/cm2 * um2 = 1e-2 nA
    pi = 3.14159
    r = math.sqrt(area / (4 * pi))
    volume = 4 * r ** 3 * pi / 3 - 4 * (r - thick) ** 3 * pi / 3     # um3
    assert out["shellVolume"] == pytest.approx(volume, rel=1e-14)
    faraday = 96485.3
    influx = i_ca * 1e-9 / (2 * faraday * volume * 1e-18) * 1e-3   # mol/m3/s = mM/s -> mM/ms
    steady = rest + tau * influx
    for k, got in enumerate(out["cai"]):
        expected = steady + (c0 - steady) * math.exp(-k * 0.025 / tau)
        assert got == pytest.approx(expected, rel=1e-11), k
    assert out["cai"][-1] > 10 * c0                 # Ca flowed in: the sign is right


LEAK_RUN = """
s = h.Section(name="s")
s.L = s.diam = math.sqrt(1000 / math.pi)
s.insert("nsLeak")
s(0.5).gmax_nsLeak, s(0.5).erev_nsLeak = G, E
stim = h.IClamp(s(0.5))
stim.delay, stim.dur, stim.amp = 0, 1e9, AMP
v = h.Vector().record(s(0.5)._ref_v)
h.dt = DT
h.finitialize(-65)
h.continuerun(20)
print(json.dumps({"v": list(v), "area": s(0.5).area()}))
"""


def test_conductance_hint_gives_neurons_step_the_exact_conductance(test_lib, test_mechs,
                                                                   tmp_path):
    """An ohmic channel names its conductance (CONDUCTANCE gchan, emit.ohmic_conductance):
    nocmodl then evaluates the current once per step with di/dv = gchan, and NEURON's
    backward-Euler step of a passive compartment is v' = v + (I - g (v - e))/(g + cm/dt)
    with the exact g: measured 7e-14 mV from that recurrence, against 5.5e-13 mV for the
    same mod without the hint (NEURON's 0.001 mV difference quotient; jnml_neuron)."""
    import neuron
    nocmodl = Path(neuron.__file__).parent / ".data" / "bin" / "nocmodl"
    if not nocmodl.exists():
        pytest.skip(f"no nocmodl at {nocmodl}")
    (tmp_path / "nsLeak.mod").write_text(emit(test_mechs["nsLeak"])[1])
    subprocess.run([str(nocmodl), "nsLeak.mod"], cwd=tmp_path, check=True,
                   capture_output=True)
    cur = (tmp_path / "nsLeak.cpp").read_text().split("static void nrn_cur(")[-1]
    cur = cur.split("static void nrn_jacob(")[0]
    assert "_g = gchan;" in cur and ".001" not in cur     # no difference quotient
    g, e, amp, dt = 1e-3, -80.0, 0.05, 0.025       # v relaxes from -65 to -75 mV
    out = run_neuron(test_lib, f"G, E, AMP, DT = {g}, {e}, {amp}, {dt}\n" + LEAK_RUN)
    stim = amp * 100 / out["area"]                  # nA over um2 -> mA/cm2
    d = g + 1e-3 * 1.0 / dt                         # S/cm2: cm = 1 uF/cm2 over dt ms
    expected = [-65.0]
    for _ in range(len(out["v"]) - 1):
        expected.append(expected[-1] + (stim - g * (expected[-1] - e)) / d)
    assert out["v"][0] - out["v"][-1] > 5              # v moved
    assert max(abs(a - b) for a, b in zip(out["v"], expected)) < 2e-13


PULSE_RUN = """
def section():
    s = h.Section()
    s.L = s.diam = math.sqrt(1000 / math.pi)
    s.insert("pas")
    s(0.5).g_pas, s(0.5).e_pas = 1e-4, -65
    return s
a, b = section(), section()
ours = h.pulse(a(0.5))
clamp = h.IClamp(b(0.5))
clamp.delay, clamp.dur, clamp.amp = 10, 20, 0.1
va, vb = h.Vector().record(a(0.5)._ref_v), h.Vector().record(b(0.5)._ref_v)
h.dt = 0.025
h.finitialize(-65)
h.continuerun(40)
print(json.dumps({"ours": list(va), "iclamp": list(vb)}))
"""


def test_input_current_sign_matches_iclamp(test_lib):
    """LEMS input currents are positive into the cell, and so is NEURON's ELECTRODE_CURRENT
    (IClamp): the pulseGenerator depolarizes exactly like an IClamp of the same amplitude,
    switching in the same steps (both test t in BREAKPOINT, at mid-step): the same trace to
    round-off (measured 0 mV)."""
    out = run_neuron(test_lib, PULSE_RUN)
    ours, ref = out["ours"], out["iclamp"]
    peak = max(ref) - (-65)
    assert peak > 5                                  # depolarized by the clamp
    assert max(abs(x - y) for x, y in zip(ours, ref)) < 1e-12 * peak


IAF_RUN = """
s = h.Section()
s.L = s.diam = math.sqrt(1000 / math.pi)
cell = h.iaf(s(0.5))
s.cm = cell.Csec * 1e5 / s(0.5).area()      # cm*area = Csec: nF -> uF/cm2 over um2
drive = h.IClamp(s(0.5))
drive.delay, drive.dur, drive.amp = 0, 1000, 0.2
nc = h.NetCon(cell, None)
spikes = h.Vector()
nc.record(spikes)
v = h.Vector().record(s(0.5)._ref_v)
h.dt = 0.025
h.finitialize(-60)
print(json.dumps({"v0": s(0.5).v}), file=sys.stderr)
h.continuerun(120)
print(json.dumps({"spikes": list(spikes), "v0": v[0], "vmin": min(v), "vmax": max(v)}))
"""


def test_iaf_cell_against_closed_form(test_lib, test_mechs):
    """An iafCell driven by 0.2 nA: v relaxes to EL + I/gL = -50 mV > thresh with tau = C/gL,
    so it fires first at tau ln((-50 - EL)/(-50 - thresh)) and then every
    tau ln((-50 - reset)/(-50 - thresh)).  NEURON integrates the section's v (backward
    Euler) and checks thresh once per step: within 0.1 ms."""
    out = run_neuron(test_lib, IAF_RUN)
    p = {n: q.value for n, q in test_mechs["iaf"].parameters.items()}
    tau = p["C"] / p["leakConductance"]
    v_inf = p["leakReversal"] + 0.2 / p["leakConductance"]
    first = tau * math.log((v_inf - p["leakReversal"]) / (v_inf - p["thresh"]))
    isi = tau * math.log((v_inf - p["reset"]) / (v_inf - p["thresh"]))
    assert out["v0"] == p["leakReversal"]           # the LEMS initial v, not finitialize's
    spikes = out["spikes"]
    assert len(spikes) == 5
    assert spikes[0] == pytest.approx(first, abs=0.1)
    for k in range(1, len(spikes)):
        assert spikes[k] - spikes[k - 1] == pytest.approx(isi, abs=0.1)
    assert out["vmax"] <= p["thresh"] + 1 and out["vmin"] >= p["reset"] - 5


# ----------------------------------------------------------------------------- corpus


#: What the NEURON backend refuses in the corpus channels and pools today (a construct named
#: in every refusal message).
KNOWN_REFUSALS = ("requirement iDensityCa",)
BATCH = 30


def corpus_mods(corpus: Path) -> tuple[dict[str, str], Counter]:
    """Every channel and concentration model in the corpus emitted: {mod text: name}, and the
    refusals by reason."""
    from test_corpus_ingest import include_dirs, model_files
    mods: dict[str, str] = {}
    refused: Counter = Counter()
    seen: set[tuple] = set()
    for path in model_files():
        try:
            model = load_model(path, include_dirs=include_dirs(path))
        except ModelError:
            continue  # not standalone: test_corpus_ingest.py accounts for these
        for mech in model.mechanisms.values():
            key = (mech.name, mech.component_type, mech.source)
            if mech.kind not in ("channel", "concentration") or key in seen:
                continue
            seen.add(key)
            try:
                name, text = emit(mech, binding=Binding(vshift="vShift" in mech.reads))
            except UnsupportedError as exc:
                refused[str(exc)] += 1
                continue
            mods.setdefault(text, name)
    return mods, refused


def batches(mods: dict[str, str], size: int) -> list[dict[str, str]]:
    """Deterministic batches (same batches, same cache keys, every run); a name at most once
    per batch (one library cannot define a mechanism twice)."""
    out: list[dict[str, str]] = []
    for text, name in sorted(mods.items(), key=lambda item: (item[1], item[0])):
        for batch in out:
            if name not in batch and len(batch) < size:
                batch[name] = text
                break
        else:
            out.append({name: text})
    return out


SMOKE_RUN = """
out = {}
for name in NAMES:
    s = h.Section(name="s_" + name)
    s.insert(name)
    h.finitialize(-65)
    for k in range(10):
        h.fadvance()
    mech = getattr(s(0.5), name)
    bad = [rv.name() for rv in mech if not math.isfinite(rv[0])]
    out[name] = bad
    h.delete_section(sec=s)
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.corpus
def test_corpus_channels_and_pools_compile_and_run(corpus, capsys):
    mods, refused = corpus_mods(corpus)
    groups = batches(mods, BATCH)
    failures = []
    for group in groups:
        try:
            lib = build(group)
        except BuildError as exc:
            failures.append(str(exc))
            continue
        bad = run_neuron(lib, f"NAMES = {sorted(group)}\n" + SMOKE_RUN)
        failures += [f"{name}: not finite after 10 steps: {vars_}"
                     for name, vars_ in bad.items() if vars_]
    with capsys.disabled():
        print(f"\nNEURON backend on the corpus: {len(mods)} channels and concentration models "
              f"emitted and compiled in {len(groups)} libraries; refused "
              f"{sum(refused.values())}:")
        for reason, count in sorted(refused.items()):
            print(f"  {count} x {reason}")
    assert not failures, "\n".join(failures)
    assert all(any(k in r for k in KNOWN_REFUSALS) for r in refused), refused
    assert len(mods) > 150


JNML_RUN = """
s = h.Section(name="s")
s.insert("hh_na")
s.insert("hh_k")
s(0.5).gmax_hh_na = 0.12          # a current, to see which gates it uses
s(0.5).erev_hh_na = 50
h.dt = 0.025
out = []
for vc in VOLTAGES:
    h.finitialize(-65)
    q0 = [s(0.5).m_q_hh_na, s(0.5).h_q_hh_na, s(0.5).n_q_hh_k]
    for seg in s.allseg():
        seg.v = vc
    h.fadvance()                  # the current of this step is computed before v moves
    out.append({"q0": q0, "ina": s(0.5).ina,
                "q1": [s(0.5).m_q_hh_na, s(0.5).h_q_hh_na, s(0.5).n_q_hh_k], "v1": s(0.5).v})
print(json.dumps(out))
"""


def test_jnml_neuron_integration_is_forward_euler_with_lagged_gates(hh_mechs):
    """integration="jnml_neuron" reproduces jNeuroML's exported mods: q1 = q0 + dt*(inf -
    q0)/tau at the step's new v (forward Euler), and the first step's current uses the gates
    before INITIAL set them (0): no sodium current at all."""
    lib = build(dict(emit(m, integration="jnml_neuron") for m in hh_mechs.values()))
    out = run_neuron(lib, f"VOLTAGES = {VOLTAGES}\n" + JNML_RUN)
    mpmath.mp.dps = 50
    gates = [(hh_mechs["hh_na"], "m"), (hh_mechs["hh_na"], "h"), (hh_mechs["hh_k"], "n")]
    for vc, row in zip(VOLTAGES, out):
        assert row["ina"] == 0.0
        for k, (mech, gate) in enumerate(gates):
            inf, tau = gate_inf_tau(mech, gate, row["v1"])
            q0 = mpmath.mpf(row["q0"][k])
            expected = q0 + mpmath.mpf("0.025") * (inf - q0) / tau
            assert abs(row["q1"][k] - expected) < 1e-12, (gate, vc)
