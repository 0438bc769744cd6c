"""Assembly without stored tet4 element matrices (lightweight.fem.assembly.refill_from_geometry).

References: the stored-matrix path it replaces (element_stiffness + entry map + refill, which
the CalculiX tests pin down) must give the same CSR data bit for bit, and the energies from
strains must equal u_e^T K_e u_e of the stored matrices to rounding. Memory: a system on a
linear-tet mesh keeps no per-cell array larger than a few bytes per tet after a solve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.fem.assembly import (build_pattern, coo_assembly, refill, refill_from_geometry)
from lightweight.fem.elements import element_stiffness
from lightweight.fem.kernels import (element_bilinear_forms, element_quadratic_forms,
                                     tet4_element_bilinear_forms)
from lightweight.fem.system import LinearElasticSystem

MESH = Path(__file__).resolve().parent.parent / "meshes" / "bracket.msh"


@pytest.fixture(scope="module")
def bracket():
    mesh = lw.read_mesh(MESH)
    assert mesh.cell_type == "tetra"
    model = lw.Model(mesh, material=lw.Material(E=70e3, nu=0.33),
                     supports={"bolt_holes": "xyz"},
                     loads={"down": [lw.Traction("load_face", (0.0, 0.0, -1.0))],
                            "side": [lw.Traction("load_face", (0.0, 1.0, 0.0))]})
    return model


def _orthotropic_D():
    """A full, non-isotropic symmetric positive definite D (6, 6): no isotropic shortcut hides."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((6, 6))
    return A @ A.T + 6 * np.eye(6)


@pytest.mark.parametrize("D_kind", ["isotropic", "anisotropic"])
def test_refill_from_geometry_bit_identical_to_stored(bracket, D_kind):
    mesh = bracket.mesh
    D = bracket.material.elasticity_matrix(3, None) if D_kind == "isotropic" else _orthotropic_D()
    Ke, _ = element_stiffness("tetra", mesh.points[mesh.cells], D)
    pattern = build_pattern(mesh.cells, mesh.n_nodes, 3)
    scale = np.random.default_rng(1).uniform(1e-9, 1.0, mesh.n_cells)
    computed = refill_from_geometry(pattern, "tetra", mesh.points, D, 1.0, scale)
    # the per-cell table of the stored path is not built by the computed refill
    assert pattern._entry_map is None
    stored = refill(pattern, Ke, scale)
    assert np.array_equal(computed, stored)
    # and both are the COO->CSR sum (the independent twin), to rounding
    K_coo = coo_assembly(mesh.cells, mesh.n_nodes, 3, Ke, scale)
    K = pattern.matrix(computed)
    assert abs(K - K_coo).max() <= 1e-12 * abs(K_coo).max()


def test_refill_from_geometry_serial_fallback(bracket):
    """Without a block colouring (colour_ptr of length 1) the refill runs serially: same data."""
    mesh = bracket.mesh
    D = bracket.material.elasticity_matrix(3, None)
    pattern = build_pattern(mesh.cells, mesh.n_nodes, 3)
    scale = np.linspace(0.1, 1.0, mesh.n_cells)
    parallel = refill_from_geometry(pattern, "tetra", mesh.points, D, 1.0, scale)
    pattern.colour_ptr = np.zeros(1, dtype=np.int64)
    serial = refill_from_geometry(pattern, "tetra", mesh.points, D, 1.0, scale)
    Ke, _ = element_stiffness("tetra", mesh.points[mesh.cells], D)
    assert np.array_equal(serial, refill(pattern, Ke, scale))
    assert np.allclose(serial, parallel, rtol=1e-13, atol=1e-13 * np.abs(serial).max())


def test_refill_from_geometry_rejects_other_cells(bracket):
    mesh = bracket.mesh
    pattern = build_pattern(mesh.cells, mesh.n_nodes, 3)
    with pytest.raises(ValueError, match="tetra10"):
        refill_from_geometry(pattern, "tetra10", mesh.points, np.eye(6), 1.0, np.ones(mesh.n_cells))


