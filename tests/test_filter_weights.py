"""MatrixFilter recomputes its weights from the cell centres instead of storing them, and works
in its own, spatially local, cell order.

References are written here from the definition (w_ij = max(0, r - |c_i - c_j|), H = W diag(v),
x_tilde = H x / Hs), with scipy.sparse for the products, so they share no code with the
filter's kernel. ``H`` and ``W_data`` (mesh order) must equal the formula bit for bit (they
compute each weight with the same operations as the formula below); the filtered fields to
1e-13 (the products sum in another order, and may fuse multiply-adds).
"""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

from lightweight.optimize.filters import MatrixFilter, make_filter

RNG = np.random.default_rng(2024)


def random_cells(n, dim, neighbours=30, seed=0):
    """n random centres in a box of unit cells' volume n, radius for ~``neighbours`` per ball."""
    rng = np.random.default_rng(seed)
    centers = rng.random((n, dim)) * n ** (1.0 / dim)
    ball = {1: 2.0, 2: np.pi, 3: 4.0 / 3.0 * np.pi, 4: np.pi ** 2 / 2, 5: 8 * np.pi ** 2 / 15}[dim]
    radius = (neighbours / ball) ** (1.0 / dim)
    volumes = rng.uniform(0.2, 3.0, n)
    return centers, radius, volumes


def formula_weights(centers, radius, rows, cols):
    """r - |c_i - c_j|, the squares added axis by axis from the first (left to right)."""
    diff = centers[rows] - centers[cols]
    sq = diff[:, 0] * diff[:, 0]
    for d in range(1, centers.shape[1]):
        sq = sq + diff[:, d] * diff[:, d]
    return radius - np.sqrt(sq)


def formula_H(centers, radius, volumes):
    """H = W diag(v) as scipy CSR, every pair within the radius found by a KD-tree."""
    n = len(centers)
    pairs = cKDTree(centers).query_pairs(radius * (1 + 1e-9), output_type="ndarray")
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    w = formula_weights(centers, radius, rows, cols)
    keep = w > 0
    rows, cols, w = rows[keep], cols[keep], w[keep]
    H = sp.csr_matrix((w * volumes[cols], (rows, cols)), shape=(n, n))
    H.sort_indices()
    return H


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("n, dim, block_rows", [(3000, 3, None), (3000, 3, 97), (2500, 2, None),
                                                (400, 1, 7), (600, 4, 50), (500, 5, None)])
def test_products_and_H_equal_the_formula(n, dim, block_rows):
    centers, radius, volumes = random_cells(n, dim, seed=n + dim)
    filt = MatrixFilter(centers, radius, volumes, block_rows=block_rows)
    H = formula_H(centers, radius, volumes)
    Hs = np.asarray(H.sum(axis=1)).ravel()

    # the on-demand matrix: same pattern, same bits
    mine = filt.H
    assert filt.nnz == mine.nnz == H.nnz
    assert np.array_equal(mine.indptr, H.indptr) and np.array_equal(mine.indices, H.indices)
    assert np.array_equal(mine.data, H.data)
    # the on-demand triangle: the formula's weights of the stored pairs
    rows = np.repeat(np.arange(n), np.diff(filt.W_indptr))
    assert np.array_equal(filt.W_data, formula_weights(centers, radius, rows, filt.W_indices))

    x = RNG.random(n)
    grads = RNG.standard_normal((2, n))
    assert rel_err(filt.Hs, Hs) <= 1e-13
    assert rel_err(filt.forward(x), H @ x / Hs) <= 1e-13
    assert rel_err(filt.backward(grads[0]), H.T @ (grads[0] / Hs)) <= 1e-13
    assert rel_err(filt.backward(grads), (H.T @ (grads / Hs[None, :]).T).T) <= 1e-13
    assert rel_err(filt.filter_sensitivity(x, grads[1]),
                   H @ (x * grads[1]) / Hs / np.maximum(1e-3, x)) <= 1e-13
    # what the filter shows is in mesh order
    assert np.array_equal(filt.centers, centers) and np.array_equal(filt.volumes, volumes)


