"""Dimensions, units, quantity parsing and the internal (NEURON) unit system."""

from __future__ import annotations

import zipfile

import pytest
import sympy
from hypothesis import given, strategies as st
from lxml import etree

from nml_gradiff.errors import ModelError, UnsupportedError
from nml_gradiff.ingest import units as ingest_units
from nml_gradiff.ingest.coretypes import jar_path
from nml_gradiff.ingest.units import Quantity, UnitSystem, format_internal
from nml_gradiff.ir import units as U
from nml_gradiff.ir.units import Dimension, InternalUnit, internal_unit, to_internal, to_si


@pytest.fixture(scope="module")
def std() -> UnitSystem:
    return UnitSystem.standard()


def _core_elements(kind: str):
    """The <Dimension>/<Unit> elements of the standard file, read independently of the code
    under test (straight from the jar)."""
    jar = jar_path()
    with zipfile.ZipFile(jar) as archive:
        root = etree.fromstring(archive.read(ingest_units.CORE_DIMENSIONS_MEMBER))
    return [el for el in root if isinstance(el.tag, str) and etree.QName(el).localname == kind]


CORE_UNITS = [(el.get("symbol"), el.get("dimension"), int(el.get("power", "0")),
               float(el.get("scale", "1")), float(el.get("offset", "0")))
              for el in _core_elements("Unit")]
CORE_DIMENSIONS = [(el.get("name"), tuple(int(el.get(b, "0")) for b in U.BASES))
                   for el in _core_elements("Dimension")]


# ---- the standard set --------------------------------------------------------------------

def test_standard_set_is_complete(std):
    assert len(CORE_UNITS) == 74 and len(std.units) == 74
    assert {name for name, _ in CORE_DIMENSIONS} | {"none"} == set(std.dimensions)


@pytest.mark.parametrize("symbol,dim,power,scale,offset", CORE_UNITS,
                         ids=[u[0] for u in CORE_UNITS])
def test_every_core_unit_parses_and_converts(std, symbol, dim, power, scale, offset):
    for number in (1.0, -2.5, 0.0, 1e-3):
        for text in (f"{number!r}{symbol}", f"{number!r} {symbol}"):
            q = std.parse_quantity(text, dim)
            assert q.si == pytest.approx(number * scale * 10.0 ** power + offset,
                                         rel=1e-14, abs=1e-300)
            assert q.dimension == std.dimension(dim)
            back = to_si(q.internal, q.dimension)
            internal_offset = internal_unit(q.dimension).offset     # degC: 273.15
            assert back == pytest.approx(q.si, rel=1e-15, abs=1e-15 * internal_offset)


@pytest.mark.parametrize("name,exponents", CORE_DIMENSIONS, ids=[d[0] for d in CORE_DIMENSIONS])
def test_ir_constants_match_core_dimensions(name, exponents):
    constant = getattr(U, {"idealGasConstantDims": "IDEAL_GAS_CONSTANT"}.get(
        name, "".join("_" + c if c.isupper() else c for c in name).upper()))
    assert constant.name == name and constant.exponents == exponents
    assert internal_unit(constant).symbol, "every core dimension but none has a named unit"


@pytest.mark.parametrize("text,si,internal,symbol", [
    ("1 mS_per_cm2", 10.0, 0.001, "S_per_cm2"),
    ("120mS_per_cm2", 1200.0, 0.12, "S_per_cm2"),
    ("-65mV", -0.065, -65.0, "mV"),
    ("-65 mV", -0.065, -65.0, "mV"),
    ("37 degC", 310.15, 37.0, "degC"),
    ("6.3 degC", 279.45, 6.3, "degC"),
    ("1 uF_per_cm2", 0.01, 1.0, "uF_per_cm2"),
    ("1 ohm_cm", 0.01, 1.0, "ohm_cm"),
    ("0.1 nA", 1e-10, 0.1, "nA"),
    ("1 um", 1e-6, 1.0, "um"),
    ("2.5e-4mM", 2.5e-4, 2.5e-4, "mM"),
    ("1 M", 1000.0, 1000.0, "mM"),
    ("0.025ms", 2.5e-5, 0.025, "ms"),
    ("10 per_ms", 1e4, 10.0, "per_ms"),
    ("1 kohm_cm", 10.0, 1000.0, "ohm_cm"),
    ("1 uA_per_cm2", 0.01, 0.001, "mA_per_cm2"),
    ("1 pF", 1e-12, 0.001, "nF"),
    ("1 nS", 1e-9, 0.001, "uS"),
    ("100 Mohm", 1e8, 100.0, "Mohm"),
    ("1 cm2", 1e-4, 1e8, "um2"),
    ("1 litre", 1e-3, 1e15, "um3"),
    ("1 cm_per_s", 0.01, 1.0, "cm_per_s"),
    ("1 nS_per_mV", 1e-6, 1e-3, "uS_per_mV"),
    ("96485.3 C_per_mol", 96485.3, 96485.3, "C_per_mol"),
    ("8.3144621 J_per_K_per_mol", 8.3144621, 8.3144621, "J_per_K_per_mol"),
    ("0.5", 0.5, 0.5, ""),
])
def test_examples(std, text, si, internal, symbol):
    q = std.parse_quantity(text)
    assert q.si == pytest.approx(si, rel=1e-15)
    assert q.internal == pytest.approx(internal, rel=1e-13)
    assert q.internal_symbol == symbol
    # via SI the value may round once more than the decimal route q.internal takes
    value, unit = format_internal(q.si, q.dimension)
    assert unit == symbol and value == pytest.approx(q.internal, rel=1e-13)


