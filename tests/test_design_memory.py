"""The identity design map and MMA's constant bounds keep nothing per variable (memory pass
of 2026-12-02) and give the same numbers as the general forms."""

import numpy as np
import scipy.sparse as sp

import lightweight as lw
from lightweight.optimize.checks import check_stage
from lightweight.optimize.design import DesignSpace
from lightweight.optimize.mma import MMA
from lightweight.optimize import stages


def test_full_design_is_the_identity_map_without_per_cell_arrays():
    mesh = lw.structured_grid((6, 4, 3))
    design = DesignSpace(mesh)
    assert design.is_identity and design.n_variables == mesh.n_cells and not design.has_ties
    assert design._P is None and design._passive is None and design._fixed_density is None
    rng = np.random.default_rng(3)
    x = rng.uniform(size=design.n_variables)
    g = rng.standard_normal((3, mesh.n_cells))
    eye = sp.identity(mesh.n_cells, format="csr")
    assert np.array_equal(design.expand(x), eye @ x + np.zeros(mesh.n_cells))
    assert design.expand(x) is not x
    assert np.array_equal(design.reduce(g), (eye.T @ g.T).T)
    assert np.array_equal(design.reduce(g[0]), g[0])
    assert (design.P != eye).nnz == 0 and (design.PT != eye).nnz == 0
    assert not design.passive.any() and np.array_equal(design.active_cells, np.arange(mesh.n_cells))
    assert np.array_equal(design.group_size, np.ones(mesh.n_cells))
    assert np.array_equal(design.impose(x), x)
    check_stage(stages.DesignMap(design), x)
    check_stage(stages.Passive(design), x)


def test_passive_or_tied_designs_keep_the_sparse_map():
    mesh = lw.structured_grid((6, 4))
    mesh.add_cell_set("left", lambda c: c[:, 0] < 1.0)
    assert not DesignSpace(mesh, non_design=["left"]).is_identity
    tied = DesignSpace(mesh, symmetry="x")
    assert not tied.is_identity and tied.has_ties and tied.n_variables == 12


def test_mma_constant_bounds_are_stride0_views_and_survive_a_state_round_trip():
    n = 1000
    mma = MMA(n, 1, 0.0, 1.0)
    assert mma.lower_bound.strides == (0,) and mma.upper_bound.strides == (0,)
    same = MMA(n, 1, np.zeros(n), np.ones(n))
    assert same.lower_bound.strides == (0,)
    varying = MMA(n, 1, 0.0, np.linspace(1.0, 2.0, n))
    assert varying.upper_bound.strides == (8,)
    rng = np.random.default_rng(5)
    x = rng.uniform(0.2, 0.8, n)
    for opt in (mma, MMA(n, 1, np.zeros(n), np.full(n, 1.0), objective_scale=None)):
        df = rng.standard_normal(n)
        dg = np.ones((1, n)) / n
        x1 = opt.update(x, 1.0, df, np.array([x.mean() - 0.5]), dg)
        resumed = MMA.from_state(opt.state())
        assert resumed.lower_bound.strides == (0,)
        a = opt.update(x1, 0.9, df, np.array([x1.mean() - 0.5]), dg)
        b = resumed.update(x1, 0.9, df, np.array([x1.mean() - 0.5]), dg)
        assert np.array_equal(a, b)
