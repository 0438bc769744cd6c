"""stress_results by blocks of bytes: the block size changes no number (lightweight/fem/stress.py)."""

import numpy as np
import pytest

import lightweight as lw
import lightweight.fem.stress as fs


def _unstructured(mesh):
    """The same cells without the grid: the per-cell kernel path, no kept DOF table."""
    return lw.Mesh(mesh.points, mesh.cells, mesh.cell_type, node_sets=dict(mesh.node_sets))


@pytest.mark.parametrize("shape, cell_type, grid", [((6, 4, 3), "tetra", False), ((6, 4, 3), None, True),
                                                     ((3, 2, 2), "tetra10", False), ((9, 5), None, True),
                                                     ((9, 5), "triangle", False)])
def test_block_size_gives_identical_arrays(shape, cell_type, grid):
    mesh = lw.structured_grid(shape, cell_type=cell_type)
    if not grid:
        mesh = _unstructured(mesh)
    dim = len(shape)
    load = np.zeros(dim)
    load[-1] = -1.0
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"[:dim]},
                     loads={"a": lw.PointLoad("xmax", load)})
    system = model.system()
    rng = np.random.default_rng(0)
    U = rng.normal(size=(2, mesh.n_nodes * dim))
    scale = rng.uniform(0.1, 1.0, mesh.n_cells)
    one_block = fs.stress_results(model, U, scale, block_bytes=2**40)
    assert len(fs._cell_blocks(system, 2**40)) == 1
    per_cell = fs._block_bytes_per_cell(system)
    for block_bytes in (per_cell, 5 * per_cell, 13 * per_cell):
        assert len(fs._cell_blocks(system, block_bytes)) > 2
        blocks = fs.stress_results(model, U, scale, block_bytes=block_bytes)
        for key in one_block:
            np.testing.assert_array_equal(blocks[key], one_block[key])
    # the blockwise nodal values are the whole-mesh extrapolation and average
    points = fs.integration_point_stresses(model, U, scale)
    np.testing.assert_allclose(one_block["stress_nodal"], fs.nodal_stresses(model, points),
                               rtol=1e-13, atol=1e-13)
    if not grid and cell_type in ("tetra", "tetra10"):
        assert system._cell_dofs is None          # DOFs were made per block, no table kept


def test_default_blocks_keep_to_the_byte_budget():
    mesh = _unstructured(lw.structured_grid((30, 20, 20), cell_type="tetra"))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                     loads={"a": lw.PointLoad("xmax", [0.0, 0.0, -1.0])})
    system = model.system()
    blocks = fs._cell_blocks(system)
    cells = max(b.stop - b.start for b in blocks)
    assert len(blocks) > 1
    assert cells * fs._block_bytes_per_cell(system) <= fs.STRESS_BLOCK_BYTES
