"""Generated mod files keep their lines short enough for nocmodl (backends/neuron/mod_lines.py):
it stops with "Line too long" on a statement of a few hundred characters, which a flattened
LEMS cell writes easily."""

from __future__ import annotations

from nml_gradiff.backends.neuron.mod_lines import WIDTH, wrap_mod_lines


def _words(text: str) -> list[str]:
    return text.replace(":", " ").split()


def test_a_long_statement_is_broken_at_spaces_only():
    line = "    Vs' = " + " + ".join(f"10*g{i}*(e{i} - Vs)" for i in range(40))
    out = wrap_mod_lines(line).split("\n")
    assert len(out) > 5 and max(map(len, out)) <= WIDTH
    assert all(o.startswith("            ") for o in out[1:])        # continuation indent
    assert " ".join(o.strip() for o in out) == line.strip()         # same tokens, same order


def test_trailing_and_whole_line_comments_stay_comments():
    text = ("    gbar = 0.1 (S/cm2) : " + "a long description " * 8 + "\n"
            "    : " + "note " * 40 + "\n"
            "COMMENT\n" + "free text " * 30 + "\nENDCOMMENT")
    out = wrap_mod_lines(text).split("\n")
    assert max(map(len, out)) <= WIDTH
    code = [o for o in out if not o.strip().startswith(":")]
    assert code[0].strip() == "gbar = 0.1 (S/cm2)"                # the description went above
    assert out[out.index(code[0]) - 1].strip().startswith(": ")
    block = out[out.index("COMMENT") + 1:out.index("ENDCOMMENT")]
    assert len(block) > 1 and not any(b.startswith(":") for b in block)
    assert sorted(_words("\n".join(out))) == sorted(_words(text))   # nothing lost


def test_short_lines_and_titles():
    text = "TITLE " + "x" * 300 + "\nNEURON { SUFFIX hh }\n"
    out = wrap_mod_lines(text)
    assert out.split("\n")[0].endswith("...") and len(out.split("\n")[0]) == WIDTH
    assert out.split("\n")[1:] == ["NEURON { SUFFIX hh }", ""]


def test_the_learners_long_sums_are_wrapped_whole():
    """The online learner writes its loss gradient and loss as one sum a statement, however
    many recordings (learner_emit.py), and one LOCAL statement (nocmodl refuses a second):
    render_mod breaks them into short lines, every term kept."""
    from nml_gradiff.backends.neuron.learner_emit import emit_learner
    P, Q = 6, 12
    _, text = emit_learner("trace", [f"c/ch{p}/condDensity" for p in range(P)],
                           [f"out/y{q}" for q in range(Q)])
    assert max(map(len, text.split("\n"))) <= WIDTH
    flat = " ".join(text.split())
    for p in range(P):
        terms = " + ".join(f"2*(yp{q} - tp{q})*sy{q}_{p}" for q in range(Q))
        assert f"e{p} = {terms}" in flat
    assert "l = " + " + ".join(f"(y{q} - target{q})*(y{q} - target{q})" for q in range(Q)) in flat
    assert flat.count("LOCAL") == 1
