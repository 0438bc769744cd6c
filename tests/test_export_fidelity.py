"""An exported crisp design is as stiff and rings as high as the design: a cantilever two cells
thick (the thinnest member a projected design keeps), exported as a solid tet part and analysed
on quadratic tets, against Timoshenko beam theory for its square section (the design's own hex8
cells lock in bending, so the beam formula, not the design mesh, is the like-for-like reference).

On the nodal-averaged density every node of such a member lies on its surface with a value of
0.25-0.5, so the iso-surface cuts the member thin (volume 4 % low, compliance 11 % high,
measured); the cell field on the subdivided mesh keeps its section.
"""

import warnings

import numpy as np
import pytest

import lightweight as lw

pytest.importorskip("pyvista")
pytest.importorskip("gmsh")
from lightweight import export  # noqa: E402
from lightweight.verify import quadratic_tets  # noqa: E402

E, NU, RHO, LENGTH, SIDE = 1000.0, 0.3, 1e-6, 24.0, 2.0


@pytest.fixture(scope="module")
def beam():
    """A crisp square bar SIDE x SIDE cells along x in a 24 x 6 x 6 grid, clamped at x = 0,
    1 N down on its end face; the density is 1 in the bar and 1e-3 elsewhere."""
    mesh = lw.structured_grid((24, 6, 6), size=(LENGTH, 6.0, 6.0))
    c = mesh.cell_centers()
    inside = (np.abs(c[:, 1] - 3.0) < SIDE / 2) & (np.abs(c[:, 2] - 3.0) < SIDE / 2)
    density = np.where(inside, 1.0, 1e-3)
    mesh.add_node_set("end", lambda p: np.isclose(p[:, 0], LENGTH) & (np.abs(p[:, 1] - 3.0) <= SIDE / 2 + 1e-9)
                      & (np.abs(p[:, 2] - 3.0) <= SIDE / 2 + 1e-9))
    model = lw.Model(mesh, lw.Material(E=E, nu=NU, density=RHO), supports={"xmin": "xyz"},
                     loads={"tip": [lw.PointLoad("end", (0.0, -1.0, 0.0), distribute="total")]})
    return lw.solve(model, density=density)


def timoshenko_compliance():
    area, inertia = SIDE ** 2, SIDE ** 4 / 12.0
    shear_modulus = E / (2.0 * (1.0 + NU))
    return LENGTH ** 3 / (3.0 * E * inertia) + LENGTH / (5.0 / 6.0 * shear_modulus * area)


def first_bending_frequency():
    area, inertia = SIDE ** 2, SIDE ** 4 / 12.0
    return 1.87510407 ** 2 / (2.0 * np.pi) * np.sqrt(E * inertia / (RHO * area * LENGTH ** 4))


def exported_figures(solution, tmp_path, level_field):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # Gmsh's fallbacks warn; the figures are what counts
        part = export.export_solid(solution, tmp_path / f"beam_{level_field}.msh", level_field=level_field)
    fine = quadratic_tets(part)
    evaluated = export.evaluate_exported(solution, fine)
    clamped = lw.Model(fine, solution.model.material, supports={"xmin": "xyz"}, loads={})
    return {"volume": evaluated["exported"]["volume"], "compliance": evaluated["exported"]["compliance"]["tip"],
            "frequency": lw.modes(clamped, n=1).frequencies[0]}


@pytest.fixture(scope="module")
def figures(beam, tmp_path_factory):
    """exported_figures of the beam by level field, each computed once for the module (the
    export, the tet10 analysis and the modes take seconds; both tests below use "cells")."""
    tmp, done = tmp_path_factory.mktemp("fidelity"), {}

    def get(level_field):
        if level_field not in done:
            done[level_field] = exported_figures(beam, tmp, level_field)
        return done[level_field]
    return get


def test_a_two_cell_member_keeps_its_volume_stiffness_and_frequency(figures):
    part = figures("cells")
    assert part["volume"] == pytest.approx(SIDE ** 2 * LENGTH, rel=0.02)
    # measured: +2.6 % compliance (rounded section edges, the load spread over the end face)
    assert part["compliance"] == pytest.approx(timoshenko_compliance(), rel=0.04)
    assert part["frequency"] == pytest.approx(first_bending_frequency(), rel=0.03)


def test_the_nodal_average_thins_the_member(figures):
    """The cause the cell field removes (keeps the measured difference honest)."""
    nodes = figures("nodes")
    cells = figures("cells")
    assert nodes["compliance"] > 1.06 * timoshenko_compliance()
    assert cells["compliance"] < nodes["compliance"] / 1.05


def test_subdivided_grid_reproduces_the_cell_threshold_and_conforms():
    """Level 0.5 of the subdivided field on a crisp field cuts between solid and void cell centres:
    a single solid cell (face neighbours void) keeps about the volume of the octahedron-like
    region around its centre, and the subdivided cells tile each cell exactly."""
    mesh = lw.structured_grid((3, 3, 3), size=(3.0, 3.0, 3.0))
    density = np.zeros(mesh.n_cells)
    density[13] = 1.0                                        # the centre cell
    grid, values = export.subdivided_density_grid(mesh, density)
    assert grid.n_cells == 24 * mesh.n_cells
    sizes = grid.compute_cell_sizes(length=False, area=False, volume=True).cell_data["Volume"]
    assert np.abs(sizes).sum() == pytest.approx(27.0)
    assert values.max() == 1.0 and values[-mesh.n_cells:][13] == 1.0
    region = grid.clip_scalar(scalars="density", value=0.49, invert=False)
    lo, hi = np.asarray(region.bounds).reshape(3, 2).T
    assert np.all(lo > 0.9) and np.all(hi < 2.1)             # around the centre cell only
    with pytest.raises(lw.LightweightError, match="level_field"):
        export.design_surface(export.load_fields(lw.solve(lw.Model(
            lw.structured_grid((4, 4), size=(4.0, 4.0)), lw.Material(E=1.0, nu=0.3), supports={"xmin": "xy"},
            loads={"c": [lw.PointLoad("xmax", (0.0, -1.0))]}))), level_field="corners")


def test_cell_field_on_a_2d_design_is_extruded_at_the_design_volume(tmp_path):
    mesh = lw.structured_grid((60, 20), size=(60.0, 20.0))
    c = mesh.cell_centers()
    density = np.where(np.hypot(c[:, 0] - 30.0, c[:, 1] - 10.0) > 6.0, 1.0, 1e-3)   # plate with a hole
    fields = export.ResultFields(mesh, {"density": density}, {}, [], thickness=4.0)
    out = export.export_surface(fields, tmp_path / "plate.stl", level_field="cells")
    assert out.surface.n_open_edges == 0
    assert out.volume == pytest.approx(out.design_volume, rel=0.01)
    assert 0.45 < out.threshold < 0.55               # a crisp field: the level sits near 0.5