def test_powers_of_ten_round_exactly(std):
    # -65 mV must be the double -0.065, and back exactly -65 (not -65.00000000000001)
    q = std.parse_quantity("-65mV")
    assert q.si == -0.065 and q.internal == -65.0
    assert std.parse_quantity("120mS_per_cm2").internal == 0.12


# ---- the internal unit table ---------------------------------------------------------------

INTERNAL_SYMBOLS = {
    "time": "ms", "per_time": "per_ms", "voltage": "mV", "per_voltage": "per_mV",
    "conductance": "uS", "conductanceDensity": "S_per_cm2", "capacitance": "nF",
    "specificCapacitance": "uF_per_cm2", "resistance": "Mohm", "resistivity": "ohm_cm",
    "current": "nA", "currentDensity": "mA_per_cm2", "length": "um", "area": "um2",
    "volume": "um3", "concentration": "mM", "permeability": "cm_per_s", "temperature": "degC",
    "conductance_per_voltage": "uS_per_mV", "none": "", "charge": "C",
    "charge_per_mole": "C_per_mol", "idealGasConstantDims": "J_per_K_per_mol",
    "substance": "mol", "rho_factor": "mol_per_m_per_A_per_s",
}


@pytest.mark.parametrize("name,symbol", INTERNAL_SYMBOLS.items())
def test_internal_table(std, name, symbol):
    assert internal_unit(std.dimension(name)).symbol == symbol


def test_internal_units_agree_with_standard_units(std):
    """Where an internal symbol is also a NeuroML unit, both must mean the same thing."""
    checked = 0
    for name in INTERNAL_SYMBOLS:
        iu = internal_unit(std.dimension(name))
        if iu.symbol in std.units:
            unit = std.unit(iu.symbol)
            assert unit.dimension == std.dimension(name)
            assert unit.factor == pytest.approx(iu.scale, rel=1e-15)
            assert unit.offset == iu.offset
            checked += 1
    assert checked == len(INTERNAL_SYMBOLS) - 2     # all but "" and uS_per_mV


def test_internal_unit_matches_by_exponents_not_name():
    potential = Dimension.of("potential", m=1, l=2, t=-3, i=-1)
    assert internal_unit(potential) == InternalUnit("mV", 1e-3)
    assert to_internal(-0.065, potential) == -65.0


def test_physical_resistivity_also_maps_to_ohm_cm():
    # the standard file declares resistivity as m=2 l=2; ohm*m is really m=1 l=3
    assert internal_unit(U.RESISTANCE * U.LENGTH).symbol == "ohm_cm"


@pytest.mark.parametrize("dim,symbol", [
    (Dimension.of(m=1, l=2, t=-3, i=-1, k=-1), "kg_m2_per_s3_per_A_per_K"),
    (Dimension.of(m=1, l=2, t=-2), "kg_m2_per_s2"),
    (Dimension.of(t=-2), "per_s2"),
    (Dimension.of(j=1, n=-1), "cd_per_mol"),
])
def test_unlisted_dimensions_stay_si(dim, symbol):
    assert dim.si_symbol() == symbol
    assert internal_unit(dim) == InternalUnit(symbol, 1.0)
    assert to_internal(2.5, dim) == 2.5 == to_si(2.5, dim)


def test_si_symbol_of_standard_dimensions():
    assert U.VOLTAGE.si_symbol() == "kg_m2_per_s3_per_A"
    assert U.DIMENSIONLESS.si_symbol() == "" and str(U.DIMENSIONLESS) == "none"
    assert str(Dimension.of(t=-1)) == "per_s"