def test_entry_map_and_pair_ranks_agree(bracket):
    """Both per-cell position tables point at the same CSR entries, and those hold (row, col)."""
    mesh = bracket.mesh
    pattern = build_pattern(mesh.cells, mesh.n_nodes, 3)
    ranks = pattern.pair_ranks.astype(np.int64)
    assert pattern.pair_ranks.dtype == np.uint8
    cells = mesh.cells[:500]
    positions = np.empty((500, 144), dtype=np.int64)
    for a in range(4):
        for b in range(4):
            for i in range(3):
                for j in range(3):
                    positions[:, (3 * a + i) * 12 + 3 * b + j] = (
                        pattern.indptr[cells[:, a] * 3 + i] + 3 * ranks[:500, 4 * a + b] + j)
    assert np.array_equal(positions, pattern.entry_map[:500])
    rows = np.repeat(np.arange(pattern.n_dofs), np.diff(pattern.indptr))
    dofs = (cells[:, :, None] * 3 + np.arange(3)).reshape(500, 12)
    assert np.array_equal(rows[positions], np.repeat(dofs, 12, axis=1))
    assert np.array_equal(pattern.indices[positions], np.tile(dofs, (1, 12)))


def test_tet4_energies_equal_stored_matrix_forms(bracket):
    mesh = bracket.mesh
    D = _orthotropic_D()
    Ke, _ = element_stiffness("tetra", mesh.points[mesh.cells], D)
    dofs = (mesh.cells[:, :, None] * 3 + np.arange(3)).reshape(mesh.n_cells, 12)
    rng = np.random.default_rng(2)
    U = rng.standard_normal((3, mesh.n_nodes * 3))
    V = rng.standard_normal((3, mesh.n_nodes * 3))
    for got, ref in ((tet4_element_bilinear_forms(mesh.points, mesh.cells, D, 1.0, U),
                      element_quadratic_forms(Ke, dofs, U)),
                     (tet4_element_bilinear_forms(mesh.points, mesh.cells, D, 1.0, U, V),
                      element_bilinear_forms(Ke, dofs, U, V))):
        assert got.shape == (3, mesh.n_cells)
        assert np.max(np.abs(got - ref)) <= 1e-12 * np.max(np.abs(ref))


def test_system_keeps_no_tet4_element_tables(bracket):
    system = LinearElasticSystem(bracket)
    assert system.computes_element_matrices
    scale = np.random.default_rng(4).uniform(1e-3, 1.0, system.n_cells)
    U, F = system.solve(scale, solver="direct")
    # the stored-matrix twin of the same solve: K from element_stiffness and the entry map
    Ke = system.element_matrices                 # computed on access, not kept
    assert Ke.shape == (system.n_cells, 12, 12) and system._element_matrices is None
    twin = build_pattern(system.mesh.cells, system.mesh.n_nodes, 3, renumber=True)   # as the system
    data = refill(twin, Ke, scale)
    assert np.array_equal(data, system.stiffness_data(scale))
    energies = system.element_energies(U)
    reference = element_quadratic_forms(Ke, system.cell_dofs, U)
    # On a solved field the cells near the supports move almost rigidly: u_e^T K_e u_e then
    # cancels (rounding ~ eps |K_e| |u_e|^2, 6e-8 relative on a bracket cell against an
    # extended-precision V eps^T D eps, which the strain form meets to 1e-12). So the two may
    # differ by the stored form's rounding bound, not more.
    u_cells = U[:, system.cell_dofs]
    bound = (np.finfo(float).eps * np.linalg.norm(Ke, axis=(1, 2))[None, :]
             * np.einsum("cei,cei->ce", u_cells, u_cells))
    assert np.all(np.abs(energies - reference) <= 4 * bound + 1e-14 * np.abs(reference).max())
    # compliance = sum of scaled element energies (the optimizer's identity)
    compliance = np.einsum("ij,ij->i", F, U)
    assert np.allclose((energies * scale).sum(axis=1), compliance, rtol=1e-10)
    del Ke, data, reference, u_cells, bound, twin
    # what stays per cell: the pattern's pair ranks (16 B) and the colouring; no 144-entry tables
    pattern = system.pattern
    assert pattern._entry_map is None
    per_cell = sum(a.nbytes for a in (pattern.pair_ranks,)) / system.n_cells
    assert per_cell <= 16


def test_grid_path_unchanged():
    """Structured grids keep their one shared matrix and the entry-map refill."""
    mesh = lw.structured_grid((6, 3, 2))
    model = lw.Model(mesh, material=lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                     loads={"tip": [lw.PointLoad("xmax", (0.0, -1.0, 0.0))]})
    system = LinearElasticSystem(model)
    assert not system.computes_element_matrices
    assert system.element_matrices.shape[0] == 1


