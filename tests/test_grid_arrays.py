"""Structured grids build their points and cells on reading (lightweight/mesh/mesh.py).

A grid from ``structured_grid`` stores neither array (89 bytes per hex at 128x64x64); these
tests check that what a reader gets is exactly the grid it always was, that the arrays cannot
be changed in place and lost, that pickling, copying and assigning keep a mesh whole, and that
a design loop on a grid holds neither array.
"""

from __future__ import annotations

import copy
import gc
import pickle

import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import MeshError
from lightweight.mesh.mesh import Mesh


def _unravel(flat, counts):
    """Index (i, j[, k]) of the flat x-fastest position ``flat`` in a raster of ``counts``."""
    index = []
    for c in counts:
        index.append(flat % c)
        flat //= c
    return index


def _reference_grid(shape, size, origin):
    """Points and cells of a grid written out node by node and cell by cell (no meshgrid)."""
    dim = len(shape)
    counts = [n + 1 for n in shape]
    points = []
    for flat in range(int(np.prod(counts))):
        index = _unravel(flat, counts)
        points.append([origin[d] + size[d] if index[d] == shape[d]
                       else origin[d] + size[d] / shape[d] * index[d] for d in range(dim)])

    def node(*ijk):
        flat, stride = 0, 1
        for d in range(dim):
            flat += ijk[d] * stride
            stride *= counts[d]
        return flat

    cells = []
    for flat in range(int(np.prod(shape))):
        index = _unravel(flat, shape)
        i, j = index[0], index[1]
        ring = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)]
        if dim == 2:
            cells.append([node(a, b) for a, b in ring])
        else:
            k = index[2]
            cells.append([node(a, b, k) for a, b in ring] + [node(a, b, k + 1) for a, b in ring])
    return np.array(points), np.array(cells)


@pytest.mark.parametrize("shape,size,origin", [((4, 3, 2), (1.0, 0.7, 0.3), (0.5, -1.0, 2.0)),
                                               ((5, 3), (2.0, 1.0), (0.0, 0.0)),
                                               ((3, 3, 3), None, None)])
def test_grid_arrays_built_on_reading_are_the_grid(shape, size, origin):
    mesh = lw.structured_grid(shape, size=size, origin=origin)
    size = size or tuple(float(n) for n in shape)
    origin = origin or (0.0,) * len(shape)
    points, cells = _reference_grid(shape, size, origin)
    assert not mesh.stores_grid_arrays
    np.testing.assert_allclose(mesh.points, points, rtol=0, atol=1e-15)
    # the far faces exactly on origin + size (predicates like x == L rely on it)
    for d in range(len(shape)):
        assert np.count_nonzero(mesh.points[:, d] == origin[d] + size[d]) == len(points) // (shape[d] + 1)
    np.testing.assert_array_equal(mesh.cells, cells)
    assert mesh.cells.dtype == np.int64 and mesh.points.dtype == np.float64
    assert (mesh.n_nodes, mesh.n_cells, mesh.dim) == (len(points), len(cells), len(shape))
    assert mesh.cell_volumes() == pytest.approx(np.full(len(cells), np.prod(size) / np.prod(shape)))


def test_reading_counts_do_not_build_and_held_arrays_are_handed_out_again():
    mesh = lw.structured_grid((6, 4, 2))
    gc.collect()
    assert mesh.__dict__.get("_cells_ref") is None or mesh.__dict__["_cells_ref"]() is None
    assert (mesh.n_cells, mesh.n_nodes, mesh.dim) == (48, 105, 3)
    assert mesh.__dict__.get("_cells_ref") is None or mesh.__dict__["_cells_ref"]() is None
    cells = mesh.cells
    assert mesh.cells is cells                       # held: the same array, not a second one
    with pytest.raises(ValueError):
        cells[0, 0] = 3                              # read-only: a change cannot be lost
    with pytest.raises(ValueError):
        mesh.points[0, 0] = 1.0
    del cells
    gc.collect()
    assert mesh.__dict__["_cells_ref"]() is None     # nothing keeps it once the reader drops it


