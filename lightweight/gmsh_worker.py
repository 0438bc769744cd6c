"""The Gmsh child process of :func:`lightweight.export.export_solid`: a closed surface to tets.

Run as a file, not as a package module (``runpy.run_path``), so the child imports only NumPy
and Gmsh: importing ``lightweight`` (Numba, SciPy, the FE layers) took 1.1 s of the child's
start against 0.25 s, and export_solid starts up to three children at once on big parts.
This module therefore imports nothing from the package.

argv: surface STL, mesh size, .msh path or "" (not written), output .npz, remesh "1"/"0".
The .npz holds ``points`` (n, 3), ``tets`` (m, 4) (0-based) and ``notes`` (our own warnings,
repeated by the parent).
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np


def _gmsh_child(stl: str, mesh_size: float, path_msh: str, out_npz: str, remesh: bool = True) -> None:
    """Mesh the STL and save the tets to ``out_npz`` (the child's whole work)."""
    import gmsh
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        points, tets = _gmsh_tetrahedralize(gmsh, Path(stl), mesh_size, Path(path_msh) if path_msh else None,
                                            remesh)
    # the parent repeats our own notes (a remesh that fell back to the triangles as they are)
    notes = [str(w.message) for w in caught if "Gmsh could not remesh" in str(w.message)]
    np.savez(out_npz, points=points, tets=tets, notes=np.array(notes, dtype=str))


def _gmsh_tetrahedralize(gmsh, stl: Path, mesh_size: float, path_msh: Path | None, remesh: bool = True):
    """(points (n, 3), tets (m, 4)) from Gmsh; writes ``path_msh`` unless it is None.

    remesh: re-parametrize and remesh the surface at ``mesh_size`` first (else the STL
    triangles are the boundary mesh as they are)."""
    initialized_here = not gmsh.isInitialized()
    if initialized_here:
        gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("lightweight_export")
        try:
            gmsh.merge(str(stl))
            try:
                if not remesh:
                    raise RuntimeError("remeshing not asked for")
                # Patches of the STL become re-parametrized surfaces Gmsh can remesh at mesh_size.
                gmsh.model.mesh.classifySurfaces(40 * math.pi / 180, True, True, math.pi)
                gmsh.model.mesh.createGeometry()
                _fill_volume(gmsh, mesh_size)
                gmsh.model.mesh.generate(3)
            except Exception as exc:
                # Re-parametrization fails on some high-genus patches; the STL triangles are a
                # valid boundary mesh already, so fill them as they are.
                warnings.warn(f"Gmsh could not remesh the surface ({exc}); meshing the volume "
                              f"inside the exported triangles instead", stacklevel=3)
                gmsh.model.remove()
                gmsh.model.add("lightweight_export_discrete")
                gmsh.merge(str(stl))
                _fill_volume(gmsh, mesh_size)
                gmsh.model.mesh.generate(3)
            tags, coords, _ = gmsh.model.mesh.getNodes()
            etypes, _, enodes = gmsh.model.mesh.getElements(3)
            tets = np.zeros((0, 4), dtype=np.int64)
            for et, nodes in zip(etypes, enodes):
                if et == 4:                      # 4-node tetrahedron
                    tets = np.asarray(nodes, dtype=np.int64).reshape(-1, 4)
            index = np.full(int(tags.max()) + 1, -1, dtype=np.int64)
            index[np.asarray(tags, dtype=np.int64)] = np.arange(len(tags))
            points = np.asarray(coords, dtype=float).reshape(-1, 3)
            if path_msh is not None:
                gmsh.write(str(path_msh))
            return points, index[tets]
        finally:
            gmsh.model.remove()
    finally:
        if initialized_here:
            gmsh.finalize()


# Above this many boundary triangles Gmsh's own tet optimizer runs without Netgen's. Measured on
# the synthetic bracket design (benchmarks/export_scaling.py), discrete fill of the unsmoothed
# surface: 13.8k triangles, 26.7k tets: 7.7 s CPU with Netgen (1 463 tets below quality 0.05),
# 1.5 s without (2 153); 64.7k triangles (422k-tet design), 188k tets: 181 s with Netgen, past
# the time limit, so the part fell back to the clipped volume; 51 s without (wall, busy machine).
NETGEN_OPTIMIZE_MAX_TRIANGLES = 20_000


def _fill_volume(gmsh, mesh_size: float) -> None:
    n_triangles = len(gmsh.model.mesh.getElementsByType(2)[0])     # the STL's (kept by createGeometry)
    surfaces = [tag for _, tag in gmsh.model.getEntities(2)]
    loop = gmsh.model.geo.addSurfaceLoop(surfaces)
    gmsh.model.geo.addVolume([loop])
    gmsh.model.geo.synchronize()
    gmsh.option.setNumber("Mesh.MeshSizeMax", mesh_size)
    gmsh.option.setNumber("Mesh.MeshSizeMin", 0.2 * mesh_size)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
    gmsh.option.setNumber("Mesh.Algorithm3D", 1)       # Delaunay: robust on re-parametrized patches
    gmsh.option.setNumber("Mesh.OptimizeNetgen", int(n_triangles <= NETGEN_OPTIMIZE_MAX_TRIANGLES))


if __name__ == "__main__":
    _stl, _size, _msh, _out, _remesh = sys.argv[1:6]
    _gmsh_child(_stl, float(_size), _msh, _out, _remesh == "1")
