"""Pictures: every plot type renders off-screen (2D/3D, Solution/OptimizationResult/file) to a
non-trivial image; convergence plots; snapshot time series and GIFs; pyvista stays optional."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import LightweightError
from lightweight.optimize.result import OptimizationResult

pv = pytest.importorskip("pyvista")
imageio = pytest.importorskip("imageio.v3")
viz = pytest.importorskip("lightweight.viz")

SIZE = (320, 240)


def history(n=12):
    return [dict(iteration=i + 1, objective=50.0 / (i + 1) + 5, constraints=[0.2 / (i + 1) - 0.02],
                 volume_fraction=0.5 - 0.1 / (i + 1), change=0.3 / (i + 1), grayness=0.2, seconds=0.01)
            for i in range(n)]


def cantilever(shape, size):
    mesh = lw.structured_grid(shape, size=size)
    tip = (0, 0, -1) if len(shape) == 3 else (0, -1)
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3, density=1.0), supports={"xmin": "xyz"[:len(shape)]},
                     loads={"tip": [lw.Traction("xmax", tip)], "side": [lw.Traction("xmax", tip[::-1])]})
    c = mesh.cell_centers()
    mid = np.asarray(size, float)[1:] / 2
    # Material near the outer fibres, thinning towards the tip: a smooth, beam-like design.
    dist = np.abs(c[:, -1] - mid[-1]) / mid[-1]
    rho = np.clip(0.25 + 0.8 * dist ** 2 - 0.3 * c[:, 0] / size[0], 1e-3, 1.0)
    return model, rho


def optimization_result(model, rho):
    sol = lw.solve(model, density=rho)
    return OptimizationResult(model=model, density=rho, design_variables=rho, history=history(),
                              problem="min_compliance", converged=True, compliance=dict(sol.compliance),
                              volume_fraction=float(rho.mean()), volume=sol.volume, mass=sol.mass,
                              solution=sol, parameters={"volume_fraction": 0.5}, provenance=sol.provenance)


def save(result, path):
    """result.save(path); while mesh/io.py is a placeholder, the same fields through meshio."""
    try:
        result.save(path)
    except (NotImplementedError, TypeError):
        import meshio
        sol = result.solution if hasattr(result, "design_variables") else result
        cell_data = {k: [v] for k, v in sol.cell_data().items()}
        cell_data["density"] = [np.asarray(result.density)]
        mesh = sol.mesh
        meshio.write(path, meshio.Mesh(mesh.points, [(mesh.cell_type, mesh.cells)],
                                       point_data=sol.point_data(), cell_data=cell_data))
    return path


@pytest.fixture(scope="module")
def results3d():
    model, rho = cantilever((12, 4, 4), (12.0, 4.0, 4.0))
    return optimization_result(model, rho)


@pytest.fixture(scope="module")
def results2d():
    model, rho = cantilever((30, 10), (30.0, 10.0))
    return optimization_result(model, rho)


def check_image(image, path, size=SIZE, min_colours=40):
    assert path.exists()
    assert image.shape == (size[1], size[0], 3)
    read = imageio.imread(path)
    assert read.shape[:2] == (size[1], size[0])
    assert image.std() > 8.0                                   # not a blank picture
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > min_colours, len(colours)


@pytest.mark.parametrize("field", ["density", "von_mises", "displacement"])
@pytest.mark.parametrize("dim", [2, 3])
def test_plot_solution_and_optimization_result(field, dim, results2d, results3d, tmp_path):
    res = results3d if dim == 3 else results2d
    for what, obj in (("opt", res), ("sol", res.solution)):
        path = tmp_path / f"{what}_{field}.png"
        image = lw_plot(obj, field, path)
        check_image(image, path)


def lw_plot(obj, field, path, **kw):
    return viz.plot(obj, field=field, filename=path, window_size=SIZE, **kw)


def test_plot_saved_file_and_case(results3d, tmp_path):
    vtu = save(results3d, tmp_path / "design.vtu")
    fields = viz.load_fields(vtu)
    assert fields.cases[:2] == ["tip", "side"]
    np.testing.assert_allclose(fields.density, results3d.density)
    for field in ("density", "von_mises", "displacement"):
        path = tmp_path / f"file_{field}.png"
        check_image(viz.plot(vtu, field=field, filename=path, window_size=SIZE), path)
    # Another load case gives another picture.
    a = viz.plot(vtu, "displacement", filename=tmp_path / "a.png", window_size=SIZE, case="tip")
    b = viz.plot(vtu, "displacement", filename=tmp_path / "b.png", window_size=SIZE, case="side")
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0
    with pytest.raises(LightweightError, match="'tip', 'side'"):
        viz.plot(vtu, "von_mises", filename=tmp_path / "c.png", case="nope")


def test_2d_density_is_gray_scale_top88_style(results2d, tmp_path):
    image = viz.plot(results2d, "density", filename=tmp_path / "d.png", window_size=SIZE)
    rgb = image.reshape(-1, 3).astype(int)
    # Gray-scale: the colour channels agree (up to the light-gray domain outline).
    assert np.mean(np.ptp(rgb, axis=1) <= 2) > 0.99
    assert rgb.min() < 60 and rgb.max() > 240                  # solid is dark, void is white


def test_unknown_field_lists_available(results3d, tmp_path):
    with pytest.raises(LightweightError, match="density, von_mises, displacement"):
        viz.plot(results3d, "strain", filename=tmp_path / "x.png")
    bare = OptimizationResult(model=results3d.model, density=results3d.density,
                              design_variables=results3d.density)
    with pytest.raises(LightweightError, match="available fields: density$"):
        viz.plot(bare, "von_mises", filename=tmp_path / "x.png")


def test_convergence_plot(results3d, tmp_path):
    path = viz.convergence_plot(results3d, tmp_path / "conv.png")
    image = imageio.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200
    assert image[..., :3].std() > 10
    viz.convergence_plot(history(3), tmp_path / "conv2.png")       # a plain history list
    with pytest.raises(LightweightError, match="no optimization history"):
        viz.convergence_plot([], tmp_path / "x.png")


def test_snapshot_writer_time_series_and_gif(tmp_path):
    import meshio
    mesh = lw.structured_grid((16, 6), size=(16.0, 6.0))
    c = mesh.cell_centers()
    xdmf, gif = tmp_path / "snap.xdmf", tmp_path / "snap.gif"

    class State:
        def __init__(self, iteration, density):
            self.iteration, self.density = iteration, density

    with viz.SnapshotWriter(xdmf, mesh, every=3, gif=gif, window_size=(160, 120)) as writer:
        for it in range(1, 11):
            rho = np.clip(0.5 + 0.5 * np.sin(c[:, 0] / 2 + it / 3), 0.0, 1.0)
            if it % 2:
                writer(State(it, rho))
            else:
                writer(it, rho)
    # Iterations 3, 6, 9 and the last one (10).
    assert writer.iterations == [3, 6, 9, 10]
    assert xdmf.exists() and xdmf.with_suffix(".h5").exists()
    with meshio.xdmf.TimeSeriesReader(xdmf) as reader:
        reader.read_points_cells()
        assert reader.num_steps == 4
        t, _, cell_data = reader.read_data(3)
        assert t == 10.0
        np.testing.assert_allclose(cell_data["density"][0],
                                   np.clip(0.5 + 0.5 * np.sin(c[:, 0] / 2 + 10 / 3), 0.0, 1.0))
    frames = imageio.imread(gif, index=None)
    assert frames.shape[0] == 4 and frames.shape[1:3] == (120, 160)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0


def test_snapshot_writer_rejects_wrong_density(tmp_path):
    mesh = lw.structured_grid((4, 2))
    with viz.SnapshotWriter(tmp_path / "s.xdmf", mesh) as writer:
        with pytest.raises(LightweightError, match="one value per cell"):
            writer(0, np.ones(3))


def test_core_imports_and_hints_without_pyvista():
    code = textwrap.dedent("""
        import sys
        sys.modules["pyvista"] = None          # as if the viz extra were not installed
        import lightweight, lightweight.viz, lightweight.export, lightweight.report
        from lightweight.errors import LightweightError
        mesh = lightweight.structured_grid((4, 2))
        try:
            lightweight.viz.plot(lightweight.viz.ResultFields(mesh, {}, {}, []), filename="x.png")
        except LightweightError as exc:
            assert "pip install lightweight[viz]" in str(exc), exc
            print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
