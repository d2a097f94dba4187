"""The optimiser behind ``tune`` (runtime/adam.py)."""

from __future__ import annotations

import numpy as np
import pytest

from nml_gradiff.errors import ModelError
from nml_gradiff.runtime.adam import Adam, AdamOptions


def _minimise(adam: Adam, x: np.ndarray, grad, steps: int) -> np.ndarray:
    for _ in range(steps):
        x = adam.step(x, grad(x))
    return x


def test_relative_steps_reach_minima_of_very_different_scales():
    target = np.array([3e-4, -40.0, 120.0])
    x0 = np.array([2e-4, -30.0, 100.0])
    scale = np.abs(x0)
    grad = lambda x: 2 * (x - target) / scale**2      # a loss that is O(1) in relative terms
    x = _minimise(Adam(x0, AdamOptions(lr=0.02)), x0.copy(), grad, 2000)
    np.testing.assert_allclose(x, target, rtol=1e-4)


def test_first_step_moves_every_parameter_by_lr_of_its_initial_value():
    x0 = np.array([1e-3, 50.0])
    adam = Adam(x0, AdamOptions(lr=0.1))
    x1 = adam.step(x0.copy(), np.array([5.0, -1e-3]))   # |g| >> eps
    np.testing.assert_allclose(x1 - x0, [-0.1 * 1e-3, +0.1 * 50.0], rtol=1e-5)


def test_bounds_and_clip():
    adam = Adam(np.array([1.0]), AdamOptions(lr=0.5, lower=np.array([0.8]), clip=1.0))
    assert adam.step(np.array([1.0]), np.array([1e6]))[0] == 0.8


def test_relative_steps_refuse_zero_initial_values():
    with pytest.raises(ModelError, match="non-zero"):
        Adam(np.array([0.0, 1.0]))


@pytest.mark.parametrize("options", [AdamOptions(lr=0.0), AdamOptions(lr=float("nan")),
                                     AdamOptions(clip=-1.0)])
def test_nonsensical_options_are_refused(options):
    with pytest.raises(ModelError):
        Adam(np.array([1.0]), options)


def test_cosine_schedule_decays_to_zero():
    adam = Adam(np.array([1.0]), AdamOptions(lr=0.1, schedule="cosine", steps=10))
    rates = []
    for _ in range(11):
        adam.step(np.array([1.0]), np.array([1.0]))
        rates.append(adam.learning_rate())
    assert rates[0] == pytest.approx(0.1)
    assert rates[5] == pytest.approx(0.05)
    assert rates[10] == pytest.approx(0.0, abs=1e-15)
    assert all(a >= b for a, b in zip(rates, rates[1:]))