def test_pickle_copy_and_assignment_keep_the_mesh_whole():
    mesh = lw.structured_grid((3, 2, 2), size=(1.5, 1.0, 1.0))
    held = mesh.cells                                # a live weak reference must not break pickling
    for other in (pickle.loads(pickle.dumps(mesh)), copy.deepcopy(mesh), copy.copy(mesh)):
        np.testing.assert_array_equal(other.cells, held)
        np.testing.assert_array_equal(other.points, mesh.points)
        assert other.face_sets.keys() == mesh.face_sets.keys()
    moved = lw.structured_grid((3, 2, 2))
    moved.points = moved.points + 1.0                # assigning stores it, and the cells with it
    assert moved.stores_grid_arrays
    assert moved.points.flags.writeable and moved.cells.flags.writeable
    np.testing.assert_array_equal(moved.cells, held)
    assert moved.points.min() == 1.0
    renumbered = lw.structured_grid((3, 2, 2))
    renumbered.cells = renumbered.cells[::-1].copy()
    np.testing.assert_array_equal(renumbered.points, lw.structured_grid((3, 2, 2)).points)
    assert renumbered.cells[0].tolist() == held[-1].tolist()


def test_drop_grid_arrays_refuses_a_mesh_that_is_not_its_grid():
    grid = lw.structured_grid((3, 2))
    explicit = Mesh(np.array(grid.points), np.array(grid.cells), "quad", grid=(3, 2),
                    grid_spacing=(1.0, 1.0), grid_origin=(0.0, 0.0))
    axes = [np.arange(4.0), np.arange(3.0)]
    swapped = np.array(grid.cells)
    swapped[[0, 1]] = swapped[[1, 0]]
    renumbered = Mesh(np.array(grid.points), swapped, "quad", grid=(3, 2))
    with pytest.raises(MeshError, match="not the grid"):
        renumbered.drop_grid_arrays(axes)
    assert renumbered.stores_grid_arrays
    with pytest.raises(MeshError, match="one axis of n \\+ 1"):
        explicit.drop_grid_arrays(axes[:1])
    explicit.drop_grid_arrays(axes)
    assert not explicit.stores_grid_arrays


def test_model_fingerprint_is_the_stored_meshs():
    grid = lw.structured_grid((4, 2, 2))
    explicit = Mesh(np.array(grid.points), np.array(grid.cells), "hexahedron", grid=(4, 2, 2),
                    grid_spacing=(1.0, 1.0, 1.0), grid_origin=(0.0, 0.0, 0.0))
    explicit.add_face_set("xmin", lambda p: p[:, 0] == 0.0)
    explicit.add_face_set("xmax", lambda p: p[:, 0] == 4.0)
    make = lambda mesh: lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},  # noqa: E731
                                 loads={"pull": [lw.PointLoad("xmax", (1.0, 0.0, 0.0))]})
    assert make(grid).fingerprint() == make(explicit).fingerprint()


def test_a_grid_design_loop_holds_neither_array():
    """The multigrid, filter and responses work on the grid's shape: after iterations no one
    keeps the mesh's points or cells (each would be 25 / 64 B per hex at 128x64x64)."""
    model = lw.Model(lw.structured_grid((16, 8, 8), size=(2.0, 1.0, 1.0)), lw.Material(E=1.0, nu=0.3),
                     supports={"xmin": "xyz"}, loads={"tip": [lw.PointLoad("xmax", (0.0, 0.0, -1.0))]})
    result = lw.minimize_compliance(model, volume_fraction=0.3, max_iterations=3, solver="multigrid", filter_radius=0.2,
                                    verbose=False)
    assert result.history[-1]["objective"] > 0
    gc.collect()
    mesh = model.mesh
    assert not mesh.stores_grid_arrays
    for name in ("points", "cells"):
        held = mesh.__dict__.get(f"_{name}_ref")
        assert held is None or held() is None, f"something keeps the grid's {name}"


@pytest.mark.parametrize("shape", [(7, 5), (6, 4, 3)])
def test_grid_cell_nodes_of_chosen_cells_are_those_rows(shape):
    from lightweight.mesh.mesh import grid_cell_nodes
    full = grid_cell_nodes(shape)
    chosen = np.array([0, 3, len(full) // 2, len(full) - 1])
    np.testing.assert_array_equal(grid_cell_nodes(shape, chosen), full[chosen])
    mesh = lw.structured_grid(shape)
    faces = mesh.boundary_faces()                    # from the surface cells' rows alone
    explicit = Mesh(np.array(mesh.points), np.array(mesh.cells), mesh.cell_type)
    assert {tuple(sorted(f)) for f in faces.tolist()} == {tuple(sorted(f)) for f in explicit.boundary_faces().tolist()}
