"""Memory available to this process and estimates of the large structures built from a mesh.

Approach. A structure that does not fit is not an exception in Python: the kernel's OOM killer
ends the process with no message (a 400k-tet run with a 12 mm density filter died at 14.8 GB
while building a 5.7e8-nonzero filter matrix). So every large structure is estimated from
numbers known before it is built (cell count, mean cell size, radius, DOFs, nonzeros per row)
and compared with the memory this process may still use; the caller then picks a path that
fits or raises an error naming the size, the estimate, the memory and what to choose instead.

Available memory is the smaller of the system's (psutil's ``available``, else ``MemAvailable``
of /proc/meminfo) and what the cgroup still allows (v2 ``memory.max - memory.current``, v1
``memory.limit_in_bytes - memory.usage_in_bytes``; containers and batch schedulers set these,
and the kernel kills at the cgroup limit however much the host has free).
``LIGHTWEIGHT_MEMORY_LIMIT`` in the environment (bytes, or with a suffix: ``512M``, ``8G``)
replaces that measurement: to plan for a smaller machine, or in tests to fake a tiny budget.

Estimates (constants measured here; numbers in docs/performance.md):

- Convolution filter matrix: each cell has about ``ball(r) / mean cell volume + 1``
  neighbours (a ball of radius r in 3D, a disc in 2D), fewer at the boundary: on Delaunay tets
  of a 2 x 1 x 1 box the true count was 0.83 - 0.91 of this (:func:`filter_matrix_nonzeros`).
  Bytes are the filter's own business: :class:`~lightweight.optimize.filters.MatrixFilter`
  keeps only the strict upper triangle of its weights and builds it block by block, so its
  cost is ~7.5 B per nonzero plus per-cell and per-block terms
  (:func:`~lightweight.optimize.filters.matrix_filter_estimate`, which uses the count here).
  The old flat 70 B per nonzero (KD-tree pair list, COO -> CSR, stored transpose) is gone
  with that layout.
- Sparse Cholesky factors: PARDISO reports its own need after its analysis (iparm 15-17),
  which :class:`~lightweight.fem.solvers.PardisoSolver` uses; before any analysis (and for
  CHOLMOD/SuperLU, which report nothing beforehand) :func:`factor_nonzeros` gives the factor's
  nonzeros from a fit ``c * n^p`` to PARDISO's METIS factors of grids and tet meshes
  (see its docstring), scaled by the nonzeros per row of K.
"""

from __future__ import annotations

import math
import os

__all__ = ["ENV_MEMORY_LIMIT", "available_memory", "memory_source", "parse_bytes", "format_bytes",
           "filter_matrix_nonzeros", "factor_nonzeros", "factor_mflops",
           "factor_bytes", "map_large_allocations"]

ENV_MEMORY_LIMIT = "LIGHTWEIGHT_MEMORY_LIMIT"

_SUFFIXES = {"": 1, "b": 1, "k": 2 ** 10, "kb": 2 ** 10, "kib": 2 ** 10, "m": 2 ** 20,
             "mb": 2 ** 20, "mib": 2 ** 20, "g": 2 ** 30, "gb": 2 ** 30, "gib": 2 ** 30,
             "t": 2 ** 40, "tb": 2 ** 40, "tib": 2 ** 40}
# cgroup v1 reports "no limit" as a huge number (2^63 rounded down to the page size).
_NO_LIMIT = 2 ** 60


