"""Filters and Heaviside projection: top88 weights, grid == matrix, exact adjoints, projection."""

import math
import tracemalloc

import numpy as np
import pytest
from scipy.spatial import Delaunay

import lightweight as lw
from lightweight.errors import OptimizationError
from lightweight.mesh import Mesh
from lightweight.optimize.filters import (GridFilter, HelmholtzFilter, MatrixFilter,
                                          make_filter)
from lightweight.optimize.projection import HeavisideProjection, heaviside, volume_preserving_eta

RNG = np.random.default_rng(20240601)


# ---------------------------------------------------------------------- helpers
def dense_reference_H(centers, radius, volumes=None):
    """The filter matrix written out pair by pair: w_ij = max(0, r - d_ij) * v_j."""
    n = len(centers)
    v = np.ones(n) if volumes is None else volumes
    d = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2))
    return np.maximum(0.0, radius - d) * v[None, :]


def top88_H(nelx, nely, rmin):
    """H and Hs built with the loop structure of top88 (0-based, x-fastest cell ids here)."""
    n = nelx * nely
    H = np.zeros((n, n))
    r = int(math.ceil(rmin)) - 1
    for i1 in range(nelx):
        for j1 in range(nely):
            e1 = i1 + nelx * j1
            for i2 in range(max(i1 - r, 0), min(i1 + r, nelx - 1) + 1):
                for j2 in range(max(j1 - r, 0), min(j1 + r, nely - 1) + 1):
                    e2 = i2 + nelx * j2
                    H[e1, e2] = max(0.0, rmin - math.sqrt((i1 - i2) ** 2 + (j1 - j2) ** 2))
    return H, H.sum(axis=1)


def tet_mesh(n_points=120, seed=3):
    """Delaunay tets of random points in a 2 x 1 x 1 box, positively oriented, no slivers."""
    rng = np.random.default_rng(seed)
    corners = np.array([[x, y, z] for x in (0, 2) for y in (0, 1) for z in (0, 1)], dtype=float)
    pts = np.vstack([corners, rng.random((n_points, 3)) * [2, 1, 1]])
    tets = Delaunay(pts).simplices.astype(np.int64)
    e = pts[tets]
    vol = np.einsum("ij,ij->i", np.cross(e[:, 1] - e[:, 0], e[:, 2] - e[:, 0]), e[:, 3] - e[:, 0]) / 6
    tets[vol < 0] = tets[vol < 0][:, [0, 2, 1, 3]]
    tets = tets[np.abs(vol) > 1e-9]
    return Mesh(pts, tets, "tetra")


def tetra10_mesh():
    """A tetra10 mesh: mid-edge nodes added to the Delaunay tets (straight edges)."""
    lin = tet_mesh(40, seed=5)
    edges = [(0, 1), (1, 2), (0, 2), (0, 3), (1, 3), (2, 3)]   # VTK tetra10 edge order
    points = list(lin.points)
    mid = {}
    cells = []
    for c in lin.cells:
        extra = []
        for a, b in edges:
            key = (min(c[a], c[b]), max(c[a], c[b]))
            if key not in mid:
                mid[key] = len(points)
                points.append((lin.points[c[a]] + lin.points[c[b]]) / 2)
            extra.append(mid[key])
        cells.append(list(c) + extra)
    return Mesh(np.array(points), np.array(cells), "tetra10")


def triangle_mesh():
    rng = np.random.default_rng(7)
    corners = np.array([[0, 0], [3, 0], [3, 1], [0, 1]], dtype=float)
    pts = np.vstack([corners, rng.random((80, 2)) * [3, 1]])
    tri = Delaunay(pts).simplices.astype(np.int64)
    e = pts[tri]
    a, b = e[:, 1] - e[:, 0], e[:, 2] - e[:, 0]
    area = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / 2
    tri[area < 0] = tri[area < 0][:, [0, 2, 1]]
    return Mesh(pts, tri[np.abs(area) > 1e-9], "triangle")


# ---------------------------------------------------------------------- grid == matrix
GRID_CASES = [
    ((13, 9), (1.0, 1.0)),
    ((11, 8), (1.0, 0.6)),            # anisotropic 2D
    ((7, 6, 5), (1.0, 1.0, 1.0)),
    ((6, 7, 5), (1.0, 0.7, 1.3)),     # anisotropic 3D
]