def test_neuron_units_are_not_coherent():
    """cm * dv/dt in internal units is uA/cm2, not the internal mA/cm2: hence per-quantity
    conversion (see the module docstring)."""
    product = to_si(1, U.SPECIFIC_CAPACITANCE) * to_si(1, U.VOLTAGE) / to_si(1, U.TIME)
    assert product == pytest.approx(to_si(1e-3, U.CURRENT_DENSITY))
    # ... while some products do fit: S/cm2 * mV = mA/cm2, uS * mV = nA
    assert to_si(1, U.CONDUCTANCE_DENSITY) * to_si(1, U.VOLTAGE) == pytest.approx(
        to_si(1, U.CURRENT_DENSITY))
    assert to_si(1, U.CONDUCTANCE) * to_si(1, U.VOLTAGE) == pytest.approx(to_si(1, U.CURRENT))


ROUND_TRIP_DIMENSIONS = sorted(U._TABLE, key=lambda d: d.exponents) + [
    Dimension.of(m=1, l=2, t=-2)]
FINITE = st.one_of(st.just(0.0),
                   st.floats(min_value=1e-280, max_value=1e280),
                   st.floats(min_value=-1e280, max_value=-1e-280))


@given(x=FINITE, dim=st.sampled_from(ROUND_TRIP_DIMENSIONS))
def test_round_trip(x, dim):
    offset = internal_unit(dim).offset
    # an offset (degC) costs absolute precision: x - 273.15 + 273.15 rounds at 273.15's ulp
    tolerance = 1e-15 * max(abs(x), offset)
    assert abs(to_si(to_internal(x, dim), dim) - x) <= tolerance
    assert abs(to_internal(to_si(x, dim), dim) - x) <= 1e-15 * max(abs(x), offset * 2)


# ---- dimension algebra ------------------------------------------------------------------------

def test_dimension_algebra():
    assert U.VOLTAGE * U.CONDUCTANCE == U.CURRENT
    assert U.CONDUCTANCE_DENSITY * U.VOLTAGE == U.CURRENT_DENSITY
    assert U.CURRENT / U.VOLTAGE == U.CONDUCTANCE
    assert U.CURRENT_DENSITY * U.AREA == U.CURRENT
    assert U.SPECIFIC_CAPACITANCE * U.VOLTAGE / U.TIME == U.CURRENT_DENSITY
    assert U.LENGTH ** 2 == U.AREA and U.LENGTH ** 3 == U.VOLUME
    assert U.TIME ** -1 == U.PER_TIME and U.AREA ** 0.5 == U.LENGTH
    assert U.VOLTAGE ** 0 == U.DIMENSIONLESS and (U.VOLTAGE / U.VOLTAGE).is_dimensionless
    assert U.CONDUCTANCE / U.VOLTAGE == U.CONDUCTANCE_PER_VOLTAGE
    assert U.AREA ** sympy.Rational(3, 2) == U.VOLUME and U.LENGTH ** sympy.Integer(2) == U.AREA


def test_fractional_dimension_is_an_error():
    with pytest.raises(ModelError, match="fractional"):
        U.LENGTH ** 0.5


def test_dimension_equality_ignores_name():
    potential = Dimension.of("potential", m=1, l=2, t=-3, i=-1)
    assert potential == U.VOLTAGE and hash(potential) == hash(U.VOLTAGE)
    assert {U.VOLTAGE: 1}[potential] == 1
    assert U.VOLTAGE != U.CURRENT


def test_dimension_needs_seven_integer_exponents():
    with pytest.raises(ValueError):
        Dimension("x", (1, 2))
    with pytest.raises(ValueError):
        Dimension("x", (0.5, 0, 0, 0, 0, 0, 0))


# ---- quantity syntax ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,si", [
    ("-65mV", -0.065), ("-65 mV", -0.065), ("  -65\tmV ", -0.065), ("+65mV", 0.065),
    ("-6.5e1mV", -0.065), ("-6.5E+1 mV", -0.065), ("-650e-1mV", -0.065), (".5 V", 0.5),
    ("5. V", 5.0), ("-0.065 V", -0.065), ("1e-3", 1e-3), ("0.5", 0.5), ("+3", 3.0),
    ("2e", 2 * 1.602176634e-19),      # 2 elementary charges, as in jLEMS
])
def test_syntax(std, text, si):
    assert std.parse_quantity(text).si == pytest.approx(si, rel=1e-15)


