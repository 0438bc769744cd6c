"""Geometry export: closed, volume-preserving surfaces of known solids, tet re-meshing, 2D
extrusion, and the exported part judged with the design's supports and loads."""

import os
import warnings

import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import LightweightError

pv = pytest.importorskip("pyvista")
pytest.importorskip("gmsh")
from lightweight import export, viz  # noqa: E402

GRID = (30, 20, 20)


def smooth_step(signed_distance, width=2.0):
    """Density 1 inside, 0 outside, linear over ``width`` across the surface (smooth-ish)."""
    return np.clip(0.5 - signed_distance / width, 1e-3, 1.0)


@pytest.fixture(scope="module")
def grid():
    return lw.structured_grid(GRID, size=tuple(float(n) for n in GRID))


def fields_of(mesh, rho, thickness=1.0):
    return viz.ResultFields(mesh, {"density": rho}, {}, [], thickness=thickness)


def box_with_hole(mesh):
    """A slab z < 14 with a cylindrical hole of radius 5 along y: touches 5 domain faces."""
    c = mesh.cell_centers()
    hole = 5.0 - np.hypot(c[:, 0] - 15.0, c[:, 2] - 7.0)        # > 0 inside the hole
    slab = c[:, 2] - 14.0                                         # > 0 above the slab
    return smooth_step(np.maximum(hole, slab))


def assert_closed(surface):
    assert surface.n_cells > 100
    assert surface.n_open_edges == 0
    assert surface.is_manifold


@pytest.mark.parametrize("shape", ["sphere", "box_with_hole"])
def test_volume_preserving_closed_surface(grid, shape, tmp_path):
    c = grid.cell_centers()
    if shape == "sphere":
        rho = smooth_step(np.linalg.norm(c - [15.0, 10.0, 10.0], axis=1) - 7.0)
    else:
        rho = box_with_hole(grid)
    design_volume = float(grid.cell_volumes() @ rho)
    out = export.export_surface(fields_of(grid, rho), tmp_path / "part.stl")
    assert out.design_volume == pytest.approx(design_volume)
    assert_closed(out.surface)
    assert abs(out.volume) == pytest.approx(design_volume, rel=0.03)
    # What is on disk is the same closed surface, with outward normals (positive volume).
    again = pv.read(str(tmp_path / "part.stl")).clean()
    assert_closed(again)
    assert again.volume == pytest.approx(out.volume, rel=1e-3)
    assert 0.0 < out.threshold < 1.0
    if shape == "sphere":
        # Radius check: the sphere's surface points sit at the radius of the design volume.
        radius = (3 * design_volume / (4 * np.pi)) ** (1 / 3)
        r = np.linalg.norm(np.asarray(out.surface.points) - [15.0, 10.0, 10.0], axis=1)
        assert np.abs(r - radius).max() < 0.35
    else:
        # The slab is cut by the design-space faces: capped flat at x = 0 and x = 30.
        lo, hi = np.asarray(out.surface.bounds).reshape(3, 2).T
        np.testing.assert_allclose(lo, [0, 0, 0], atol=0.05)
        np.testing.assert_allclose(hi[:2], [30, 20], atol=0.05)


def test_threshold_moves_the_surface(grid, tmp_path):
    c = grid.cell_centers()
    rho = smooth_step(np.linalg.norm(c - [15.0, 10.0, 10.0], axis=1) - 7.0, width=4.0)
    volumes = [export.export_surface(fields_of(grid, rho), tmp_path / f"s{t}.ply", threshold=t).volume
               for t in (0.3, 0.5, 0.7)]
    assert volumes[0] > volumes[1] > volumes[2]
    # Level 0.5 of a linear ramp is the sphere of radius 7, up to facets, smoothing and the
    # nodal averaging of a convex field, which moves the level inward (measured: -3.3 %).
    assert volumes[1] == pytest.approx(4 / 3 * np.pi * 7.0 ** 3, rel=0.05)


