"""Mesh file I/O: sample meshes, Gmsh/Abaqus/VTK sets, round trips, metadata and errors."""

import json
import warnings
from pathlib import Path

import meshio
import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import LightweightError, MeshError, MeshFileError
from lightweight.mesh.io import read_mesh_fields, read_metadata

MESHES = Path(__file__).parent.parent / "meshes"


def face_keys(faces):
    return {tuple(sorted(f)) for f in np.asarray(faces).tolist()}


def assert_same_mesh(a, b):
    """Points, cells and every named set equal (face sets as sets of node sets)."""
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.cells, b.cells)
    assert a.cell_type == b.cell_type
    assert sorted(a.node_sets) == sorted(b.node_sets)
    assert sorted(a.cell_sets) == sorted(b.cell_sets)
    assert sorted(a.face_sets) == sorted(b.face_sets)
    for k in a.node_sets:
        np.testing.assert_array_equal(a.node_sets[k], b.node_sets[k])
    for k in a.cell_sets:
        np.testing.assert_array_equal(a.cell_sets[k], b.cell_sets[k])
    for k in a.face_sets:
        assert face_keys(a.face_sets[k]) == face_keys(b.face_sets[k])


# ----------------------------------------------------------------------------- sample meshes
def test_bracket_sample_mesh():
    mesh = lw.read_mesh(MESHES / "bracket.msh")
    assert mesh.cell_type == "tetra" and mesh.dim == 3
    assert 5000 <= mesh.n_cells <= 15000
    assert (mesh.n_cells, mesh.n_nodes) == (12254, 3168)       # the committed file
    assert sorted(mesh.face_sets) == ["bolt_holes", "load_face"]
    assert list(mesh.cell_sets) == ["solid"] and mesh.cell_sets["solid"].size == mesh.n_cells
    for name, faces in mesh.face_sets.items():
        assert faces.shape[1] == 3                              # triangle faces of tetra cells
        np.testing.assert_array_equal(mesh.node_sets[name], np.unique(faces))
        mesh.face_owners(faces)                                 # every face belongs to a cell
    p = mesh.points
    assert np.allclose(p[mesh.node_sets["load_face"], 0], 120.0)
    hole = p[mesh.node_sets["bolt_holes"]]
    r = np.minimum(np.hypot(hole[:, 0] - 15, hole[:, 1] - 10), np.hypot(hole[:, 0] - 15, hole[:, 1] - 30))
    np.testing.assert_allclose(r, 4.5, atol=1e-6)
    exact = 120 * 40 * 10 - 2 * np.pi * 4.5**2 * 10
    assert mesh.cell_volumes().sum() == pytest.approx(exact, rel=2e-3)   # faceted holes
    assert mesh.source == str(MESHES / "bracket.msh")


def test_bracket_tet10_sample_mesh():
    mesh = lw.read_mesh(MESHES / "bracket_tet10.msh")
    assert mesh.cell_type == "tetra10"
    assert sorted(mesh.face_sets) == ["bolt_holes", "load_face"]
    exact = 120 * 40 * 10 - 2 * np.pi * 4.5**2 * 10
    assert mesh.cell_volumes().sum() == pytest.approx(exact, rel=1e-4)   # curved quadratic faces
    for name, faces in mesh.face_sets.items():
        assert faces.shape[1] == 6                              # triangle6
        np.testing.assert_array_equal(mesh.node_sets[name], np.unique(faces))
        # meshio/VTK triangle6 order: corners, then mid-edge nodes of 01, 12, 20
        p = mesh.points
        for k, (a, b) in enumerate(((0, 1), (1, 2), (2, 0))):
            mid = 0.5 * (p[faces[:, a]] + p[faces[:, b]])
            edge = np.linalg.norm(p[faces[:, a]] - p[faces[:, b]], axis=1)
            assert (np.linalg.norm(p[faces[:, 3 + k]] - mid, axis=1) < 0.1 * edge).all()
        mesh.face_owners(faces)
    load = mesh.points[mesh.node_sets["load_face"]]
    assert np.allclose(load[:, 0], 120.0)


