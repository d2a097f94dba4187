"""XLA settings for the processes nml-gradiff starts (its command line), made before jax loads.

XLA's CPU backend compiles a ``while`` loop (the emitted module's ``lax.scan`` over time
steps) into one function only if its body touches less than 1 KiB per iteration
(``xla_cpu_small_while_loop_byte_threshold``); above it, every kernel of the body is
dispatched on its own, every step.  A single-compartment module's step is above it, so its
20-odd kernels cost more than their arithmetic: HH 2.4 us a step, 0.44 with the threshold
raised; ``loss_and_grad`` (P = 3) 15 -> 1.0 us a step (bench/results-jaxley.md, third pass).
On large cells it changes nothing measurable (Smith's L2/3, 849 nodes: the same CPU time
with and without, primal and sensitivities).  Results are the same to round-off (HH: 1.7e-15
V).  The setting is process-wide, so it is only made where nml-gradiff owns the process, and
never over the user's own choice.
"""

from __future__ import annotations

import os
import sys

#: The XLA CPU option and the value set (larger than any loop body we emit).
OPTION = "xla_cpu_small_while_loop_byte_threshold"
VALUE = 100_000_000

#: Set to 0 to leave XLA_FLAGS as it is.
OPT_OUT = "NML_GRADIFF_XLA_DEFAULTS"


def configure_xla(environ=None, jax_loaded: bool | None = None) -> bool:
    """Add the option to ``XLA_FLAGS`` unless jax is already loaded (too late), the user
    opted out, or ``XLA_FLAGS`` already sets backend options.  Returns whether it did."""
    environ = os.environ if environ is None else environ
    loaded = "jax" in sys.modules if jax_loaded is None else jax_loaded
    flags = environ.get("XLA_FLAGS", "")
    if loaded or environ.get(OPT_OUT) == "0" or "xla_backend_extra_options" in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} --xla_backend_extra_options={OPTION}={VALUE}".strip()
    return True
