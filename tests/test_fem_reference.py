"""The FE core against CalculiX 2.20 reference results (tests/data/refs, copied from shared/refs/fe).

Meshes and applied nodal forces are read from the shipped .vtu/.inp files; displacements and
compliance must agree to 1e-6 relative (the .dat files print 7 significant digits).
"""

import json

import meshio
import numpy as np
import pytest

import lightweight as lw

HEX_CASES = [("a_cantilever_hex8_20x4x4", "C3D8_equal"),
             ("a_cantilever_hex8_20x4x4", "C3D8_consistent"),
             ("b1_cantilever_hex8_40x8x8", "C3D8_equal"),
             ("b1_cantilever_hex8_40x8x8", "C3D8_consistent")]


@pytest.mark.parametrize("case,run", HEX_CASES)
def test_hex8_cantilever_matches_calculix(data_dir, case, run):
    folder = data_dir / "refs" / case
    ref = json.loads((folder / "results.json").read_text())
    raw = meshio.read(folder / "mesh.vtu")
    mesh = lw.read_mesh(folder / "mesh.vtu")
    assert mesh.cell_type == "hexahedron"
    model = lw.Model(mesh, lw.Material(E=ref["E"], nu=ref["nu"]), supports={"FIXED": "xyz"},
                     loads={run: [lw.NodalForces(raw.point_data[f"F_{run}"])]})
    sol = lw.solve(model, solver="direct")
    u_ref = raw.point_data[f"U_{run}"]
    u = sol.displacement[run]
    assert np.abs(u - u_ref).max() <= 1e-6 * np.abs(u_ref).max()
    expected = ref["runs"][run]["compliance"]
    assert sol.compliance[run] == pytest.approx(expected, rel=1e-6)
    assert sol.max_displacement[run] == pytest.approx(ref["runs"][run]["max_abs_u"], rel=1e-6)
    # reactions balance the applied load to round-off
    total = raw.point_data[f"F_{run}"].sum(axis=0)
    np.testing.assert_allclose(sol.reactions[run]["FIXED"], -total, rtol=0, atol=1e-9 * np.abs(total).max())


def test_hex8_cantilever_from_abaqus_deck_and_traction(data_dir):
    """Same case read from the .inp deck; the consistent run rebuilt from a uniform traction."""
    folder = data_dir / "refs" / "a_cantilever_hex8_20x4x4"
    ref = json.loads((folder / "results.json").read_text())
    mesh = lw.read_mesh(folder / "C3D8_equal.inp")
    assert mesh.node_sets["FIXED"].size == 25 and mesh.node_sets["LOAD"].size == 25
    mesh.add_face_set("tip", lambda p: np.isclose(p[:, 0], 100.0))
    model = lw.Model(mesh, lw.Material(E=210000.0, nu=0.3), supports={"FIXED": "xyz"},
                     loads={"equal": lw.PointLoad("LOAD", (0, 0, -1000.0), distribute="total"),
                            "consistent": lw.Traction("tip", (0, 0, -2.5))})
    sol = lw.solve(model)
    assert sol.compliance["equal"] == pytest.approx(ref["runs"]["C3D8_equal"]["compliance"], rel=1e-6)
    assert sol.compliance["consistent"] == pytest.approx(ref["runs"]["C3D8_consistent"]["compliance"], rel=1e-6)
    tip = ref["runs"]["C3D8_consistent"]["named_points"]["tip_center(100,10,10)"]
    node = tip["node"] - 1
    np.testing.assert_allclose(sol.displacement["consistent"][node], tip["u"], atol=1e-6 * 0.12)


def test_hex8_on_structured_grid_equals_reference(data_dir):
    """The grid fast path (one shared element matrix) gives the reference numbers too."""
    ref = json.loads((data_dir / "refs" / "b1_cantilever_hex8_40x8x8" / "results.json").read_text())
    mesh = lw.structured_grid((40, 8, 8), size=(100, 20, 20))
    model = lw.Model(mesh, lw.Material(E=210000.0, nu=0.3), supports={"xmin": "xyz"},
                     loads={"equal": lw.PointLoad("xmax", (0, 0, -1000.0), distribute="total"),
                            "consistent": lw.Traction("xmax", (0, 0, -2.5))})
    assert model.system().shared_element_matrix
    sol = lw.solve(model)
    for run, case in (("C3D8_equal", "equal"), ("C3D8_consistent", "consistent")):
        assert sol.compliance[case] == pytest.approx(ref["runs"][run]["compliance"], rel=1e-6)


def test_mbb_q4_plane_stress_matches_top88_reference(data_dir):
    folder = data_dir / "refs" / "d_mbb_planestress_q4_60x20"
    ref = json.loads((folder / "results.json").read_text())
    raw = meshio.read(folder / "mesh.vtu")
    mesh = lw.read_mesh(folder / "mesh.vtu")
    assert mesh.dim == 2 and mesh.cell_type == "quad"
    model = lw.Model(mesh, lw.Material(E=ref["E_used"], nu=ref["nu"]),
                     supports={"LEFT": "x", "BOTRIGHT": "y"},
                     loads={"mbb": lw.PointLoad("LOAD", (0.0, -1.0))}, plane="stress", thickness=1.0)
    sol = lw.solve(model)
    assert sol.compliance["mbb"] == pytest.approx(1007.0221007, rel=1e-6)
    u_ref = raw.point_data["U_C3D8_layer_Q4equiv"][:, :2]
    assert np.abs(sol.displacement["mbb"] - u_ref).max() <= 1e-6 * np.abs(u_ref).max()
    # top88 dof order file: node n = ix*21 + r (row from top)
    u_top88 = np.loadtxt(folder / "U_top88_order.txt").reshape(-1, 2)
    ix, r = np.meshgrid(np.arange(61), np.arange(21), indexing="ij")
    nodes = [int(np.flatnonzero((mesh.points[:, 0] == x) & (mesh.points[:, 1] == 20 - y))[0])
             for x, y in zip(ix.ravel(), r.ravel())]
    assert np.abs(sol.displacement["mbb"][nodes] - u_top88).max() <= 1e-6 * 1007.022
    assert sol.reactions["mbb"]["BOTRIGHT"][1] == pytest.approx(1.0, rel=1e-9)
    assert abs(sol.reactions["mbb"]["LEFT"][0]) < 1e-9