def test_wide_node_degree_uses_wider_ranks():
    """A node with more than 256 neighbours: the rank table widens (uint16), data stays exact."""
    rng = np.random.default_rng(9)
    n_fan = 120                                   # 120 tets around node 0, 3 own nodes each
    points = [np.zeros(3)]
    cells = []
    for t in range(n_fan):
        phi = 2 * np.pi * t / n_fan
        base = len(points)
        direction = np.array([np.cos(phi), np.sin(phi), 0.0])
        points += [direction + rng.uniform(-0.05, 0.05, 3),
                   direction + np.array([0.0, 0.0, 0.5]) + rng.uniform(-0.05, 0.05, 3),
                   1.5 * direction + rng.uniform(-0.05, 0.05, 3)]
        cells.append([0, base, base + 1, base + 2])
    points = np.array(points)
    cells = np.array(cells, dtype=np.int64)
    # orient every tet positively (det J > 0), as a mesh reader would
    d = np.einsum("ij,ij->i", np.cross(points[cells[:, 1]] - points[cells[:, 0]],
                                       points[cells[:, 2]] - points[cells[:, 0]]),
                  points[cells[:, 3]] - points[cells[:, 0]])
    cells[d < 0, 2], cells[d < 0, 3] = cells[d < 0, 3], cells[d < 0, 2].copy()
    pattern = build_pattern(cells, len(points), 3)
    assert np.diff(pattern.node_ptr).max() > 256 and pattern.pair_ranks.dtype == np.uint16
    D = lw.Material(E=1.0, nu=0.3).elasticity_matrix(3, None)
    scale = rng.uniform(0.1, 1.0, len(cells))
    Ke, _ = element_stiffness("tetra", points[cells], D)
    assert np.array_equal(refill_from_geometry(pattern, "tetra", points, D, 1.0, scale),
                          refill(pattern, Ke, scale))


def _stored_cases():
    """(name, cells, n_nodes, dim, element matrices) with stored matrices: tet10 (the sample
    bracket's quadratic mesh), a shared hex8 grid matrix, quad4 and tri3 grids."""
    tet10 = lw.read_mesh(MESH.parent / "bracket_tet10.msh")
    assert tet10.cell_type == "tetra10"
    D3 = _orthotropic_D()
    D2 = lw.Material(E=1.0, nu=0.3).elasticity_matrix(2, "stress")
    cases = [("tetra10", tet10.cells, tet10.n_nodes, 3,
              element_stiffness("tetra10", tet10.points[tet10.cells], D3)[0])]
    hexes = lw.structured_grid((7, 4, 3))
    cases.append(("hexahedron shared", hexes.cells, hexes.n_nodes, 3,
                  element_stiffness("hexahedron", hexes.points[hexes.cells[:1]], D3)[0]))
    for shape, cell_type in (((9, 5), "quad"), ((6, 4), "triangle")):
        grid = lw.structured_grid(shape, cell_type=cell_type)
        cases.append((cell_type, grid.cells, grid.n_nodes, 2,
                      element_stiffness(cell_type, grid.points[grid.cells], D2)[0]))
    return cases


@pytest.mark.parametrize("case", range(4))
def test_refill_by_pair_ranks_equals_the_entry_map_refill_bit_for_bit(case):
    from lightweight.fem.assembly import refill_by_entry_map
    name, cells, n_nodes, dim, Ke = _stored_cases()[case]
    rng = np.random.default_rng(case)
    scale = rng.uniform(1e-9, 1.0, len(cells))
    for renumber in (False, True):
        pattern = build_pattern(cells, n_nodes, dim, renumber=renumber)
        by_ranks = refill(pattern, Ke, scale)
        assert pattern._entry_map is None, name        # the 4-bytes-per-entry table is not built
        reference = refill_by_entry_map(pattern, Ke, scale)
        assert np.array_equal(by_ranks, reference), name
        # the serial path (no colouring) gives the same sums
        pattern.colour_ptr = np.zeros(1, dtype=np.int64)
        assert np.array_equal(refill(pattern, Ke, scale), refill_by_entry_map(pattern, Ke, scale)), name
    # and the pattern's cells are the mesh's here: against the independent COO->CSR sum
    pattern = build_pattern(cells, n_nodes, dim)
    K = pattern.matrix(refill(pattern, Ke, scale))
    full = Ke if Ke.shape[0] == len(cells) else np.broadcast_to(Ke, (len(cells),) + Ke.shape[1:])
    K_coo = coo_assembly(cells, n_nodes, dim, np.ascontiguousarray(full), scale)
    assert abs(K - K_coo).max() <= 1e-12 * abs(K_coo).max(), name