def test_plate_with_hole_sample_mesh():
    mesh = lw.read_mesh(MESHES / "plate_with_hole.msh")
    assert mesh.cell_type == "triangle" and mesh.dim == 2        # z dropped
    assert sorted(mesh.face_sets) == ["hole", "left", "right"]
    assert list(mesh.cell_sets) == ["solid"]
    for faces in mesh.face_sets.values():
        assert faces.shape[1] == 2                              # line faces
    p = mesh.points
    assert np.allclose(p[mesh.node_sets["left"], 0], 0.0)
    assert np.allclose(p[mesh.node_sets["right"], 0], 100.0)
    np.testing.assert_allclose(np.hypot(*(p[mesh.node_sets["hole"]] - (50, 25)).T), 10.0, atol=1e-9)
    assert mesh.node_sets["left"].size == 21
    assert mesh.cell_volumes().sum() == pytest.approx(5000 - 100 * np.pi, rel=1e-3)


# -------------------------------------------------------------------------- gmsh 2.2 and 4.1
def _gmsh_box(path: Path, version: float) -> None:
    """A 2 x 1 x 1 box: volume in two physical groups, face groups, one physical point."""
    gmsh = pytest.importorskip("gmsh")
    gmsh.initialize(["-noenv"], readConfigFiles=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)
        gmsh.model.add("box")
        gmsh.model.occ.addBox(0, 0, 0, 2, 1, 1)
        gmsh.model.occ.synchronize()
        eps = 1e-6
        xmin = [t for _, t in gmsh.model.getEntitiesInBoundingBox(-eps, -eps, -eps, eps, 1 + eps, 1 + eps, 2)]
        xmax = [t for _, t in gmsh.model.getEntitiesInBoundingBox(2 - eps, -eps, -eps, 2 + eps, 1 + eps, 1 + eps, 2)]
        corner = [t for _, t in gmsh.model.getEntitiesInBoundingBox(2 - eps, 1 - eps, 1 - eps, 2 + eps, 1 + eps, 1 + eps, 0)]
        gmsh.model.addPhysicalGroup(3, [1], name="solid")
        gmsh.model.addPhysicalGroup(3, [1], name="design")     # same cells, second group
        gmsh.model.addPhysicalGroup(2, xmin, name="fixed")
        gmsh.model.addPhysicalGroup(2, xmax, name="load")
        gmsh.model.addPhysicalGroup(0, corner, name="tip")
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.5)
        gmsh.model.mesh.generate(3)
        gmsh.option.setNumber("Mesh.MshFileVersion", version)
        gmsh.option.setNumber("Mesh.Binary", 0)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()


def test_gmsh_22_and_41_give_the_same_sets(tmp_path):
    meshes = []
    for version, name in ((2.2, "box22.msh"), (4.1, "box41.msh")):
        _gmsh_box(tmp_path / name, version)
        meshes.append(lw.read_mesh(tmp_path / name))
    m22, m41 = meshes
    assert_same_mesh(m22, m41)     # 2.2 repeats every tet for the second group: merged again
    assert sorted(m41.cell_sets) == ["design", "solid"]
    assert m41.cell_sets["design"].size == m41.n_cells
    assert sorted(m41.face_sets) == ["fixed", "load"]
    assert m41.face_sets["fixed"].shape[1] == 3 and m41.node_sets["fixed"].size > 0
    assert np.allclose(m41.points[m41.node_sets["fixed"], 0], 0.0)
    tip = m41.node_sets["tip"]
    assert tip.size == 1 and np.allclose(m41.points[tip[0]], (2, 1, 1))
    assert m41.cell_volumes().sum() == pytest.approx(2.0)


def test_mixed_solid_types_are_refused_unless_one_is_chosen(tmp_path):
    tet = np.array([[0, 1, 2, 3]])
    cube = lw.structured_grid((1, 1, 1))
    hexa = cube.cells + 4
    pts = np.vstack([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], cube.points + 5.0])
    path = tmp_path / "mixed.vtu"
    meshio.write(path, meshio.Mesh(pts, [("tetra", tet), ("hexahedron", hexa)]))
    with pytest.raises(MeshFileError, match="mixed") as err:
        lw.read_mesh(path)
    assert "tetra" in str(err.value) and "hexahedron" in str(err.value) and str(path) in str(err.value)
    mesh = lw.read_mesh(path, cell_type="hexahedron")
    assert mesh.n_cells == 1 and mesh.n_nodes == 12              # orphan tet nodes stay
    assert mesh.cell_volumes().sum() == pytest.approx(1.0)


