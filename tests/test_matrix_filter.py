"""MatrixFilter (upper triangle of W, applied as W (v x) and v (W y)) against references built here.

The references are dense matrices written out from the definition (w_ij = max(0, r - d_ij),
H = W diag(v)), so they share no code with the filter. Blocks of rows are forced small so that
block boundaries fall inside the meshes.
"""

import tracemalloc

import numba
import numpy as np
import pytest
from scipy.spatial import Delaunay

import lightweight as lw
from lightweight.errors import OptimizationError
from lightweight.optimize.filters import MatrixFilter, matrix_filter_estimate

RNG = np.random.default_rng(7)


def dense_H(centers, radius, volumes):
    d = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2))
    return np.maximum(0.0, radius - d) * volumes[None, :]


def random_tets(n_points, seed=11):
    """Cell centres and volumes of Delaunay tets of random points in a 2 x 1 x 1 box."""
    rng = np.random.default_rng(seed)
    pts = rng.random((n_points, 3)) * [2.0, 1.0, 1.0]
    tets = Delaunay(pts).simplices
    e = pts[tets]
    vol = np.abs(np.einsum("ij,ij->i", np.cross(e[:, 1] - e[:, 0], e[:, 2] - e[:, 0]),
                           e[:, 3] - e[:, 0])) / 6.0
    keep = vol > 1e-9
    return e[keep].mean(axis=1), vol[keep]


def grid_cells(shape, spacing):
    mesh = lw.structured_grid(shape, size=tuple(n * h for n, h in zip(shape, spacing)))
    return mesh.cell_centers(), mesh.cell_volumes()


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def check_against_dense(centers, volumes, radius, block_rows):
    H = dense_H(centers, radius, volumes)
    Hs = H.sum(axis=1)
    filt = MatrixFilter(centers, radius, volumes, block_rows=block_rows)
    n = len(centers)
    x = RNG.random(n)
    grads = RNG.standard_normal((3, n))
    assert rel_err(filt.Hs, Hs) <= 1e-12
    assert rel_err(filt.forward(x), H @ x / Hs) <= 1e-12
    assert rel_err(filt.backward(grads[0]), H.T @ (grads[0] / Hs)) <= 1e-12
    assert rel_err(filt.backward(grads), (H.T @ (grads / Hs).T).T) <= 1e-12
    assert rel_err(filt.filter_sensitivity(x, grads[1]),
                   H @ (x * grads[1]) / Hs / np.maximum(1e-3, x)) <= 1e-12
    # the on-demand scipy matrix is the same H, with as many nonzeros as the dense one
    assert filt.nnz == filt.H.nnz == np.count_nonzero(H)
    assert rel_err(filt.H.toarray(), H) <= 1e-15
    return filt


@pytest.mark.parametrize("block_rows", [None, 1, 37, 500])
def test_tets_with_their_volumes_equal_the_dense_reference(block_rows):
    centers, volumes = random_tets(260)              # ~1500 tets, volumes spread ~100x
    assert volumes.max() / volumes.min() > 20
    check_against_dense(centers, volumes, 0.18, block_rows)


@pytest.mark.parametrize("shape, spacing, radius", [((30, 20), (1.0, 0.5), 1.6),
                                                    ((10, 8, 7), (0.5, 0.5, 0.8), 1.2)])
def test_grids_with_uneven_volumes_equal_the_dense_reference(shape, spacing, radius):
    centers, volumes = grid_cells(shape, spacing)
    volumes = volumes * RNG.uniform(0.2, 3.0, len(volumes))     # not the grid's own: non-uniform
    for block_rows in (None, 13):
        check_against_dense(centers, volumes, radius, block_rows)


def test_block_size_does_not_change_the_stored_weights():
    centers, volumes = random_tets(200)
    one = MatrixFilter(centers, 0.2, volumes)
    assert len(one.W_data) > 0 and one.W_indices.dtype == np.int32
    for block_rows in (1, 2, 91):
        other = MatrixFilter(centers, 0.2, volumes, block_rows=block_rows)
        assert np.array_equal(one.W_indptr, other.W_indptr)
        assert np.array_equal(one.W_indices, other.W_indices)
        assert np.array_equal(one.W_data, other.W_data)
    # strictly upper triangle, columns sorted within each row
    rows = np.repeat(np.arange(one.n), np.diff(one.W_indptr))
    assert np.all(one.W_indices > rows)
    assert np.all((np.diff(one.W_indices) > 0) | (np.diff(rows) > 0))


def test_radius_below_the_cell_distance_leaves_the_field_alone():
    centers, volumes = random_tets(100)
    d = np.sqrt(((centers[:, None] - centers[None]) ** 2).sum(axis=2))
    radius = 0.5 * d[~np.eye(len(d), dtype=bool)].min()
    filt = MatrixFilter(centers, radius, volumes, block_rows=5)
    assert len(filt.W_data) == 0 and filt.nnz == len(centers)
    x = RNG.random(len(centers))
    np.testing.assert_allclose(filt.forward(x), x, rtol=1e-15)
    np.testing.assert_allclose(filt.backward(x), x, rtol=1e-15)
    np.testing.assert_allclose(filt.Hs, radius * volumes, rtol=1e-15)


def test_single_cell_and_bad_block_size():
    filt = MatrixFilter(np.array([[0.5, 0.5, 0.5]]), 1.0, np.array([2.0]))
    assert filt.forward(np.array([0.3]))[0] == pytest.approx(0.3, rel=1e-15)
    with pytest.raises(OptimizationError, match="block_rows"):
        MatrixFilter(np.zeros((3, 2)), 1.0, block_rows=0)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread")
def test_thread_count_changes_only_the_rounding():
    centers, volumes = random_tets(300)
    filt = MatrixFilter(centers, 0.2, volumes)
    x = RNG.random(len(centers))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = filt.forward(x), filt.backward(x)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_allclose(filt.forward(x), serial[0], rtol=1e-14)
    np.testing.assert_allclose(filt.backward(x), serial[1], rtol=1e-14)


def test_estimate_bounds_the_traced_build_and_kept_memory_is_the_triangle():
    """The 'never die silently' check must not under-estimate the new layout's build."""
    rng = np.random.default_rng(3)
    n = 40_000
    centers = rng.random((n, 3))
    radius = 1.5 * (1.0 / n) ** (1 / 3) * 1.2            # ~1.5 cell sizes: ~20 neighbours
    volumes = rng.uniform(0.5, 1.5, n) / n
    MatrixFilter(centers[:500], radius, volumes[:500])    # JIT caches loaded before tracing
    nnz_estimate, bytes_estimate = matrix_filter_estimate(centers, radius, volumes)
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    filt = MatrixFilter(centers, radius, volumes)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert filt.nnz <= nnz_estimate
    assert peak - before <= bytes_estimate <= 4 * (peak - before)
    # kept: 4 bytes per stored entry of the triangle (its columns); per cell indptr, Hs, the
    # order and the copies of the centres and volumes
    stored = len(filt.W_indices)
    assert stored == (filt.nnz - n) // 2
    assert current - before <= 4 * stored + (8 + 8 + 4 + 24 + 8) * (n + 1) + 4096
