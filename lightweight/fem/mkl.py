"""Our own ctypes binding of Intel MKL's runtime library (mkl_rt): PARDISO and thread control.

Approach. pypardiso's ``PyPardisoSolver`` keeps its library handle and its ``pardiso``
function in private attributes and always redoes the analysis (module docstring of
:mod:`lightweight.fem.solvers`), so we bind the few C entry points we call ourselves, as
pyMOTO's solvers/sparse.py does with its own ctypes declarations. pypardiso stays the
dependency that installs MKL (the ``mkl`` wheel); nothing of pypardiso is used here.

Finding mkl_rt, first hit wins:

1. ``LIGHTWEIGHT_MKL_RT`` or ``PYPARDISO_MKL_RT`` in the environment (a path),
2. the files the ``mkl`` distribution installed (``importlib.metadata``; pip puts
   ``libmkl_rt.so.N`` into ``sys.prefix/lib``, conda into ``Library/bin`` on Windows),
3. ``sys.prefix/lib`` (and ``Library/bin``) listed directly,
4. ``ctypes.util.find_library("mkl_rt")`` (system installs, LD_LIBRARY_PATH).

The library is loaded once per process (``functools.lru_cache``); no recursive search of the
disk (pypardiso's glob over sys.prefix cost 0.5 s per solver). The path found is put into
``PYPARDISO_MKL_RT`` if unset (pypardiso's documented override), so pypardiso used elsewhere
in the process (benchmarks) loads the same file without searching.

Declared entry points (MKL's C interface; every scalar is passed by pointer, MKL_INT is 32-bit
in mkl_rt's default LP64 interface):

- ``pardiso(pt, maxfct, mnum, mtype, phase, n, a, ia, ja, perm, nrhs, iparm, msglvl, b, x, error)``
- ``pardiso_getdiag(pt, df, da, mnum, error)`` (pivots of the factor; optional, MKL >= 11.3)
- ``MKL_Set_Num_Threads_Local(n) -> previous``, ``MKL_Get_Max_Threads() -> n``
  (the CamelCase names are the C functions; the lowercase ones are Fortran interfaces)
- ``MKL_Set_Threading_Layer(code) -> layer in effect``, called once right after loading

Threading layer. mkl_rt picks its OpenMP runtime when first called: Intel OpenMP (libiomp5),
unless GNU OpenMP (libgomp) is already loaded in the process, then GNU; in the MKL we ship
(2026.2, measured with threadpoolctl) that detection even overrides ``MKL_THREADING_LAYER=INTEL``
in the environment. ``import gmsh`` loads libgmsh, which links libgomp, so whether Gmsh had
been imported before the first solve (pytest imports every test module before the first test)
changed PARDISO's runtime and its roundoff: the same run gave other digits alone and inside
the test suite, and the roundoff-sensitive stress-constrained L-bracket failed only there
(issue 13). :func:`load_mkl` therefore sets the layer with ``MKL_Set_Threading_Layer`` before
any other MKL call, which MKL does honour: ``MKL_THREADING_LAYER`` if the user set it
(INTEL, SEQUENTIAL, GNU, TBB, PGI), else :data:`DEFAULT_THREADING_LAYER` (Intel, the runtime
``KMP_BLOCKTIME`` in :mod:`lightweight._threads` is for and the one chosen without libgomp).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata
import os
import sys
from dataclasses import dataclass

ENV_MKL_RT = "LIGHTWEIGHT_MKL_RT"
_PYPARDISO_ENV = "PYPARDISO_MKL_RT"
ENV_THREADING_LAYER = "MKL_THREADING_LAYER"
# the layer set at load unless the user chose one (module docstring, "Threading layer")
DEFAULT_THREADING_LAYER = "INTEL"
# MKL's codes for MKL_Set_Threading_Layer (mkl_service.h: MKL_THREADING_INTEL = 0, ...)
THREADING_LAYER_CODES = {"INTEL": 0, "SEQUENTIAL": 1, "PGI": 2, "GNU": 3, "TBB": 4}


def _is_mkl_rt(filename: str) -> bool:
    name = os.path.basename(filename).lower()
    return (name.startswith("libmkl_rt.so")
            or (name.startswith("libmkl_rt.") and name.endswith(".dylib"))
            or (name.startswith("mkl_rt") and name.endswith(".dll")))


def _from_distribution() -> list[str]:
    try:
        dist = importlib.metadata.distribution("mkl")
    except importlib.metadata.PackageNotFoundError:
        return []
    found = [str(dist.locate_file(f)) for f in (dist.files or []) if _is_mkl_rt(str(f))]
    # libmkl_rt.so.2 before .so.1: the newest interface version first
    return sorted((os.path.realpath(p) for p in found if os.path.exists(p)), reverse=True)


def _from_prefix() -> list[str]:
    found = []
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for folder in (os.path.join(prefix, "lib"), os.path.join(prefix, "Library", "bin")):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            found += [os.path.join(folder, n) for n in sorted(names, reverse=True) if _is_mkl_rt(n)]
    return found


def candidate_paths() -> list[str]:
    """Where mkl_rt may be, in the order of the module docstring (may be empty)."""
    paths = [os.environ[k] for k in (ENV_MKL_RT, _PYPARDISO_ENV) if os.environ.get(k)]
    paths += _from_distribution() + _from_prefix()
    for name in ("mkl_rt", "mkl_rt.2", "mkl_rt.1"):
        found = ctypes.util.find_library(name)
        if found:
            paths.append(found)
    return list(dict.fromkeys(paths))


@dataclass(frozen=True)
class MKLRuntime:
    """The loaded mkl_rt: ``path``, the ``library`` (ctypes.CDLL) and its declared functions."""

    path: str
    library: ctypes.CDLL
    pardiso: object
    pardiso_getdiag: object | None
    set_num_threads_local: object | None
    get_max_threads: object | None
    threading_layer: str | None = None    # the layer MKL reports after load_mkl set it; None: not set


def _declare(library: ctypes.CDLL, path: str) -> MKLRuntime:
    i32p = ctypes.POINTER(ctypes.c_int32)
    i64p = ctypes.POINTER(ctypes.c_int64)
    f64p = ctypes.POINTER(ctypes.c_double)
    pardiso = library.pardiso
    # pt is an array of 64 opaque pointers; an int64 array of the same size stands for it
    pardiso.argtypes = [i64p, i32p, i32p, i32p, i32p, i32p, f64p, i32p, i32p, i32p, i32p, i32p,
                        i32p, f64p, f64p, i32p]
    pardiso.restype = None
    getdiag = getattr(library, "pardiso_getdiag", None)
    if getdiag is not None:
        getdiag.argtypes = [i64p, f64p, f64p, i32p, i32p]
        getdiag.restype = None
    set_local = getattr(library, "MKL_Set_Num_Threads_Local", None)
    if set_local is not None:
        set_local.argtypes = [ctypes.c_int]
        set_local.restype = ctypes.c_int
    get_max = getattr(library, "MKL_Get_Max_Threads", None)
    if get_max is not None:
        get_max.argtypes = []
        get_max.restype = ctypes.c_int
    return MKLRuntime(path, library, pardiso, getdiag, set_local, get_max,
                      _set_threading_layer(library))


def _set_threading_layer(library: ctypes.CDLL) -> str | None:
    """Set mkl_rt's threading layer (module docstring); the layer in effect, None if left alone."""
    set_layer = getattr(library, "MKL_Set_Threading_Layer", None)
    name = os.environ.get(ENV_THREADING_LAYER, DEFAULT_THREADING_LAYER).strip().upper()
    if set_layer is None or name not in THREADING_LAYER_CODES:
        return None            # an old MKL, or a value MKL itself will report on
    set_layer.argtypes = [ctypes.c_int]
    set_layer.restype = ctypes.c_int
    # returns the layer in effect: the requested one, or the earlier choice if MKL was already
    # initialised by someone else in this process
    code = set_layer(THREADING_LAYER_CODES[name])
    return next((k for k, v in THREADING_LAYER_CODES.items() if v == code), None)


@functools.lru_cache(maxsize=None)
def load_mkl() -> MKLRuntime:
    """Find and load mkl_rt once per process; ``OSError`` naming the places tried if absent."""
    tried = []
    for path in candidate_paths():
        try:
            library = ctypes.CDLL(path)
            runtime = _declare(library, path)
        except (OSError, AttributeError) as exc:     # not loadable, or no pardiso in it
            tried.append(f"{path} ({exc})")
            continue
        os.environ.setdefault(_PYPARDISO_ENV, path)
        return runtime
    raise OSError("Intel MKL (mkl_rt) not found: install the 'mkl' wheel (pip install pypardiso "
                  f"or mkl) or set {ENV_MKL_RT} to the library's path; tried: "
                  + ("; ".join(tried) or f"the mkl distribution's files, {sys.prefix}/lib, "
                     "ctypes.util.find_library"))
