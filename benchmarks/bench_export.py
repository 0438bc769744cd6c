"""The exported part's file and boundary: same-run ratios on the 42k-tet bracket (issue 14, item 4).

At 500k tets the exported part's .msh dominated export and re-evaluation: meshio wrote ASCII
MSH 2.2 in 50 s and read it back in 44 s (binary: 0.3 s and 2.8 s), and the part's boundary
(a row-wise ``np.unique`` over every face of every tet) took 20 s in ``carry_sets``. Both are
checked here on the bracket of ``tet_parts.py`` at 4 mm (42k tets), each old way against the
new one in the same run (best of 3, alternated; 2 for the files), with the same result:

- write + read of the part as binary MSH 2.2 (what ``export_solid`` writes) / as ASCII
  (what it wrote before), key ``export_part_file_binary_vs_ascii:bracket_42k``;
- ``Mesh.boundary_faces`` (faces keyed by one int64) / the row-wise unique it replaced, key
  ``boundary_faces_int_key_vs_rows:bracket_42k``.

The big case (422k-tet design exported, 550k-tet part re-evaluated): benchmarks/export_scaling.py.

    python -m pytest benchmarks/bench_export.py -s
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from export_scaling import part_file_io

THRESHOLDS = json.loads((Path(__file__).parent / "thresholds.json").read_text())


def _bracket():
    from tet_parts import part_mesh
    return part_mesh(4.0)


def _rowwise_boundary_faces(mesh) -> np.ndarray:
    """The boundary faces as Mesh.boundary_faces found them before (row-wise unique)."""
    faces, _ = mesh._all_faces()
    key = np.sort(faces[:, :3], axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inverse.ravel()] == 1]


def _same_sets(a, b) -> bool:
    def canon(faces):
        return np.sort(np.sort(faces, axis=1), axis=0)
    return (sorted(a.face_sets) == sorted(b.face_sets)
            and all(np.array_equal(canon(a.face_sets[k]), canon(b.face_sets[k])) for k in a.face_sets))


def test_part_file_binary_vs_ascii():
    mesh = _bracket()
    best = {True: np.inf, False: np.inf}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(2):
            for binary in ((True, False) if r % 2 == 0 else (False, True)):
                seconds, again = part_file_io(mesh, Path(tmp) / f"part_{binary}.msh", binary)
                best[binary] = min(best[binary], seconds)
                assert np.array_equal(again.cells, mesh.cells) and np.allclose(again.points, mesh.points)
                assert _same_sets(again, mesh)
    ratio = best[False] / best[True]
    print(f"part file write+read, {mesh.n_cells} tets: ASCII {best[False]:.3f} s, binary {best[True]:.3f} s, "
          f"ratio {ratio:.1f}")
    assert ratio >= THRESHOLDS["export_part_file_binary_vs_ascii:bracket_42k"]["min_ratio"]


def test_boundary_faces_int_key_vs_rows():
    mesh = _bracket()
    best = {"rows": np.inf, "int": np.inf}
    found = {}
    for r in range(3):
        for way in (("rows", "int") if r % 2 == 0 else ("int", "rows")):
            t0 = time.perf_counter()
            found[way] = _rowwise_boundary_faces(mesh) if way == "rows" else mesh.boundary_faces()
            best[way] = min(best[way], time.perf_counter() - t0)
    assert np.array_equal(found["int"], found["rows"])
    ratio = best["rows"] / best["int"]
    print(f"boundary faces, {mesh.n_cells} tets: row-wise {best['rows']:.3f} s, int64 key {best['int']:.3f} s, "
          f"ratio {ratio:.1f}")
    assert ratio >= THRESHOLDS["boundary_faces_int_key_vs_rows:bracket_42k"]["min_ratio"]