def test_tet10_system_keeps_one_byte_per_node_pair():
    mesh = lw.read_mesh(MESH.parent / "bracket_tet10.msh")
    model = lw.Model(mesh, material=lw.Material(E=70e3, nu=0.33), supports={"bolt_holes": "xyz"},
                     loads={"down": [lw.Traction("load_face", (0.0, 0.0, -1.0))]})
    system = LinearElasticSystem(model)
    U, F = system.solve(np.full(system.n_cells, 0.5), solver="direct")
    pattern = system.pattern
    assert pattern._entry_map is None
    assert pattern.pair_ranks.dtype == np.uint8 and pattern.pair_ranks.nbytes == 100 * system.n_cells


@pytest.mark.parametrize("case", [0, 2, 3])
def test_packed_element_matrices_give_the_same_numbers_bit_for_bit(case):
    """Packed upper triangles (half the bytes) refill K and give energies exactly as the full
    matrices do (element_stiffness makes them exactly symmetric)."""
    from lightweight.fem.assembly import refill_packed
    from lightweight.fem.elements import packed_element_stiffness, packed_size, unpack_symmetric
    from lightweight.fem.kernels import packed_element_forms
    name, cells, n_nodes, dim, Ke = _stored_cases()[case]
    n = Ke.shape[1]
    assert np.array_equal(Ke, Ke.transpose(0, 2, 1)), name
    rows, cols = np.triu_indices(n)
    packed = Ke[:, rows, cols]
    assert packed.shape == (len(cells), packed_size(n))
    assert np.array_equal(unpack_symmetric(packed, n), Ke)
    rng = np.random.default_rng(case)
    scale = rng.uniform(1e-9, 1.0, len(cells))
    pattern = build_pattern(cells, n_nodes, dim, renumber=True)
    assert np.array_equal(refill_packed(pattern, packed, n, scale), refill(pattern, Ke, scale)), name
    dofs = (cells[:, :, None] * dim + np.arange(dim)).reshape(len(cells), n)
    U = rng.standard_normal((3, n_nodes * dim))
    V = rng.standard_normal((3, n_nodes * dim))
    assert np.array_equal(packed_element_forms(packed, dofs, U), element_quadratic_forms(Ke, dofs, U))
    assert np.array_equal(packed_element_forms(packed, dofs, U, V), element_bilinear_forms(Ke, dofs, U, V))


def test_packed_element_stiffness_in_chunks_equals_the_whole():
    from lightweight.fem.elements import packed_element_stiffness
    mesh = lw.read_mesh(MESH.parent / "bracket_tet10.msh")
    D = _orthotropic_D()
    Ke, _ = element_stiffness("tetra10", mesh.points[mesh.cells], D)
    rows, cols = np.triu_indices(30)
    assert np.array_equal(packed_element_stiffness("tetra10", mesh.points, mesh.cells, D, chunk=333),
                          Ke[:, rows, cols])


def test_tet10_system_keeps_packed_matrices_and_solves_as_before():
    mesh = lw.read_mesh(MESH.parent / "bracket_tet10.msh")
    model = lw.Model(mesh, material=lw.Material(E=70e3, nu=0.33), supports={"bolt_holes": "xyz"},
                     loads={"down": [lw.Traction("load_face", (0.0, 0.0, -1.0))]})
    system = LinearElasticSystem(model)
    assert system._element_matrices is None
    assert system._packed_element_matrices.shape == (system.n_cells, 465)
    scale = np.random.default_rng(5).uniform(1e-3, 1.0, system.n_cells)
    full = system.element_matrices                                  # unpacked on access
    assert full.shape == (system.n_cells, 30, 30) and system._element_matrices is None
    assert np.array_equal(system.stiffness_data(scale), refill(system.pattern, full, scale))
    U, F = system.solve(scale, solver="direct")
    assert np.array_equal(system.element_energies(U), element_quadratic_forms(full, system.cell_dofs, U))
    # compliance = sum of scaled element energies
    assert np.allclose((system.element_energies(U) * scale).sum(axis=1), np.einsum("ij,ij->i", F, U),
                       rtol=1e-10)