def test_export_solid_volume(grid, tmp_path):
    rho = box_with_hole(grid)
    design_volume = float(grid.cell_volumes() @ rho)
    solid = export.export_solid(fields_of(grid, rho), tmp_path / "part.msh", mesh_size=2.0)
    assert solid.cell_type == "tetra"
    volumes = solid.cell_volumes()
    assert volumes.min() > 0                                     # positively oriented tets
    assert volumes.sum() == pytest.approx(design_volume, rel=0.03)
    assert (tmp_path / "part.msh").exists()
    assert lw.Mesh(solid.points, solid.cells, "tetra").boundary_faces().shape[1] == 3


def test_2d_design_is_extruded_by_thickness(tmp_path):
    mesh = lw.structured_grid((60, 20), size=(60.0, 20.0))
    c = mesh.cell_centers()
    rho = smooth_step(6.0 - np.hypot(c[:, 0] - 30.0, c[:, 1] - 10.0))   # plate with a hole
    thickness = 4.0
    area = float(mesh.cell_volumes() @ rho)
    out = export.export_surface(fields_of(mesh, rho, thickness), tmp_path / "plate.stl")
    assert_closed(out.surface)
    assert out.design_volume == pytest.approx(area * thickness)
    assert out.volume == pytest.approx(area * thickness, rel=0.03)
    zmin, zmax = out.surface.bounds[4:6]
    assert (zmin, zmax) == pytest.approx((0.0, thickness))


def test_bad_inputs(grid, tmp_path):
    rho = np.full(grid.n_cells, 0.7)
    with pytest.raises(LightweightError, match="uniform"):
        export.export_surface(fields_of(grid, rho), tmp_path / "x.stl")
    with pytest.raises(LightweightError, match=r"\.stl"):
        export.export_surface(fields_of(grid, rho), tmp_path / "x.step", threshold=0.5)
    with pytest.raises(LightweightError, match="no material above the threshold"):
        export.export_surface(fields_of(grid, rho), tmp_path / "x.stl", threshold=0.9)


def beam(rho_fn):
    mesh = lw.structured_grid((16, 4, 4), size=(16.0, 4.0, 4.0))
    model = lw.Model(mesh, lw.Material(E=1000.0, nu=0.3, density=2.0), supports={"xmin": "xyz"},
                     loads={"tip": [lw.Traction("xmax", (0.0, 0.0, -1.0))]})
    rho = rho_fn(mesh.cell_centers())
    sol = lw.solve(model, density=rho)
    return sol


def test_evaluate_exported_solid_beam(tmp_path):
    # A solid design: the exported part is the design space itself, so mass, volume and
    # compliance must agree with the hex-mesh analysis up to discretization error.
    sol = beam(lambda c: np.ones(len(c)))
    solid = export.export_solid(sol, tmp_path / "beam.msh", threshold=0.5, mesh_size=1.0)
    report = export.evaluate_exported(sol, solid)
    assert report["exported"]["volume"] == pytest.approx(16 * 4 * 4, rel=0.01)
    assert report["exported"]["mass"] == pytest.approx(2.0 * 16 * 4 * 4, rel=0.01)
    assert report["design"]["compliance"]["tip"] == pytest.approx(sol.compliance["tip"])
    # Same total load on the same cantilever: linear tets are a little stiffer than hexes.
    assert 0.75 < report["ratio"]["compliance"]["tip"] < 1.05


def test_evaluate_exported_names_unmapped_set(tmp_path):
    # Material only near the support: nothing of the part reaches the loaded face xmax.
    sol = beam(lambda c: np.where(c[:, 0] < 8.0, 1.0, 1e-3))
    solid = export.export_solid(sol, tmp_path / "half.msh", threshold=0.5)
    with pytest.raises(LightweightError, match="'xmax'"):
        export.evaluate_exported(sol, solid)