# ------------------------------------------------------------------------------ round trips
def _bracket_with_more_sets():
    mesh = lw.read_mesh(MESHES / "bracket.msh")
    mesh.add_cell_set("left_half", lambda c: c[:, 0] < 60)       # overlaps "solid"
    mesh.add_node_set("corner", lambda p: (p[:, 0] == 0) & (p[:, 1] == 0))
    mesh.add_face_set("top", lambda p: p[:, 2] == 10.0)
    return mesh


def _plate():
    mesh = lw.read_mesh(MESHES / "plate_with_hole.msh")
    mesh.add_cell_set("right_half", lambda c: c[:, 0] > 50)
    return mesh


def _grid():
    mesh = lw.structured_grid((4, 3, 2), size=(4.0, 3.0, 2.0))
    mesh.add_cell_set("first_row", [0, 1, 2, 3])
    mesh.add_node_set("origin", [0])
    return mesh


MESH_FACTORIES = {"bracket_tet4": _bracket_with_more_sets, "plate_tri": _plate, "grid_hex": _grid,
                  "bracket_tet10": lambda: lw.read_mesh(MESHES / "bracket_tet10.msh")}


@pytest.fixture(scope="module")
def sample_meshes():
    return {k: f() for k, f in MESH_FACTORIES.items()}


@pytest.mark.parametrize("ext", ["vtu", "xdmf", "msh", "inp"])
@pytest.mark.parametrize("which", sorted(MESH_FACTORIES))
def test_round_trip_keeps_points_cells_and_sets(tmp_path, sample_meshes, which, ext):
    mesh = sample_meshes[which]
    path = tmp_path / f"{which}.{ext}"
    lw.write_mesh(path, mesh)
    back = lw.read_mesh(path)
    assert_same_mesh(back, mesh)
    assert back.source == str(path)


@pytest.mark.parametrize("ext", ["vtu", "xdmf", "msh", "inp"])
def test_metadata_round_trip(tmp_path, ext):
    mesh = _grid()
    meta = {"provenance": json.dumps({"version": lw.__version__, "hash": "ab" * 32}),
            "note": "unicode µm, quotes \" and newlines\n"}
    path = tmp_path / f"m.{ext}"
    lw.write_mesh(path, mesh, metadata=meta)
    assert read_metadata(path) == meta
    assert_same_mesh(lw.read_mesh(path), mesh)


def test_metadata_absent_and_unsupported(tmp_path):
    mesh = _grid()
    lw.write_mesh(tmp_path / "plain.vtu", mesh)
    assert read_metadata(tmp_path / "plain.vtu") == {}
    with pytest.warns(UserWarning, match="metadata"):
        lw.write_mesh(tmp_path / "m.vtk", mesh, metadata={"a": "b"})
    with pytest.raises(LightweightError, match="'a'"):
        lw.write_mesh(tmp_path / "m.vtu", mesh, metadata={"a": 1.0})


def test_fields_are_written_validated_and_padded(tmp_path):
    mesh = _plate()
    u = np.random.default_rng(0).normal(size=(mesh.n_nodes, 2))
    density = np.linspace(0, 1, mesh.n_cells)
    stress = np.ones((mesh.n_cells, 3))
    path = tmp_path / "fields.vtu"
    lw.write_mesh(path, mesh, point_data={"displacement:case": u},
                  cell_data={"density": density, "stress:case": stress})
    raw = meshio.read(path)
    assert raw.points.shape[1] == 3 and not raw.points[:, 2].any()
    assert raw.point_data["displacement:case"].shape == (mesh.n_nodes, 3)   # ParaView warp
    back, point_data, cell_data = read_mesh_fields(path)
    np.testing.assert_allclose(point_data["displacement:case"], u)          # cut back to 2D
    np.testing.assert_allclose(cell_data["density"], density)
    assert not any(k.startswith(("node_set.", "cell_set.", "face_set.")) for k in cell_data)
    with pytest.raises(LightweightError, match="'density'"):
        lw.write_mesh(path, mesh, cell_data={"density": density[:-1]})
    with pytest.raises(LightweightError, match="'u'"):
        lw.write_mesh(path, mesh, point_data={"u": np.zeros((3, 2))})
    with pytest.raises(MeshFileError, match="does not exist"):
        lw.write_mesh(tmp_path / "no" / "such" / "dir.vtu", mesh)


