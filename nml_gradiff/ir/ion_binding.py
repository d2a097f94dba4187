"""Which ion a density or a cell-level quantity belongs to: NeuroML's rules, one place for
every backend (the NEURON backend binds them to NEURON's ions, the JAX backend to its
pools).

A ``cell2CaPools`` has two calcium pools; the second is the ion ``ca2``:

* a ``channelDensityNernstCa2`` belongs to it whatever ion the file names (Solinas' Golgi
  cell says ``ion="ca"``): its current goes to the ca2 pool, and its Nernst potential and
  its ``caConc`` come from the ca2 concentrations, as jNeuroML's NEURON export binds it
  (``ica2``, ``eca2`` from ``ca2i``/``ca2o``);
* a cell's ``iCa`` and ``iCa2`` are the currents into its ca and ca2 pools, ``caConc2`` the
  ca2 pool's concentration (``caConc``, the first pool's, is the ion ``ca``'s, as every
  ``<ion>Conc``).
"""

from __future__ import annotations

#: The second calcium pool's ion.
CA2 = "ca2"

#: Cell-level quantities of a cell's pools -> (ion, "current" or "concentration").
CELL_POOL_QUANTITIES = {"iCa": ("ca", "current"), "iCa2": (CA2, "current"),
                        "caConc2": (CA2, "concentration")}

#: The cell-level ion currents (``iCa``, ``iCa2``) -> their ion.
CELL_ION_CURRENTS = {name: ion for name, (ion, what) in CELL_POOL_QUANTITIES.items()
                     if what == "current"}


def is_second_pool_density(kind: str) -> bool:
    """A density of NeuroML element ``kind`` belongs to the second calcium pool."""
    return kind == "channelDensityNernstCa2"


def density_ion(kind: str, ion: str | None) -> str | None:
    """The ion of a density of element ``kind`` whose file names ``ion``."""
    return CA2 if is_second_pool_density(kind) else ion


def concentration_ion(variable: str) -> str | None:
    """The ion of a cell-level concentration (``caConc2``, ``<ion>Conc``), else None."""
    ion, what = CELL_POOL_QUANTITIES.get(variable, (None, None))
    if what == "concentration":
        return ion
    return variable[:-len("Conc")] if variable.endswith("Conc") else None