def test_gmsh_out_of_time_falls_back_to_the_clipped_volume(grid, tmp_path):
    """Gmsh runs in a child process with a time limit; past it the part is the clipped volume."""
    rho = box_with_hole(grid)
    design_volume = float(grid.cell_volumes() @ rho)
    with pytest.warns(UserWarning, match="Gmsh did not finish .* within 0.001 s.*clipped at density level"):
        solid = export.export_solid(fields_of(grid, rho), tmp_path / "part.msh", time_limit=0.001)
    volumes = solid.cell_volumes()
    assert volumes.min() > 0                                     # positively oriented tets
    assert volumes.sum() == pytest.approx(design_volume, rel=0.03)
    assert lw.read_mesh(tmp_path / "part.msh").n_cells == solid.n_cells
    # a surface file has no volume to fall back on: a clear error
    surface = export.export_surface(fields_of(grid, rho), tmp_path / "part.stl")
    with pytest.raises(LightweightError, match="Gmsh did not finish"):
        export.export_solid(surface.path, tmp_path / "again.msh", time_limit=0.001)


def test_floating_specks_are_dropped_with_a_warning(grid, tmp_path):
    c = grid.cell_centers()
    speck = np.linalg.norm(c - np.array([25.0, 15.0, 17.0]), axis=1) - 1.6
    rho = np.maximum(box_with_hole(grid), smooth_step(speck))    # the slab and a small ball above it
    with pytest.warns(UserWarning, match=r"dropped 1 floating piece\(s\)"):
        solid = export.export_solid(fields_of(grid, rho), tmp_path / "part.msh", mesh_size=2.0)
    assert solid.points[:, 2].max() < 15.0                       # nothing of the ball is left


def test_failed_remesh_is_retried_on_the_meshfix_repaired_surface(grid, tmp_path, monkeypatch):
    pytest.importorskip("pymeshfix")
    c = grid.cell_centers()
    rho = smooth_step(np.linalg.norm(c - np.array([15.0, 10.0, 10.0]), axis=1) - 7.0)    # a ball
    design_volume = float(grid.cell_volumes() @ rho)
    real = export._gmsh_in_child_process
    calls = []

    def remesh_fails(surface, mesh_size, path, time_limit, remesh=True):
        calls.append(remesh)
        if remesh:
            raise LightweightError("Gmsh could not mesh the exported surface (PLC Error)")
        return real(surface, mesh_size, path, time_limit, remesh)

    monkeypatch.setattr(export, "_gmsh_in_child_process", remesh_fails)
    with pytest.warns(UserWarning, match="PLC Error.*repaired by MeshFix"):
        solid = export.export_solid(fields_of(grid, rho), tmp_path / "part.msh", mesh_size=2.0)
    assert calls == [True, True, True, False]     # smoothed, less smoothed, unsmoothed, then MeshFix
    assert solid.cell_volumes().min() > 0
    assert solid.cell_volumes().sum() == pytest.approx(design_volume, rel=0.03)


def test_big_surfaces_try_every_smoothing_at_once_with_the_same_part(grid, tmp_path, monkeypatch):
    # export_solid meshes big surfaces with all smoothings side by side; the part must be the one
    # the one-after-the-other path gives (the first smoothing meshes here)
    c = grid.cell_centers()
    rho = smooth_step(np.linalg.norm(c - np.array([15.0, 10.0, 10.0]), axis=1) - 7.0)
    one_by_one = export.export_solid(fields_of(grid, rho), tmp_path / "a.msh", mesh_size=2.0)
    monkeypatch.setattr(export, "SIDE_BY_SIDE_MIN_TRIANGLES", 0)
    monkeypatch.setattr(export, "_side_by_side", lambda surface: True)
    started = []
    real_run = export._GmshRun

    class Counted(real_run):
        def __init__(self, *args, **kwargs):
            started.append(args[0].n_cells)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(export, "_GmshRun", Counted)
    at_once = export.export_solid(fields_of(grid, rho), tmp_path / "b.msh", mesh_size=2.0)
    assert len(started) == 3                       # 20, 0 and 5 passes started together
    assert at_once.n_cells == one_by_one.n_cells
    np.testing.assert_allclose(at_once.points, one_by_one.points)