@pytest.mark.parametrize("shape,spacing", GRID_CASES)
@pytest.mark.parametrize("radius_in_cells", [1.0, 1.5, 2.5, 4.0])
def test_grid_filter_equals_matrix_filter(shape, spacing, radius_in_cells):
    mesh = lw.structured_grid(shape, size=[n * h for n, h in zip(shape, spacing)],
                              origin=[0.3] * len(shape))
    radius = radius_in_cells * spacing[0]
    grid = GridFilter(shape, spacing, radius)
    general = MatrixFilter(mesh.cell_centers(), radius, volumes=mesh.cell_volumes())
    x = RNG.random(mesh.n_cells)
    g = RNG.standard_normal((3, mesh.n_cells))
    # volume weights scale every row sum by the (uniform) cell volume
    np.testing.assert_allclose(grid.Hs * np.prod(spacing), general.Hs, rtol=1e-12)
    np.testing.assert_allclose(grid.forward(x), general.forward(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(grid.backward(g), general.backward(g), rtol=0, atol=1e-12)
    np.testing.assert_allclose(grid.backward(g[0]), general.backward(g[0]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(grid.filter_sensitivity(x, g[0]), general.filter_sensitivity(x, g[0]),
                               rtol=0, atol=1e-12)
    # and both equal the pair-by-pair definition
    H = dense_reference_H(mesh.cell_centers(), radius)
    np.testing.assert_allclose(grid.forward(x), H @ x / H.sum(axis=1), rtol=0, atol=1e-12)


def test_make_filter_picks_the_fast_path_and_validates():
    grid_mesh = lw.structured_grid((6, 4))
    assert isinstance(make_filter(grid_mesh, 1.5), GridFilter)
    assert make_filter(grid_mesh, 1.5, kind="sensitivity").kind == "sensitivity"
    assert isinstance(make_filter(tet_mesh(30), 0.5), MatrixFilter)
    assert isinstance(make_filter(grid_mesh, 1.5, kind="helmholtz"), HelmholtzFilter)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(OptimizationError, match="radius"):
            make_filter(grid_mesh, bad)
        with pytest.raises(OptimizationError, match="radius"):
            make_filter(grid_mesh, bad, kind="helmholtz")
        with pytest.raises(OptimizationError, match="radius"):
            MatrixFilter(grid_mesh.cell_centers(), bad)
    with pytest.raises(OptimizationError, match="unknown filter"):
        make_filter(grid_mesh, 1.5, kind="gaussian")


@pytest.mark.parametrize("radius", [0.3, 1.0])
def test_radius_up_to_one_cell_is_identity(radius):
    mesh = lw.structured_grid((9, 5, 3))
    x = RNG.random(mesh.n_cells)
    for filt in (make_filter(mesh, radius), MatrixFilter(mesh.cell_centers(), radius)):
        np.testing.assert_allclose(filt.forward(x), x, rtol=1e-15)
        np.testing.assert_allclose(filt.backward(x), x, rtol=1e-15)


# ---------------------------------------------------------------------- top88 weights
def test_top88_weights_on_mbb_grid():
    nelx, nely, r = 60, 20, 1.5
    filt = GridFilter((nelx, nely), (1.0, 1.0), r)
    diag = 1.5 - math.sqrt(2.0)
    hs_interior = 1.5 + 4 * 0.5 + 4 * diag
    # radius 1.5 reaches face neighbours and diagonals, not distance 2
    assert filt.stencil_size == 9
    i, j = 30, 10
    e = i + nelx * j
    impulse = np.zeros(nelx * nely)
    impulse[e] = 1.0
    xt = filt.forward(impulse).reshape(nely, nelx)
    assert xt[j, i] == pytest.approx(1.5 / hs_interior, rel=1e-14)
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        assert xt[j + dj, i + di] == pytest.approx(0.5 / hs_interior, rel=1e-14)
    for di, dj in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
        assert xt[j + dj, i + di] == pytest.approx(diag / hs_interior, rel=1e-14)
    assert xt[j, i + 2] == 0.0 and xt[j + 2, i] == 0.0
    assert np.count_nonzero(xt) == 9
    # edges: outside neighbours do not exist (no padding)
    Hs = filt.Hs.reshape(nely, nelx)
    assert Hs[j, i] == pytest.approx(hs_interior, rel=1e-14)
    assert Hs[0, 0] == pytest.approx(1.5 + 2 * 0.5 + diag, rel=1e-14)
    assert Hs[5, 0] == pytest.approx(1.5 + 3 * 0.5 + 2 * diag, rel=1e-14)
    assert Hs[nely - 1, 30] == pytest.approx(1.5 + 3 * 0.5 + 2 * diag, rel=1e-14)
    # the whole operator equals top88's loop-built H
    H, hs = top88_H(nelx, nely, r)
    x = RNG.random(nelx * nely)
    np.testing.assert_allclose(filt.Hs, hs, rtol=1e-14)
    np.testing.assert_allclose(filt.forward(x), H @ x / hs, rtol=1e-13)
    dc = -RNG.random(nelx * nely)
    np.testing.assert_allclose(filt.backward(dc), H.T @ (dc / hs), rtol=1e-13)


def test_sensitivity_filter_matches_top88_formula():
    nelx, nely, r = 8, 5, 2.0
    H, hs = top88_H(nelx, nely, r)
    x = RNG.random(nelx * nely)
    x[[3, 17]] = [0.0, 1e-5]                 # max(1e-3, x) must guard these
    dc = -RNG.random(nelx * nely) * 10
    expected = (H @ (x * dc)) / hs / np.maximum(1e-3, x)
    for filt in (GridFilter((nelx, nely), (1.0, 1.0), r),
                 MatrixFilter(lw.structured_grid((nelx, nely)).cell_centers(), r)):
        np.testing.assert_allclose(filt.filter_sensitivity(x, dc), expected, rtol=1e-13)
        stacked = filt.filter_sensitivity(x, np.stack([dc, 2 * dc]))
        np.testing.assert_allclose(stacked[1], 2 * expected, rtol=1e-13)


# ---------------------------------------------------------------------- adjoints, constants
def all_filters():
    quad = lw.structured_grid((14, 6), size=(7.0, 2.4))
    hexa = lw.structured_grid((6, 5, 4), size=(3.0, 2.0, 2.0))
    tets = tet_mesh()
    return {
        "grid2d": make_filter(quad, 1.3),
        "grid3d": make_filter(hexa, 1.1),
        "matrix_tet": make_filter(tets, 0.45),
        "matrix_uniform": MatrixFilter(quad.cell_centers(), 1.3),
        "helmholtz_quad": make_filter(quad, 1.3, kind="helmholtz"),
        "helmholtz_hex": make_filter(hexa, 1.1, kind="helmholtz"),
        "helmholtz_tet": make_filter(tets, 0.45, kind="helmholtz"),
        "helmholtz_tet_splu": HelmholtzFilter(tets, 0.45, solver="splu"),
        "helmholtz_tetra10": HelmholtzFilter(tetra10_mesh(), 0.45),
        "helmholtz_triangle": HelmholtzFilter(triangle_mesh(), 0.5),
    }


@pytest.fixture(scope="module")
def filters():
    return all_filters()


@pytest.mark.parametrize("name", [
    "grid2d", "grid3d", "matrix_tet", "matrix_uniform", "helmholtz_quad", "helmholtz_hex",
    "helmholtz_tet", "helmholtz_tet_splu", "helmholtz_tetra10", "helmholtz_triangle"])
def test_backward_is_exact_adjoint_and_constants_stay(filters, name):
    filt = filters[name]
    n = filt.n
    for _ in range(3):
        x = RNG.standard_normal(n)
        g = RNG.standard_normal(n)
        lhs = filt.backward(g) @ x
        rhs = g @ filt.forward(x)
        assert lhs == pytest.approx(rhs, rel=1e-11, abs=1e-12 * np.abs(g).sum())
    G = RNG.standard_normal((4, n))
    np.testing.assert_allclose(filt.backward(G)[2], filt.backward(G[2]), rtol=1e-13, atol=1e-15)
    for c in (1.0, 0.37):
        np.testing.assert_allclose(filt.forward(np.full(n, c)), c, rtol=0, atol=1e-10)
    # a filter is a smoothing: it does not create new extremes
    x = RNG.random(n)
    y = filt.forward(x)
    assert y.min() >= x.min() - 1e-12 or name.startswith("helmholtz")
    assert y.max() <= x.max() + 1e-12 or name.startswith("helmholtz")
    assert np.std(y) < np.std(x)


def test_matrix_filter_on_tets_uses_volume_weights():
    mesh = tet_mesh()
    v = mesh.cell_volumes()
    assert v.max() / v.min() > 5               # graded enough for the weights to matter
    r = 0.45
    filt = make_filter(mesh, r)
    H = dense_reference_H(mesh.cell_centers(), r, v)
    x = RNG.random(mesh.n_cells)
    np.testing.assert_allclose(filt.forward(x), H @ x / H.sum(axis=1), rtol=1e-12)
    g = RNG.standard_normal(mesh.n_cells)
    np.testing.assert_allclose(filt.backward(g), H.T @ (g / H.sum(axis=1)), rtol=1e-12, atol=1e-14)
    unweighted = MatrixFilter(mesh.cell_centers(), r)
    assert np.abs(unweighted.forward(x) - filt.forward(x)).max() > 1e-3


def test_helmholtz_solvers_agree(filters):
    x = RNG.random(filters["helmholtz_tet"].n)
    np.testing.assert_allclose(filters["helmholtz_tet"].forward(x),
                               filters["helmholtz_tet_splu"].forward(x), rtol=1e-11)


def test_helmholtz_length_scale_matches_the_pde():
    """On a long strip the impulse response decays like exp(-|s| / r_h), r_h = r / (2 sqrt 3)."""
    h, r = 0.025, 1.0
    n = 400
    mesh = lw.structured_grid((n, 1), size=(n * h, h))
    filt = HelmholtzFilter(mesh, r)
    r_h = r / (2 * math.sqrt(3))
    assert filt.length_scale == pytest.approx(r_h)
    x = np.zeros(n)
    x[n // 2] = 1.0
    y = filt.forward(x)
    ratio = y[n // 2 + 40] / y[n // 2 + 20]    # 0.5 apart
    assert ratio == pytest.approx(math.exp(-20 * h / r_h), rel=5e-3)
    # it conserves mass (natural boundary conditions): sum of V x is preserved
    assert y.sum() == pytest.approx(1.0, rel=1e-10)


# ---------------------------------------------------------------------- big grids
def check_big_grid(shape, radius):
    n = int(np.prod(shape))
    x = RNG.random(n)
    tracemalloc.start()
    filt = GridFilter(shape, (1.0, 1.0, 1.0), radius)
    y = filt.forward(x)
    g = filt.backward(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # x, Hs, outputs and temporaries: a few arrays of n floats, never a matrix
    assert peak < 8 * n * 8
    assert not hasattr(filt, "H")
    nx, ny, nz = shape
    X = x.reshape(nz, ny, nx)
    for (i, j, k) in ((nx // 2, ny // 2, nz // 2), (0, 0, 0), (nx - 1, 3, nz - 1)):
        e = i + nx * (j + ny * k)
        num = den = 0.0
        c = int(radius)
        for dk in range(-c, c + 1):
            for dj in range(-c, c + 1):
                for di in range(-c, c + 1):
                    if 0 <= i + di < nx and 0 <= j + dj < ny and 0 <= k + dk < nz:
                        w = max(0.0, radius - math.sqrt(di * di + dj * dj + dk * dk))
                        num += w * X[k + dk, j + dj, i + di]
                        den += w
        assert y[e] == pytest.approx(num / den, rel=1e-12)
    assert np.dot(g, x) == pytest.approx(np.dot(x, y), rel=1e-10)


def test_grid_filter_3d_1e5_cells():
    check_big_grid((50, 50, 40), 2.5)


def test_grid_filter_3d_1e6_cells():   # ~1 s on 2 cores, so not marked slow
    check_big_grid((100, 100, 100), 2.5)


# ---------------------------------------------------------------------- projection
def test_heaviside_backward_matches_central_differences():
    proj = HeavisideProjection(beta=8.0, eta=0.4)
    x = RNG.random(50)
    g = RNG.standard_normal((2, 50))
    analytic = proj.backward(x, g)
    step = 1e-6
    for e in range(0, 50, 7):
        xp, xm = x.copy(), x.copy()
        xp[e] += step
        xm[e] -= step
        fd = (g @ proj.forward(xp) - g @ proj.forward(xm)) / (2 * step)
        np.testing.assert_allclose(analytic[:, e], fd, rtol=1e-6, atol=1e-9)


def test_heaviside_end_points_and_limits():
    for beta in (1.0, 64.0, 512.0):
        for eta in (0.2, 0.5, 0.8):
            p = HeavisideProjection(beta, eta)
            assert p.forward(np.array([0.0]))[0] == pytest.approx(0.0, abs=1e-14)
            assert p.forward(np.array([1.0]))[0] == pytest.approx(1.0, rel=1e-14)
    sharp = HeavisideProjection(beta=512.0, eta=0.5)
    np.testing.assert_allclose(sharp.forward(np.array([0.45, 0.55])), [0.0, 1.0], atol=1e-10)
    gentle = HeavisideProjection(beta=1e-4, eta=0.5)
    x = RNG.random(10)
    np.testing.assert_allclose(gentle.forward(x), x, atol=1e-8)


def test_beta_continuation_doubles_up_to_the_cap():
    p = HeavisideProjection(beta=1.0)
    betas = []
    while p.continue_beta(factor=2, max_beta=20):
        betas.append(p.beta)
    assert betas == [2.0, 4.0, 8.0, 16.0, 20.0]
    assert p.beta == 20.0
    with pytest.raises(OptimizationError):
        p.continue_beta(factor=0.5)
    with pytest.raises(OptimizationError, match="beta"):
        HeavisideProjection(beta=0.0)
    with pytest.raises(OptimizationError, match="eta"):
        HeavisideProjection(beta=1.0, eta=1.5)


@pytest.mark.parametrize("beta", [4.0, 8.0, 32.0])
def test_volume_preserving_eta_hits_the_target(beta):
    x = RNG.random(400) ** 2
    v = RNG.uniform(0.5, 2.0, 400)
    for target in (0.2, 0.35, 0.6):
        eta = volume_preserving_eta(x, beta, target, volumes=v)
        assert 0 < eta < 1
        assert (v @ heaviside(x, beta, eta)) / v.sum() == pytest.approx(target, abs=1e-9)
    # equal volumes by default
    eta = volume_preserving_eta(x, beta, 0.3)
    assert heaviside(x, beta, eta).mean() == pytest.approx(0.3, abs=1e-9)
    with pytest.raises(OptimizationError, match="volume"):
        volume_preserving_eta(x, beta, 1.2)


def test_volume_preserving_eta_unreachable_target_gives_the_nearest_end():
    x = np.full(10, 0.5)
    # beta = 1 barely moves x: a volume of 0.05 needs more than eta = 1 can do
    assert volume_preserving_eta(x, 1.0, 0.05) == 1.0
    assert volume_preserving_eta(x, 1.0, 0.95) == 0.0


def test_chain_through_filter_and_projection():
    """d/dx of g . P(F(x)) by backward passes equals central differences."""
    mesh = lw.structured_grid((10, 6))
    filt = make_filter(mesh, 2.0)
    proj = HeavisideProjection(beta=4.0, eta=0.5)
    x = RNG.random(mesh.n_cells)
    g = RNG.standard_normal(mesh.n_cells)
    analytic = filt.backward(proj.backward(filt.forward(x), g))
    step = 1e-6
    for e in (0, 13, 37, 59):
        xp, xm = x.copy(), x.copy()
        xp[e] += step
        xm[e] -= step
        fd = (g @ proj.forward(filt.forward(xp)) - g @ proj.forward(filt.forward(xm))) / (2 * step)
        assert analytic[e] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_helmholtz_filter_takes_any_factory_solver():
    """solver= goes through lightweight.fem.solvers.make_solver: names, aliases and AMG (a
    scalar field: the constant is its near-null space) give the same filtered field."""
    from lightweight.fem.solvers import available_solvers
    mesh = tet_mesh()
    x = RNG.random(mesh.n_cells)
    reference = HelmholtzFilter(mesh, 0.45).forward(x)
    for name in ("direct", "superlu", "splu") + (("amg",) if "amg" in available_solvers() else ()):
        filt = HelmholtzFilter(mesh, 0.45, solver=name)
        tolerance = 1e-6 if name == "amg" else 1e-11
        np.testing.assert_allclose(filt.forward(x), reference, rtol=tolerance)
    with pytest.raises(OptimizationError, match="HelmholtzFilter.*'nope'"):
        HelmholtzFilter(mesh, 0.45, solver="nope")


@pytest.mark.parametrize("shape, spacing, radius", [
    ((23, 17, 9), (1.0, 1.0, 1.0), 3.2),       # long axes and one shorter than 2c + 2
    ((40, 6), (0.5, 1.0), 2.1),                  # 2D, anisotropic cells
    ((7, 5, 4), (1.0, 1.0, 1.0), 5.5),           # every axis shorter than the stencil
])
def test_grid_filter_row_sums_from_the_small_table_equal_the_stencil_of_ones(shape, spacing, radius):
    """The grid filter keeps a table of row sums of a raster at most 2c + 2 long per axis: every
    cell's Hs read through it equals, to the bit, the stencil applied to a field of ones, and
    forward / backward equal H x / Hs and H^T (g / Hs) with that full Hs."""
    flt = GridFilter(shape, spacing, radius)
    full = flt._apply_H(np.ones(flt.n))
    np.testing.assert_array_equal(flt.Hs, full)
    assert flt._row_sums.size < flt.n or flt.n < 200
    x = np.random.default_rng(1).random(flt.n)
    np.testing.assert_array_equal(flt.forward(x), flt._apply_H(x) / full)
    g = np.random.default_rng(2).standard_normal((2, flt.n))
    np.testing.assert_array_equal(flt.backward(g), np.stack([flt._apply_H(row / full) for row in g]))
    if flt.n > 1000:          # nothing of the field's size is kept
        assert not [k for k, v in vars(flt).items() if isinstance(v, np.ndarray) and v.size >= flt.n]