def test_no_weight_array_is_kept():
    """What the filter holds: the triangle's 4-byte columns, indptr, and per cell its order
    (int32), Hs, and its copies of the volumes and centres."""
    n = 20_000
    centers, radius, volumes = random_cells(n, 3, seed=1)
    filt = MatrixFilter(centers, radius, volumes)
    stored = len(filt.W_indices)
    assert stored == (filt.nnz - n) // 2 and stored > 10 * n
    arrays = [a for a in vars(filt).values() if isinstance(a, np.ndarray)]
    assert not any(a.dtype == np.float64 and a.size == stored for a in arrays)
    # 4 bytes per stored entry; per cell indptr, Hs, volumes, the (n, 3) centres and the order
    assert sum(a.nbytes for a in arrays) <= 4 * stored + (8 + 8 + 8 + 24 + 4) * (n + 1)
    assert filt.W_indices.dtype == np.int32 and filt.order.dtype == np.int32


def test_kept_allocations_have_no_weights():
    """tracemalloc: the built filter allocated its pattern, indptr, Hs, its order and its copies
    of the centres and volumes."""
    n = 20_000
    centers, radius, volumes = random_cells(n, 3, seed=2)
    MatrixFilter(centers[:300], radius, volumes[:300])       # JIT caches loaded before tracing
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    filt = MatrixFilter(centers, radius, volumes)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stored = len(filt.W_indices)
    assert current - before <= 4 * stored + (8 + 8 + 24 + 8 + 4) * (n + 1) + 4096
    assert current - before < 4 * stored + 8 * stored       # far below the stored weights' layout


def test_caller_changing_its_centres_changes_nothing():
    centers, radius, volumes = random_cells(2000, 3, seed=3)
    filt = MatrixFilter(centers, radius, volumes)
    x = RNG.random(2000)
    before = filt.forward(x), filt.backward(x)
    centers *= 2.0                      # the filter works on its own copies
    volumes *= 3.0
    assert np.array_equal(filt.forward(x), before[0])
    assert np.array_equal(filt.backward(x), before[1])


def test_make_filter_on_a_tet_mesh_equals_the_formula():
    from lightweight.mesh import Mesh
    from scipy.spatial import Delaunay
    rng = np.random.default_rng(9)
    pts = rng.random((400, 3)) * [2.0, 1.0, 1.0]
    tets = Delaunay(pts).simplices.astype(np.int64)
    e = pts[tets]
    vol = np.einsum("ij,ij->i", np.cross(e[:, 1] - e[:, 0], e[:, 2] - e[:, 0]), e[:, 3] - e[:, 0])
    tets[vol < 0] = tets[vol < 0][:, [0, 2, 1, 3]]
    mesh = Mesh(pts, tets[np.abs(vol) > 1e-9], "tetra")
    filt = make_filter(mesh, 0.2)
    assert isinstance(filt, MatrixFilter)
    H = formula_H(mesh.cell_centers(), 0.2, mesh.cell_volumes())
    assert np.array_equal(filt.H.data, H.data) and np.array_equal(filt.H.indices, H.indices)
    x = RNG.random(mesh.n_cells)
    Hs = np.asarray(H.sum(axis=1)).ravel()
    assert rel_err(filt.forward(x), H @ x / Hs) <= 1e-12
    assert rel_err(filt.backward(x), H.T @ (x / Hs)) <= 1e-12