def test_plain_number_is_dimensionless(std):
    q = std.parse_quantity("0.5")
    assert q == Quantity(0.5, U.DIMENSIONLESS)
    assert std.parse_quantity("0.5", "none").si == 0.5


def test_any_dimension_takes_everything(std):
    assert std.parse_quantity("3", "*").si == 3.0
    assert std.parse_quantity("3mV", "*").dimension == U.VOLTAGE


def test_expected_dimension_object_names_the_result(std):
    potential = Dimension.of("potential", m=1, l=2, t=-3, i=-1)
    q = std.parse_quantity("-65mV", potential)
    assert q.dimension.name == "potential" and q.si == -0.065


# ---- errors ------------------------------------------------------------------------------------

WHERE = {"file": "cell.nml", "line": 12, "element": "channelDensity"}


def _error(std, text, expected=None) -> ModelError:
    with pytest.raises(ModelError) as info:
        std.parse_quantity(text, expected, **WHERE)
    err = info.value
    assert (err.file, err.line, err.element) == ("cell.nml", 12, "channelDensity")
    return err


def test_unknown_unit(std):
    assert _error(std, "10mVV").message == "unknown unit 'mVV' in '10mVV'"
    assert _error(std, "10 m V").message == "unknown unit 'm V' in '10 m V'"
    assert _error(std, "1_000").message == "unknown unit '_000' in '1_000'"


@pytest.mark.parametrize("text", ["", "  ", "mV", "abc", "1.5.2mV", "1,5 mV", "--1mV", "inf",
                                  "nan", "1e999", "e3", "1.2.3"])
def test_not_a_number(std, text):
    assert "is not a number" in _error(std, text).message


def test_dimension_mismatch(std):
    err = _error(std, "10 mV", "conductanceDensity")
    assert err.message == "'10 mV' is a voltage, expected conductanceDensity"
    assert str(err) == ("cell.nml:12: <channelDensity>: "
                        "'10 mV' is a voltage, expected conductanceDensity")
    assert _error(std, "10 mV", "none").message == "'10 mV' is a voltage, expected dimensionless"
    assert "expected current" in _error(std, "1 mA_per_cm2", U.CURRENT).message


@pytest.mark.parametrize("text", ["-65", "0", "1e-3"])
def test_plain_number_for_a_dimension_is_an_error(std, text):
    # jLEMS: "Can't set parameter: p with dimensions voltage with string 0" (zero included)
    assert _error(std, text, "voltage").message == (
        f"'{text}' has no unit, expected voltage (a plain number is dimensionless)")


def test_unknown_expected_dimension(std):
    assert _error(std, "1 mV", "potential").message == "unknown dimension 'potential'"


def test_lookups(std):
    assert std.unit("mV").factor == pytest.approx(1e-3)
    assert std.dimension("voltage") == U.VOLTAGE
    with pytest.raises(ModelError, match="unknown unit 'mVV'"):
        std.unit("mVV")
    with pytest.raises(ModelError, match="unknown dimension 'volt'"):
        std.dimension("volt")
    assert std.name_of(Dimension.of(m=1, l=2, t=-3, i=-1)) == "voltage"
    assert std.name_of(Dimension.of(m=1, l=2, t=-2)) == "kg_m2_per_s2"


# ---- definitions ------------------------------------------------------------------------------

def test_identical_redefinition_is_fine(std):
    system = std.copy()
    system.add_dimension("voltage", m=1, l=2, t=-3, i=-1)
    system.add_unit("mV", "voltage", power=-3)
    system.add_unit("mV", "voltage", scale=1e-3)           # same meaning, different spelling
    system.add_dimension("potential", m=1, l=2, t=-3, i=-1)
    system.add_unit("mV", "potential", power=-3)            # same exponents, another name
    system.add_dimension("none")
    jar = jar_path()
    with zipfile.ZipFile(jar) as archive:
        system.add_definitions(etree.fromstring(archive.read(
            ingest_units.CORE_DIMENSIONS_MEMBER)))
    assert system.units == std.units


def test_redefinition_with_another_meaning(std):
    system = std.copy()
    with pytest.raises(ModelError, match="dimension 'voltage' redefined as m=1 l=2 t=-3, was "
                                         "m=1 l=2 t=-3 i=-1") as info:
        system.add_dimension("voltage", m=1, l=2, t=-3, file="a.xml", line=4)
    assert (info.value.file, info.value.line, info.value.element) == ("a.xml", 4, "Dimension")
    with pytest.raises(ModelError, match="unit 'mV' redefined"):
        system.add_unit("mV", "voltage", power=-6)
    with pytest.raises(ModelError, match="unit 'mV' redefined"):
        system.add_unit("mV", "current", power=-3)
    with pytest.raises(ModelError, match="dimension 'none' redefined"):
        system.add_dimension("none", t=1)
    assert system.unit("mV").factor == pytest.approx(1e-3), "the first definition stays"


