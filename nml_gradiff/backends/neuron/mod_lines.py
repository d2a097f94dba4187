"""Keep every line of a generated .mod file short enough for nocmodl.

nocmodl reads its input a line at a time into a fixed buffer and stops with "Line too long"
somewhere between 240 and 600 characters (measured with NEURON 9.0.2: a 237-character
statement compiles, a 597-character one does not).  A flattened LEMS cell easily writes a
longer one (PinskyRinzel's two-compartment cell: a 1065-character ``Vs' = ...``).  NMODL
treats a newline inside a statement as white space, so a long statement is broken at its
spaces (the printer puts them around ``+``, ``-``, comparisons and after commas, never inside
a name or a number) onto continuation lines.  Comment lines are split into several comment
lines; a ``TITLE`` (which ends at the end of its line) is shortened.
"""

from __future__ import annotations

from ...templating import environment

#: The longest line written (well below nocmodl's limit, and readable).
WIDTH = 100

_CONTINUATION = " " * 8


def render_mod(template: str, **context) -> str:
    """A mod file from one of ``templates/neuron/``, its long lines wrapped: every NEURON
    template renders through here."""
    return wrap_mod_lines(environment("neuron").get_template(template).render(**context))


def wrap_mod_lines(text: str, width: int = WIDTH) -> str:
    out, in_comment_block = [], False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped == "COMMENT":
            in_comment_block = True
        elif stripped == "ENDCOMMENT":
            in_comment_block = False
        if len(line) <= width:
            out.append(line)
        elif stripped.startswith("TITLE"):
            out.append(line[:width - 3].rstrip() + "...")
        elif in_comment_block or stripped.startswith(":"):
            out.extend(_wrap_comment(line, width))
        else:
            out.extend(_wrap_statement(line, width))
    return "\n".join(out)


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _wrap_statement(line: str, width: int) -> list[str]:
    """A statement, and its trailing ``: comment`` (our printer writes no ':' in code),
    which stays a comment: on the last line if it fits, else on lines of its own above."""
    indent = _indent(line)
    code, colon, comment = line.partition(":")
    lines = _fill(code.strip().split(" "), indent, indent + _CONTINUATION, width)
    if colon:
        tail = f"{lines[-1]} :{comment.rstrip()}"
        if len(tail) <= width:
            lines[-1] = tail
        else:
            lines = _wrap_comment(indent + ":" + comment, width) + lines
    return lines


def _wrap_comment(line: str, width: int) -> list[str]:
    indent, body = _indent(line), line.strip()
    marker = ": " if body.startswith(":") else ""
    words = body[len(marker.strip()):].strip().split(" ")
    return _fill(words, indent + marker, indent + marker, width)


def _fill(words: list[str], first: str, rest: str, width: int) -> list[str]:
    """Words (the pieces between single spaces) onto lines of at most ``width`` characters
    (a single longer word gets a line of its own)."""
    lines, current, empty = [], first, True
    for word in words:
        if empty:
            current, empty = current + word, False
        elif len(current) + 1 + len(word) > width:
            lines.append(current)
            current = rest + word
        else:
            current = f"{current} {word}"
    lines.append(current)
    return lines