def frame_on_the_bracket():
    """The sample Gmsh tet bracket (bolt holes at x = 15, load face at x = 120) with a gray frame
    design: two bars from the bolt holes to the load face and bosses round the holes."""
    from pathlib import Path
    mesh = lw.read_mesh(Path(__file__).resolve().parents[1] / "meshes" / "bracket.msh")
    centres = mesh.cell_centers()[:, :2]
    distance = np.full(mesh.n_cells, np.inf)
    for start in ((15.0, 10.0), (15.0, 30.0)):
        a, d = np.array(start), np.array([120.0, 20.0]) - np.array(start)
        t = np.clip((centres - a) @ d / (d @ d), 0.0, 1.0)
        distance = np.minimum(distance, np.linalg.norm(centres - (a + t[:, None] * d), axis=1) - 5.0)
        distance = np.minimum(distance, np.linalg.norm(centres - a, axis=1) - 8.0)
    return mesh, smooth_step(distance, width=3.0)


def test_side_by_side_on_an_unstructured_part_gives_the_sequential_part_with_its_sets(tmp_path, monkeypatch,
                                                                                       bracket_model):
    # a real part: Gmsh tets, named sets, two load cases; every smoothing meshed at once must give
    # the part of the one-after-the-other path, with both sets carried and the loads applied
    mesh, rho = frame_on_the_bracket()
    design = fields_of(mesh, rho)
    chosen = {}
    for label, side_by_side in (("one_by_one", False), ("at_once", True)):
        monkeypatch.setattr(export, "_side_by_side", lambda surface, _answer=side_by_side: _answer)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chosen[label] = export.export_solid(design, tmp_path / f"{label}.msh", remesh=False)
        # which smoothing meshed (measured: the 20-pass surface self-intersects, 5 passes mesh)
        chosen[label + "_smoothing"] = [str(w.message).split("; ")[-1] for w in caught
                                        if "instead of 20 passes" in str(w.message)]
    assert chosen["at_once_smoothing"] == chosen["one_by_one_smoothing"]
    one_by_one, at_once = chosen["one_by_one"], chosen["at_once"]
    assert at_once.n_cells == one_by_one.n_cells > 1000
    np.testing.assert_allclose(at_once.points, one_by_one.points)
    assert sorted(at_once.face_sets) == ["bolt_holes", "load_face"]
    again = lw.read_mesh(tmp_path / "at_once.msh")
    solution = lw.solve(bracket_model("pull", "down", mesh=again))
    assert set(solution.compliance) == {"pull", "down"}
    assert all(np.isfinite(c) and c > 0 for c in solution.compliance.values())
    volume = float(mesh.cell_volumes() @ rho)
    assert again.cell_volumes().sum() == pytest.approx(volume, rel=0.05)


@pytest.mark.parametrize("remesh", ["no", 1, "False"])
def test_remesh_must_be_true_false_or_none(grid, tmp_path, remesh):
    with pytest.raises(LightweightError, match=r"remesh must be True, False or None .*got"):
        export.export_solid(fields_of(grid, box_with_hole(grid)), tmp_path / "part.msh", remesh=remesh)


def test_side_by_side_keeps_the_smoothest_surface_that_meshes(grid, tmp_path, monkeypatch):
    # the 20-pass surface fails, the unsmoothed one is done first: the 5-pass one is still the part
    c = grid.cell_centers()
    rho = smooth_step(np.linalg.norm(c - np.array([15.0, 10.0, 10.0]), axis=1) - 7.0)
    monkeypatch.setattr(export, "_side_by_side", lambda surface: True)
    real_run = export._GmshRun
    runs = []

    class Scripted:
        def __init__(self, surface, mesh_size, time_limit, remesh=True):
            self.index, self.stopped = len(runs), False      # 0: 20 passes, 1: none, 2: 5 passes
            self.real = real_run(surface, mesh_size, time_limit, remesh) if self.index else None
            self.returned = None
            runs.append(self)

        def result(self):
            if self.index == 0:
                raise LightweightError("Gmsh could not mesh the exported surface (PLC Error)")
            self.returned = self.real.result()
            return self.returned

        def stop(self):
            self.stopped = True
            if self.real is not None:
                self.real.stop()

    monkeypatch.setattr(export, "_GmshRun", Scripted)
    with pytest.warns(UserWarning, match="PLC Error.*smoothed with 5 instead of 20 passes"):
        solid = export.export_solid(fields_of(grid, rho), tmp_path / "part.msh", mesh_size=2.0)
    assert len(runs) == 3 and runs[1].stopped and runs[1].returned is None   # the unsmoothed run unused
    points, tets = runs[2].returned
    assert solid.n_cells == len(tets)
    part = lw.Mesh(points, export._oriented_tets(points, tets), "tetra")
    assert solid.cell_volumes().sum() == pytest.approx(part.cell_volumes().sum(), rel=1e-12)


