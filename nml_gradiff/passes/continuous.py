"""Continuous forward-sensitivity equations of an ODE system (IR -> IR, no printing).

For ``dx/dt = f(x, theta)``, ``x(0) = x0(theta)``, the sensitivities ``S = dx/dtheta`` obey

    dS/dt = df/dx S + df/dtheta,        S(0) = dx0/dtheta.

A backend that integrates ``x`` *and* ``S`` with forward Euler from the same step-n values
computes ``S[n+1] = S[n] + dt (df/dx S[n] + df/dtheta)``, which is exactly the derivative of
its own map ``x[n+1] = x[n] + dt f(x[n], theta)``: so for a forward-Euler simulator (jLEMS)
these equations give the exact gradient of the trajectory it computes, not an approximation
of the continuous one.  (For NEURON's update the discrete derivative of
:mod:`.sensitivity` is the exact one instead.)

Derivatives are taken almost everywhere (a Heaviside's DiracDelta is dropped; Piecewise
conditions are not differentiated), as in :mod:`.sensitivity`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from ..ir.mechanism import symbol
from .discretize import almost_everywhere

__all__ = ["OdeSystem", "SensitivitySystem", "sensitivity_system", "sens_name"]


@dataclass
class OdeSystem:
    """``d state/dt = rhs[state]`` over the symbols of ``states``, ``params`` and any
    other inputs (held constant for the derivative: time, injected currents);
    ``init[state]`` over ``params`` only."""

    states: list[str]
    rhs: dict[str, sympy.Expr]
    init: dict[str, sympy.Expr]


@dataclass
class SensitivitySystem:
    """For each (state, parameter) pair, ``d S/dt`` and ``S(0)``, over the symbols of the
    system and the sensitivity symbols named by :func:`sens_name`."""

    params: list[str]
    rhs: dict[tuple[str, str], sympy.Expr]
    init: dict[tuple[str, str], sympy.Expr]


def sens_name(state: str, param: str) -> str:
    """The symbol name of ``d state / d param``."""
    return f"S_{state}__{param}"


def sensitivity_system(system: OdeSystem, params: list[str]) -> SensitivitySystem:
    """The continuous sensitivity equations of ``system`` for ``params`` (module doc)."""
    xs = [symbol(s) for s in system.states]
    jac = {(i, j): almost_everywhere(sympy.diff(system.rhs[i], x))
           for i in system.states for j, x in zip(system.states, xs)}
    rhs, init = {}, {}
    for p in params:
        theta = symbol(p)
        for i in system.states:
            terms = [jac[i, j] * symbol(sens_name(j, p)) for j in system.states
                     if jac[i, j] != 0]
            terms.append(almost_everywhere(sympy.diff(system.rhs[i], theta)))
            rhs[i, p] = sympy.Add(*terms)
            init[i, p] = almost_everywhere(sympy.diff(system.init[i], theta))
    return SensitivitySystem(list(params), rhs, init)
