"""MMA's first asymptotes from the move-limited box (initial_asymptotes="move", TopOpt_in_PETSc's
choice) against Svanberg's from the variable bounds (the default, unchanged)."""

from __future__ import annotations

import numpy as np
import pytest

from lightweight.errors import OptimizationError
from lightweight.optimize.mma import MMA


def _step(option: str, x: np.ndarray):
    """One update on f = sum((x - 0.9)^2) with the constraint mean(x) - 0.5 <= 0."""
    mma = MMA(x.size, 1, 0.0, 1.0, move_limit=0.2, initial_asymptotes=option)
    f = float(np.sum((x - 0.9) ** 2))
    g = np.array([x.mean() - 0.5])
    x_new = mma.update(x, f, 2 * (x - 0.9), g, np.full((1, x.size), 1.0 / x.size))
    return mma, x_new


def test_first_asymptotes_span_the_move_box():
    x = np.array([0.05, 0.3, 0.5, 0.95])
    mma, _ = _step("move", x)
    box_low, box_upp = np.maximum(0.0, x - 0.2), np.minimum(1.0, x + 0.2)
    np.testing.assert_allclose(mma.low, x - 0.5 * (box_upp - box_low), rtol=1e-12)
    np.testing.assert_allclose(mma.upp, x + 0.5 * (box_upp - box_low), rtol=1e-12)
    bounds, _ = _step("bounds", x)
    np.testing.assert_allclose(bounds.low, x - 0.5, rtol=1e-12)       # today's behaviour


def test_move_box_asymptotes_take_a_more_careful_first_step():
    x = np.full(6, 0.3)
    _, careful = _step("move", x)
    _, bold = _step("bounds", x)
    assert np.all(np.abs(careful - x) <= 0.2 + 1e-12)
    assert np.abs(careful - x).max() < np.abs(bold - x).max()


def test_option_survives_a_checkpoint_and_is_checked():
    mma, _ = _step("move", np.full(3, 0.4))
    assert MMA.from_state(mma.state()).initial_asymptotes == "move"
    with pytest.raises(OptimizationError, match="initial_asymptotes"):
        MMA(3, 1, 0.0, 1.0, initial_asymptotes="petsc")