def test_a_gmsh_child_that_stops_working_is_stopped_long_before_its_time_limit(grid, monkeypatch):
    # Gmsh's fill can fall asleep for good (seen on a 77k-triangle surface): no CPU time, no exit
    import time
    if export._cpu_seconds(os.getpid()) is None:
        pytest.skip("no /proc: the idle check is off")
    surface = export.design_surface(fields_of(grid, box_with_hole(grid))).surface
    monkeypatch.setattr(export, "GMSH_IDLE_SECONDS", 2.0)
    monkeypatch.setattr(export._GmshRun, "child_code", "import time; time.sleep(600)")
    started = time.monotonic()
    run = export._GmshRun(surface, 2.0, time_limit=300.0)
    with pytest.raises(LightweightError, match="stopped working.*no CPU time for 2 s"):
        run.result()
    assert time.monotonic() - started < 30
    assert run._process.returncode is not None                      # killed, not left behind
    # a child that works (uses CPU) past the idle time is waited for
    monkeypatch.setattr(export._GmshRun, "child_code",
                        "import time\nt = time.process_time()\nwhile time.process_time() - t < 4: pass\n"
                        "raise SystemExit('worked and failed')")
    with pytest.raises(LightweightError, match="worked and failed"):
        export._GmshRun(surface, 2.0, time_limit=300.0).result()
    # a child that keeps working past its time limit is stopped there
    monkeypatch.setattr(export._GmshRun, "child_code", "while True: pass")
    started = time.monotonic()
    busy = export._GmshRun(surface, 2.0, time_limit=3.0)
    with pytest.raises(LightweightError, match="did not finish .* within 3 s"):
        busy.result()
    assert time.monotonic() - started < 20 and busy._process.returncode is not None


def test_a_repair_that_changes_the_part_is_not_used(grid):
    pytest.importorskip("pymeshfix")
    surface = export.design_surface(fields_of(grid, box_with_hole(grid))).surface
    assert export._repaired(surface) is None        # MeshFix adds 14 % of volume to this slab


def test_flat_and_inverted_tets_are_cleaned(tmp_path):
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=float)
    tets = np.array([[0, 1, 2, 3], [0, 2, 1, 3], [0, 1, 4, 2]])     # good, inverted, flat
    cleaned = export._oriented_tets(points, tets)
    assert cleaned.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]


# ------------------------------------------------------------------ named sets on the part
def test_point_triangle_distance_matches_the_three_regions():
    a, b, c = np.array([0.0, 0, 0]), np.array([2.0, 0, 0]), np.array([0.0, 2, 0])
    points = np.array([[0.5, 0.5, 3.0],      # above the inside: the height
                       [3.0, 0.0, 0.0],      # beyond corner b
                       [1.0, -1.0, 1.0],     # beside edge ab
                       [2.0, 2.0, 0.0]])     # beyond the hypotenuse, in the plane
    expected = [3.0, 1.0, np.sqrt(2.0), np.sqrt(2.0)]
    tri = [np.repeat(v[None], len(points), axis=0) for v in (a, b, c)]
    np.testing.assert_allclose(export.point_triangle_distance(points, *tri), expected, rtol=1e-12)