def test_unit_definition_errors():
    system = UnitSystem()
    with pytest.raises(ModelError, match="unknown dimension 'voltage'"):
        system.add_unit("mV", "voltage", power=-3)
    system.add_dimension("temperature", k=1)
    system.add_unit("degC", "temperature", offset=273.15)
    with pytest.raises(UnsupportedError, match="offset"):
        system.add_unit("degF", "temperature", scale=5 / 9, offset=459.67)
    with pytest.raises(ModelError, match="scale 0"):
        system.add_unit("zero", "temperature", scale=0.0)


def test_custom_units_in_a_namespaced_lems_file():
    text = b"""<Lems xmlns="http://www.neuroml.org/lems/0.7.4">
      <!-- a comment -->
      <Unit symbol="mm" dimension="length" power="-3"/>
      <Dimension name="length" l="1"/>
      <Dimension name="energy" m="1" l="2" t="-2"/>
      <Unit symbol="kJ" dimension="energy" power="3"/>
      <Unit symbol="inch" dimension="length" scale="0.0254"/>
      <Unit symbol="plain" dimension="none" scale="0.01"/>
      <ComponentType name="x"/>
    </Lems>"""
    root = etree.fromstring(text)
    system = UnitSystem()
    system.add_definitions(root)
    assert system.parse_quantity("2 kJ", "energy").si == 2000.0
    assert system.parse_quantity("2mm", "length").si == pytest.approx(0.002, rel=1e-15)
    assert system.parse_quantity("10 inch").si == pytest.approx(0.254)
    assert system.parse_quantity("50plain", "none").si == 0.5
    assert system.parse_quantity("1 kJ").internal_symbol == "kg_m2_per_s2"
    assert system.add_from_lems(root[-1]) is False      # ComponentType: not ours
    assert system.add_from_lems(root[0]) is False       # the comment


@pytest.mark.parametrize("xml,message", [
    ('<Dimension m="1"/>', "<Dimension> without a 'name' attribute"),
    ('<Dimension name="d" m="1.5"/>', "m='1.5' is not an integer"),
    ('<Unit dimension="none"/>', "<Unit> without a 'symbol' attribute"),
    ('<Unit symbol="u"/>', "<Unit> without a 'dimension' attribute"),
    ('<Unit symbol="u" dimension="none" power="x"/>', "power='x' is not an integer"),
    ('<Unit symbol="u" dimension="none" scale="big"/>', "scale='big' is not a number"),
    ('<Unit symbol="u" dimension="none" offset="nan"/>', "offset='nan' is not a finite number"),
])
def test_bad_lems_definitions_are_located(xml, message):
    root = etree.fromstring(f"<Lems>\n\n{xml}</Lems>".encode(), base_url="model.xml")
    with pytest.raises(ModelError) as info:
        UnitSystem().add_from_lems(root[0])
    assert info.value.message == message
    assert (info.value.file, info.value.line) == ("model.xml", 3)
    assert info.value.element in ("Dimension", "Unit")


def test_standard_is_cached_and_copied():
    a = UnitSystem.standard()
    a.add_dimension("energy", m=1, l=2, t=-2)
    assert "energy" not in UnitSystem.standard().dimensions
    assert ingest_units._standard_system.cache_info().currsize == 1


@given(number=st.floats(min_value=-1e200, max_value=1e200),
       unit=st.sampled_from(CORE_UNITS), space=st.sampled_from(["", " ", "\t", "  "]))
def test_parse_any_number_with_any_core_unit(std, number, unit, space):
    symbol, dim, power, scale, offset = unit
    q = std.parse_quantity(f"{number!r}{space}{symbol}", dim)
    assert q.si == pytest.approx(number * scale * 10.0 ** power + offset, rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("text, dim, internal", [
    ("10pS", "conductance", 1e-05), ("6.3 degC", "temperature", 6.3),
    ("0.3mS_per_cm2", "conductanceDensity", 0.0003), ("-65mV", "voltage", -65.0),
    ("35.4ohm_cm", "resistivity", 35.4), ("2.5e-4mM", "concentration", 2.5e-4),
])
def test_internal_value_is_the_decimal_text_exactly(text, dim, internal):
    """No double rounding through SI: the internal value is the double nearest the text."""
    assert UnitSystem.standard().parse_quantity(text, dim).internal == internal
