"""PARAMETER defaults that nocmodl would round, for the builder to set at full precision.

nocmodl writes each RANGE PARAMETER's default into the generated C++ with ``%g``: six
significant digits (NEURON 9.0.2, ``x86_64/cal.cpp``: ``13.8889, /* m_forwardRate_scale */``
for a mod that says 13.888889).  The mods we write carry every number in full double
precision, so a model value with more than six digits would silently run rounded (Traub's
cal channel: 4e-6 relative in its rate; docs/omv-jax.md, fourth round).  With
``integration="exact"`` the planner lists those parameters (:func:`rounded_defaults`) and the
builder assigns them from Python after inserting each mechanism, before the placement's own
values.  ``jnml_neuron`` keeps nocmodl's rounding on purpose: jNeuroML's mods declare their
parameters the same way, so the reference data ran with it.
"""

from __future__ import annotations

import functools
import re

_BLOCK = re.compile(r"^PARAMETER\s*\{(.*?)^\}", re.S | re.M)
_DEFAULT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_COMMENT = re.compile(r":[^\n]*")


def nocmodl_value(value: float) -> float:
    """The value a PARAMETER default runs with once nocmodl has printed it."""
    return float(f"{value:g}")


def rounded_defaults(mods: dict[str, str]) -> dict[str, dict[str, float]]:
    """``{mechanism: {parameter: value}}``: the defaults of our mods' PARAMETER blocks that
    nocmodl would change, at the value the mod text means."""
    out = {}
    for name, text in sorted(mods.items()):
        changed = _rounded(text)
        if changed:
            out[name] = dict(changed)
    return out


@functools.lru_cache(maxsize=4096)
def _rounded(text: str) -> tuple[tuple[str, float], ...]:
    """One mod's changed defaults; cached, as ``tune`` plans the same mods every epoch and
    a sensitivity plan lists the primal's again with its companions."""
    block = _BLOCK.search(text)
    if block is None:
        return ()
    body = _COMMENT.sub("", block.group(1))
    return tuple((p, float(v)) for p, v in _DEFAULT.findall(body)
                 if nocmodl_value(float(v)) != float(v))