def test_export_solid_carries_the_named_sets_and_reads_them_back(tmp_path):
    sol = beam(lambda c: np.ones(len(c)))
    mesh = sol.model.mesh
    mesh.add_cell_set("root", lambda c: c[:, 0] < 2.0)
    mesh.add_node_set("tip_top", lambda p: (p[:, 0] == 16.0) & (p[:, 2] == 4.0))
    solid = export.export_solid(sol, tmp_path / "beam.msh", threshold=0.5)
    back = lw.read_mesh(tmp_path / "beam.msh")
    for name in ("xmin", "xmax", "zmax"):
        assert export._face_area(back, back.face_set(name)) == pytest.approx(
            export._original_face_area(sol.model, name), rel=1e-6)
    # the tip's top edge: part nodes on that edge (within one design element of its nodes)
    tip_top = back.points[back.node_set("tip_top")]
    assert np.all(tip_top[:, 0] > 15.0 - 1e-9) and np.all(tip_top[:, 2] > 3.0 - 1e-9)
    root = back.cell_centers()[back.cell_set("root")]
    assert root[:, 0].max() < 2.0 + 1.0 and back.cell_volumes()[back.cell_set("root")].sum() == \
        pytest.approx(2.0 * 4 * 4, rel=0.1)
    # tied to the design's element size (1.0): about as many tets as a cube split in six, not
    # the old default's 10x (half the element size)
    assert solid.n_cells < 8 * mesh.n_cells
    assert back.n_cells == solid.n_cells


def test_export_warns_only_about_the_sets_the_model_uses(tmp_path):
    # material near the support only: the loaded face xmax has no counterpart on the part
    sol = beam(lambda c: np.where(c[:, 0] < 8.0, 1.0, 1e-3))
    with pytest.warns(UserWarning, match="face set 'xmax'") as caught:
        export.export_solid(sol, tmp_path / "half.msh", threshold=0.5)
    assert not any("'ymin'" in str(w.message) for w in caught)     # ymin is used by nothing
    back = lw.read_mesh(tmp_path / "half.msh")
    assert "xmin" in back.face_sets and "xmax" not in back.face_sets


def test_a_point_set_stays_one_node_and_a_case_box_falls_back_to_the_carried_set(tmp_path):
    """A per-node point load keeps its total on the part: one design node -> one part node; and
    the case file whose [sets] box finds no node on the part uses the set the part carries."""
    case_path = tmp_path / "beam.toml"
    case_path.write_text(
        '[mesh]\ngrid = [16, 4, 4]\nsize = [16.0, 4.0, 4.0]\n'
        '[sets.tip]\nbox = [[16.0, 1.0, 0.0], [16.0, 1.0, 0.0]]\n'
        '[material]\nE = 1000.0\nnu = 0.3\n[supports]\nxmin = "xyz"\n'
        '[[loads.tip]]\ntype = "point"\nset = "tip"\nvalue = [0.0, 0.0, -1.0]\n')
    case = lw.read_case(case_path)
    sol = lw.solve(case.model)
    # a part whose nodes miss the box's point: tets of size 1.5 do not fall on (16, 1, 0)
    solid = export.export_solid(sol, tmp_path / "part.msh", threshold=0.5, mesh_size=1.5)
    tip = solid.node_set("tip")
    assert tip.size == 1
    assert np.linalg.norm(solid.points[tip[0]] - [16.0, 1.0, 0.0]) <= 1.0
    part = lw.read_mesh(tmp_path / "part.msh")
    model = case.model_for(part)
    np.testing.assert_array_equal(model.mesh.node_set("tip"), tip)
    assert lw.solve(model).compliance["tip"] > 0


def test_a_saved_design_file_carries_its_sets_too(tmp_path):
    sol = beam(lambda c: np.ones(len(c)))
    sol.save(tmp_path / "beam.vtu")                  # the sets travel as masks in the .vtu
    solid = export.export_solid(tmp_path / "beam.vtu", tmp_path / "beam.msh", threshold=0.5)
    assert {"xmin", "xmax"} <= set(solid.face_sets)
    assert export._face_area(solid, solid.face_set("xmax")) == pytest.approx(16.0, rel=1e-6)