def test_msh_point_fields_round_trip_and_cell_fields_warn(tmp_path):
    mesh = _grid()
    stress_like = np.arange(mesh.n_nodes * 6, dtype=float).reshape(-1, 6)
    path = tmp_path / "f.msh"
    with pytest.warns(UserWarning, match="cell fields"):
        lw.write_mesh(path, mesh, point_data={"u": mesh.points * 2, "s": stress_like},
                      cell_data={"density": np.ones(mesh.n_cells)})
    _, point_data, _ = read_mesh_fields(path)
    np.testing.assert_allclose(point_data["u"], mesh.points * 2)
    np.testing.assert_allclose(point_data["s[5]"], stress_like[:, 5])


# ------------------------------------------------------------------------- reference files
def test_reference_inp_and_vtu_node_sets(data_dir):
    folder = data_dir / "refs" / "a_cantilever_hex8_20x4x4"
    for name in ("C3D8_equal.inp", "mesh.vtu"):
        mesh = lw.read_mesh(folder / name)
        assert mesh.cell_type == "hexahedron" and (mesh.n_cells, mesh.n_nodes) == (320, 525)
        assert mesh.node_sets["FIXED"].size == 25 and mesh.node_sets["LOAD"].size == 25
        assert np.allclose(mesh.points[mesh.node_sets["FIXED"], 0], 0.0)
        assert np.allclose(mesh.points[mesh.node_sets["LOAD"], 0], 100.0)
    assert lw.read_mesh(folder / "C3D8_equal.inp").cell_sets["EALL"].size == 320
    mbb = lw.read_mesh(data_dir / "refs" / "d_mbb_planestress_q4_60x20" / "mesh.vtu")
    assert mbb.dim == 2 and mbb.node_sets["LEFT"].size == 21


def test_abaqus_surface_by_elset(tmp_path):
    """A hand-written *SURFACE naming an ELSET and an element label."""
    deck = tmp_path / "two.inp"
    deck.write_text("""*NODE
1, 0, 0, 0
2, 1, 0, 0
3, 1, 1, 0
4, 0, 1, 0
5, 0, 0, 1
6, 1, 0, 1
7, 1, 1, 1
8, 0, 1, 1
*ELEMENT, TYPE=C3D4, ELSET=ALL
11, 1, 2, 4, 5
12, 2, 3, 4, 7
*ELSET, ELSET=FIRST
11
*SURFACE, NAME=BOTTOM, TYPE=ELEMENT
FIRST, S1
12, S1
*NSET, NSET=TOPN
5, 6, 7, 8
""")
    mesh = lw.read_mesh(deck)
    assert face_keys(mesh.face_sets["BOTTOM"]) == {(0, 1, 3), (1, 2, 3)}
    assert mesh.node_sets["TOPN"].tolist() == [4, 5, 6, 7]
    assert mesh.cell_sets["FIRST"].tolist() == [0]
    assert mesh.n_nodes == 8                                    # orphan nodes 6 and 8 stay


# ----------------------------------------------------------------------------------- errors
def test_inverted_tet_is_reported_with_its_id(tmp_path):
    mesh = lw.structured_grid((2, 1, 1), cell_type="tetra")
    cells = mesh.cells.copy()
    cells[7] = cells[7][[1, 0, 2, 3]]                           # swap two nodes
    path = tmp_path / "inverted.vtu"
    meshio.write(path, meshio.Mesh(mesh.points, [("tetra", cells)]))
    with pytest.raises(MeshError, match=r"cells \[7\]") as err:
        lw.read_mesh(path)
    assert str(path) in str(err.value)


