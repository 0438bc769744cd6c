"""The level field of the export (lightweight/export.py): which one ``"auto"`` picks, the
volume-preserving threshold of the solid cells, and the closure that makes their boundary a
manifold where cells touch along an edge (3D) or at a corner (2D)."""

import numpy as np
import pytest

import lightweight as lw

pytest.importorskip("pyvista")
from lightweight import export  # noqa: E402


def fields(mesh, density):
    return export.ResultFields(mesh, {"density": np.asarray(density, dtype=float)}, {}, [], thickness=1.0)


def test_cubes_touching_along_an_edge_get_one_cell_that_joins_them():
    mesh = lw.structured_grid((2, 2, 1), size=(2.0, 2.0, 1.0))
    c = mesh.cell_centers()
    diagonal = (c[:, 0] < 1.0) == (c[:, 1] < 1.0)          # cells (0, 0) and (1, 1): one shared edge
    density = np.where(diagonal, 1.0, 0.0)
    density[(c[:, 0] > 1.0) & (c[:, 1] < 1.0)] = 0.3       # the densest void cell is the one added
    closed = export.manifold_closure(mesh, diagonal, density)
    assert closed.sum() == 3 and closed[(c[:, 0] > 1.0) & (c[:, 1] < 1.0)].all()
    assert np.array_equal(export.manifold_closure(mesh, closed, density), closed)     # nothing more


def test_squares_touching_at_a_corner_are_closed_in_2d():
    mesh = lw.structured_grid((2, 2), size=(2.0, 2.0))
    c = mesh.cell_centers()
    diagonal = (c[:, 0] < 1.0) == (c[:, 1] < 1.0)
    closed = export.manifold_closure(mesh, diagonal, diagonal.astype(float))
    assert closed.sum() == 3


def test_volume_preserving_threshold_never_splits_cells_of_equal_density():
    mesh = lw.structured_grid((10, 4, 4), size=(10.0, 4.0, 4.0))
    c = mesh.cell_centers()
    bar = (np.abs(c[:, 1] - 2.0) < 1.0) & (np.abs(c[:, 2] - 2.0) < 1.0)
    density = np.where(bar, 1.0, 1e-3)                     # the void floor adds 0.16 to the target
    levels = export._LevelSet(fields(mesh, density), "solid_cells")
    level = levels.volume_preserving_level(levels.design_volume)
    assert 1e-3 < level < 1.0
    assert levels.region_volume(level) == pytest.approx(40.0)     # the bar, none of the floor


def test_auto_takes_the_solid_cells_of_a_crisp_design_and_the_nodes_of_a_gray_one():
    mesh = lw.structured_grid((20, 10, 10), size=(20.0, 10.0, 10.0))
    r = np.linalg.norm(mesh.cell_centers() - [10.0, 5.0, 5.0], axis=1)
    crisp = np.where(r < 4.0, 1.0, 1e-3)
    gray = np.clip(0.5 - (r - 4.0) / 4.0, 1e-3, 1.0)      # a transition band four cells wide
    assert export.auto_level_field(fields(mesh, crisp)) == "solid_cells"
    assert export.auto_level_field(fields(mesh, gray)) == "nodes"
    out = export.design_surface(fields(mesh, crisp))
    assert out.surface.n_open_edges == 0 and out.surface.is_manifold
    assert out.volume == pytest.approx(out.design_volume, rel=0.03)