# ---------------------------------------------------------------------- the filter's cell order
def test_order_is_a_spatially_local_permutation():
    """``order`` is a permutation of the cells (int32), and in it the stored pairs lie close
    together: random centres in random order have their pairs ~n/3 apart, in the filter's
    order a few dozen."""
    n = 20_000
    centers, radius, volumes = random_cells(n, 3, seed=4)
    filt = MatrixFilter(centers, radius, volumes)
    assert filt.order.dtype == np.int32 and filt.order.shape == (n,)
    assert np.array_equal(np.sort(filt.order), np.arange(n))
    # the internal pattern (filter order) and the public one (mesh order): the same pairs
    rows = np.repeat(np.arange(n), np.diff(filt._indptr))
    inside = np.sort(np.minimum(filt.order[rows], filt.order[filt._indices]) * n
                     + np.maximum(filt.order[rows], filt.order[filt._indices]))
    mesh_rows = np.repeat(np.arange(n), np.diff(filt.W_indptr))
    assert np.array_equal(inside, mesh_rows * n + filt.W_indices)
    assert np.median(filt._indices.astype(np.int64) - rows) < 200
    assert np.median(filt.W_indices - mesh_rows) > n / 5


@pytest.mark.parametrize("dim", [2, 3])
def test_shuffled_cells_give_the_shuffled_field(dim):
    """The filter of the same cells listed in another order is the same operator, permuted."""
    n = 4000
    centers, radius, volumes = random_cells(n, dim, seed=5 + dim)
    perm = np.random.default_rng(dim).permutation(n)
    one = MatrixFilter(centers, radius, volumes)
    other = MatrixFilter(centers[perm], radius, volumes[perm])
    x = RNG.random(n)
    grads = RNG.standard_normal((2, n))
    assert other.nnz == one.nnz
    H, H_shuffled = one.H, other.H
    assert (H[perm][:, perm] != H_shuffled).nnz == 0           # the formula's entries, bit for bit
    assert rel_err(other.Hs, one.Hs[perm]) <= 1e-13
    assert rel_err(other.forward(x[perm]), one.forward(x)[perm]) <= 1e-13
    assert rel_err(other.backward(grads[:, perm]), one.backward(grads)[:, perm]) <= 1e-13
    assert rel_err(other.filter_sensitivity(x[perm], grads[0, perm]),
                   one.filter_sensitivity(x, grads[0])[perm]) <= 1e-13


@pytest.mark.parametrize("bounds", [[0, 1500], [0, 0, 1, 200, 201, 777, 1300, 1300, 1500],
                                    list(range(0, 1501, 100))])
def test_product_kernel_with_any_row_blocks(bounds):
    """The kernel's row blocks (one per thread) and their reach: any split gives W x."""
    from lightweight.optimize import filters
    centers, radius, _ = random_cells(1500, 3, seed=6)
    filt = MatrixFilter(centers, radius)                      # volumes 1: H = W
    x = RNG.random(1500)
    bounds = np.array(bounds, dtype=np.int64)
    out = np.empty(1500)
    filters._symmetric_product(filt._indptr, filt._indices, filt._centers, radius, filt.order,
                               x, x, filters._AS_IS, x, filters._AS_IS, bounds, np.empty(1500),
                               np.full((len(bounds) - 1, 1500), np.nan), out)
    assert rel_err(out, formula_H(centers, radius, np.ones(1500)) @ x) <= 1e-13


def test_coincident_and_one_dimensional_cells():
    """Cells at one point (zero extent: one Morton box) and cells on a line."""
    n = 50
    filt = MatrixFilter(np.zeros((n, 3)), 1.0, np.arange(1.0, n + 1))
    x = RNG.random(n)
    expected = np.sum(np.arange(1.0, n + 1) * x) / np.sum(np.arange(1.0, n + 1))
    assert rel_err(filt.forward(x), np.full(n, expected)) <= 1e-13
    line = np.linspace(0.0, 1e6, 3001)[::-1, None]                # extent >> radius
    filt = MatrixFilter(line, 1e3, None)
    H = formula_H(line, 1e3, np.ones(3001))
    x = RNG.random(3001)
    assert np.array_equal(filt.H.data, H.data)
    assert rel_err(filt.forward(x), H @ x / np.asarray(H.sum(axis=1)).ravel()) <= 1e-13