def parse_bytes(text) -> int:
    """Bytes from ``1234``, ``512M``, ``1.5G`` (binary units; case-insensitive)."""
    s = str(text).strip().lower().replace(" ", "")
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    suffix = s[len(number):]
    if suffix not in _SUFFIXES or not number:
        raise ValueError(f"cannot read {text!r} as a memory size; write e.g. 800M or 2G")
    value = float(number) * _SUFFIXES[suffix]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"memory size must be a non-negative number of bytes, got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """Human-readable size: 1.5 GiB, 820 MiB, 12 KiB, 900 B."""
    n = float(n)
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_remaining() -> int | None:
    """Bytes the cgroup of this process may still allocate, None without a limit."""
    remaining = []
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_file)
        if limit is None or limit >= _NO_LIMIT:
            continue
        usage = _read_int(usage_file) or 0
        remaining.append(max(0, limit - usage))
    return min(remaining) if remaining else None


def _system_available() -> int | None:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:       # not installed, or an unsupported platform
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_source() -> str:
    """Where :func:`available_memory` takes its number from (for error messages)."""
    if os.environ.get(ENV_MEMORY_LIMIT):
        return f"{ENV_MEMORY_LIMIT}={os.environ[ENV_MEMORY_LIMIT]}"
    return "cgroup limit" if _cgroup_remaining() is not None else "system"


def available_memory() -> int:
    """Bytes this process can still allocate (see the module docstring for the sources).

    ``LIGHTWEIGHT_MEMORY_LIMIT`` overrides the measurement. Unknown (no psutil, no /proc, no
    override): a very large number, so nothing is refused on a guess.
    """
    override = os.environ.get(ENV_MEMORY_LIMIT)
    if override:
        try:
            return parse_bytes(override)
        except ValueError as exc:
            from ..errors import LightweightError
            raise LightweightError(f"environment variable {ENV_MEMORY_LIMIT}: {exc}") from None
    values = [v for v in (_system_available(), _cgroup_remaining()) if v is not None]
    return min(values) if values else _NO_LIMIT


# ------------------------------------------------------------------------------- filters
def filter_matrix_nonzeros(n_cells: int, dim: int, mean_cell_volume: float, radius: float) -> float:
    """Upper estimate of the nonzeros of a convolution filter matrix with radius ``radius``.

    mean_cell_volume: total volume (area in 2D) / n_cells, in the mesh's length units^dim.
    Each row holds the cells whose centres lie within ``radius``: ball (disc) volume over the
    mean cell volume, plus the cell itself, at most ``n_cells``.
    """
    if n_cells <= 0:
        return 0.0
    ball = math.pi * radius ** 2 if dim == 2 else 4.0 / 3.0 * math.pi * radius ** 3
    per_row = ball / mean_cell_volume + 1.0 if mean_cell_volume > 0 else float(n_cells)
    return float(n_cells) * min(float(n_cells), per_row)


# ------------------------------------------------------------------------------ factors
# (a, p, s) of a * n^p * nnz_per_row^s, least squares in logs over PARDISO's own reports
# (METIS ordering, mtype 2) for K of 7k - 116k DOFs (2D quad/triangle) and 6.6k - 59k DOFs
# (3D hex8/tet4/tet10), predicted/reported 0.97 - 1.05 (nonzeros) and 0.92 - 1.08 (MFlop);
# benchmarks/solver_choice.py reproduces them. The exponents are those of nested dissection
# (nonzeros n log n in 2D, n^(4/3) in 3D; flops n^1.5, n^2) over the measured range, slightly
# steeper in 3D than the asymptote, so the estimates err on the large side for big meshes.
FACTOR_NNZ_FIT = {2: (3.80, 1.172, 0.423), 3: (3.435, 1.417, 0.195)}
FACTOR_MFLOP_FIT = {2: (6.86e-6, 1.577, 0.541), 3: (6.54e-6, 2.008, 0.251)}
# PARDISO's memory peak (iparm 15-17) per factor nonzero: 10 - 18 bytes measured (14 B at 1e5).
FACTOR_BYTES_PER_NONZERO = 14.0
# SuperLU stores L and U: their nonzeros were 1.7 - 2.8 x those of PARDISO's L (MMD ordering).
SUPERLU_FILL_RATIO = 3.0
# nonzeros per row of K for bilinear quads / trilinear hexes, when the caller does not know
DEFAULT_NNZ_PER_ROW = {2: 18.0, 3: 81.0}


def _fit(table: dict, n: int, dim: int, nnz_per_row: float | None) -> float:
    if dim not in table:
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    a, p, s = table[dim]
    z = DEFAULT_NNZ_PER_ROW[dim] if nnz_per_row is None else max(float(nnz_per_row), 1.0)
    return a * float(max(n, 1)) ** p * z ** s


def factor_nonzeros(n: int, dim: int, nnz_per_row: float | None = None) -> float:
    """Estimate of the nonzeros of the sparse Cholesky factor L of an (n, n) FE stiffness matrix.

    ``nnz_per_row``: nonzeros per row of K (default :data:`DEFAULT_NNZ_PER_ROW`); more
    neighbours per DOF (tet10 80, tet4 42, triangle 14) give denser separators. Fitted to
    PARDISO with METIS ordering (:data:`FACTOR_NNZ_FIT`).
    """
    return _fit(FACTOR_NNZ_FIT, n, dim, nnz_per_row)


def factor_mflops(n: int, dim: int, nnz_per_row: float | None = None) -> float:
    """Estimate of the MFlop of one sparse Cholesky factorization (PARDISO's own count)."""
    return _fit(FACTOR_MFLOP_FIT, n, dim, nnz_per_row)


def factor_bytes(n: int, dim: int, nnz_per_row: float | None = None, backend: str = "pardiso") -> float:
    """Estimate of a direct factorization's memory peak in bytes.

    backend: "pardiso" or "cholmod" (supernodal Cholesky, :data:`FACTOR_BYTES_PER_NONZERO`
    per nonzero of L), "superlu" (L and U, :data:`SUPERLU_FILL_RATIO` times as many).
    """
    nnz = factor_nonzeros(n, dim, nnz_per_row)
    ratio = SUPERLU_FILL_RATIO if backend == "superlu" else 1.0
    return FACTOR_BYTES_PER_NONZERO * ratio * nnz


# glibc's mallopt parameter number of M_MMAP_THRESHOLD (malloc.h)
_M_MMAP_THRESHOLD = -3
LARGE_ALLOCATION_BYTES = 2 * 2 ** 20
_large_allocations_mapped: int | None = None


def map_large_allocations(threshold: int = LARGE_ALLOCATION_BYTES) -> bool:
    """Have glibc map every allocation of at least ``threshold`` bytes on its own (once per process).

    Why: by default glibc raises its mmap threshold to the size of each large block freed (up
    to 32 MiB), after which the work vectors of a grid solve and of the optimizer (2-13 MB at
    128x64x64) come from the heap, where arrays of different lifetimes leave holes that the
    heap keeps: the process grew 35-70 B per hex beyond its live arrays over three design
    iterations (docs/performance.md, "Memory per hex, sixth pass"). A fixed threshold (which
    also stops that adjustment) maps each such block and gives it back when freed, so the
    resident memory follows the live arrays. Blocks below 2 MiB (the coarse levels' vectors)
    stay on the heap, where they are reused quickly.

    Returns True when the threshold is in force. Does nothing (False) off glibc, when
    ``MALLOC_MMAP_THRESHOLD_`` is set in the environment (the user's choice stands) or when
    ``LIGHTWEIGHT_MALLOC=default``.
    """
    global _large_allocations_mapped
    if _large_allocations_mapped is not None:
        return _large_allocations_mapped == threshold
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or os.environ.get("LIGHTWEIGHT_MALLOC") == "default":
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, int(threshold)) != 1:
        return False
    _large_allocations_mapped = int(threshold)
    return True