def test_file_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing.msh"
    with pytest.raises(MeshFileError, match="does not exist") as err:
        lw.read_mesh(missing)
    assert str(missing) in str(err.value)
    garbled = tmp_path / "garbled.msh"
    garbled.write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\n1 2 what\n")
    with pytest.raises(MeshFileError) as err:
        lw.read_mesh(garbled)
    assert str(garbled) in str(err.value)
    garbled_vtu = tmp_path / "garbled.vtu"
    garbled_vtu.write_bytes(b"\x00\x01not xml at all")
    with pytest.raises(MeshFileError) as err:
        lw.read_mesh(garbled_vtu)
    assert str(garbled_vtu) in str(err.value)
    unknown = tmp_path / "part.xyz123"
    unknown.write_text("1 2 3\n")
    with pytest.raises(MeshFileError, match="unknown extension") as err:
        lw.read_mesh(unknown)
    assert str(unknown) in str(err.value)
    with pytest.raises(MeshFileError, match="unknown extension"):
        lw.write_mesh(tmp_path / "out.xyz123", _grid())


def test_files_without_usable_solid_cells(tmp_path):
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 1.0]])
    lines = tmp_path / "lines.vtu"
    meshio.write(lines, meshio.Mesh(pts, [("line", np.array([[0, 1], [1, 2]]))]))
    with pytest.raises(MeshFileError, match="no solid cells") as err:
        lw.read_mesh(lines)
    assert str(lines) in str(err.value)
    shell = tmp_path / "shell.vtu"                              # a triangle off z = 0
    meshio.write(shell, meshio.Mesh(pts, [("triangle", np.array([[0, 1, 2]]))]))
    with pytest.raises(MeshFileError, match="z = 0"):
        lw.read_mesh(shell)
    quadratic = tmp_path / "tri6.vtu"
    p6 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [.5, 0, 0], [.5, .5, 0], [0, .5, 0]])
    meshio.write(quadratic, meshio.Mesh(p6, [("triangle6", np.arange(6)[None])]))
    with pytest.raises(MeshFileError, match="quadratic 2D"):
        lw.read_mesh(quadratic)
    with pytest.raises(MeshFileError, match="no 'tetra' cells"):
        lw.read_mesh(MESHES / "plate_with_hole.msh", cell_type="tetra")


def test_read_and_write_emit_no_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mesh = lw.read_mesh(MESHES / "bracket.msh")
        for ext in ("vtu", "xdmf", "msh", "inp"):
            lw.write_mesh(tmp_path / f"w.{ext}", mesh)
            lw.read_mesh(tmp_path / f"w.{ext}")


@pytest.mark.parametrize("cell_type, dim", [("tetra", 3), ("triangle", 2)])
def test_linear_simplex_jacobians_are_the_quadrature_product_bit_for_bit(cell_type, dim):
    # the edge-vector shortcut must give the numbers of the general shape-function product
    # (export, volumes and every tet4 analysis read them)
    from lightweight.mesh.cell_types import quadrature, shape_functions
    rng = np.random.default_rng(3)
    points = rng.uniform(-40.0, 70.0, (600, dim))
    cells = np.array([rng.choice(600, dim + 1, replace=False) for _ in range(900)])
    edges = points[cells[:, 1:]] - points[cells[:, :1]]
    flipped = np.linalg.det(edges) < 0
    cells[flipped, :2] = cells[flipped, 1::-1]                  # every cell positively oriented
    mesh = lw.Mesh(points, cells, cell_type)
    xi, _ = quadrature(cell_type)
    _, dN = shape_functions(cell_type, xi)
    general = np.linalg.det(np.einsum("ead,qar->eqdr", points[cells], dN))
    assert np.array_equal(mesh.jacobian_determinants(), general)


def test_write_mesh_with_its_arguments_swapped_names_the_order(tmp_path):
    """write_mesh(mesh, path) was a TypeError from pathlib deep inside; now it says what comes first."""
    mesh = lw.structured_grid((2, 2))
    with pytest.raises(lw.LightweightError, match="the file's path comes first"):
        lw.write_mesh(mesh, tmp_path / "swapped.msh")
    assert not (tmp_path / "swapped.msh").exists()
