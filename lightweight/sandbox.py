"""The sandbox of one submitted design: which files it may read, how big it may be, what it costs.

A public platform evaluates files written by strangers, so every design is checked here before
meshio parses it, and again for what parsing cannot see (cell counts, duplicate cells):

- **Formats**: only the documented ones, by extension: ``.msh`` (Gmsh), ``.vtu`` (VTK XML,
  inline or appended data, no compression or zlib), ``.xdmf`` with its ``.h5`` (HDF5 data items
  only), ``.inp`` (Abaqus, one self-contained deck). Any other of meshio's ~40 formats is refused.
- **No reference out of the submission's folder**: the design file and every file it names must
  be regular files (not symbolic links) inside the design's own folder. In ``.xdmf`` every
  ``DataItem`` must be ``Format="XML"`` or ``"HDF"`` with a relative HDF5 path in that folder
  (``Format="Binary"`` items and XInclude are refused), and the HDF5 datasets must be plain
  datasets reached through hard links (no external links, external storage or virtual
  datasets). ``.inp`` decks may not ``*INCLUDE`` or ``INPUT=`` other files. XML with a
  ``<!DOCTYPE`` (entities) is refused.
- **Limits** (:class:`Limits`, defaults below; a case file's ``[limits]`` table and the command
  line override them): bytes per file, cells and nodes, the inflated size of compressed data
  (a zlib bomb is refused after at most ``max_inflated_mb`` of inflation, counted block by
  block with bounded buffers, never trusting the header), address space of the worker process
  (``RLIMIT_AS``) and wall time per design (enforced by :mod:`lightweight.batch`).
- **Messages never quote file content**: an error says which file, which item and what rule,
  never the bytes it found (a design must not be able to read another file into an error row).
- **Fingerprint**: :attr:`Submission.sha256` covers every file the design reads (for a single
  file it is that file's SHA-256; for ``.xdmf`` + ``.h5`` a hash over each file's name and
  SHA-256), so a changed ``.h5`` is a new design.

``inspect_design(path, deep=False)`` is what the evaluator's own process runs (links, format,
sizes, the .xdmf's references: enough to name and hash the design); the deep checks (inflation,
HDF5, decks) run in the worker that evaluates the design.

Approach: cheap, format-aware checks with the standard library (``xml.etree`` after refusing
DOCTYPE, ``zlib`` with bounded output, ``h5py`` link inspection) rather than a general
container sandbox: the worker processes of :mod:`lightweight.batch` add the operating-system
limits (memory, time, death with the parent), which is what HTCondor or SLURM give a job.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import zlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from .errors import LightweightError
from .provenance import file_sha256

#: accepted design formats: extension -> what the documentation calls them
FORMATS = {".msh": "Gmsh MSH", ".vtu": "VTK XML unstructured grid", ".xdmf": "XDMF with HDF5 data",
           ".inp": "Abaqus input deck"}
MB = 1 << 20


class SubmissionError(LightweightError):
    """A submitted design breaks a rule of the sandbox (format, reference, size)."""


@dataclass(frozen=True)
class Limits:
    """What one design may cost. Sizes in MiB, time in seconds; see the module docstring."""

    max_file_mb: float = 256.0        # bytes of each file the design reads
    max_cells: int = 2_000_000        # solid cells (a case's own grid too); nodes up to 4x this
    max_inflated_mb: float = 2048.0   # decompressed data of a .vtu / HDF5 datasets
    memory_mb: float = 6144.0         # address space of the worker (RLIMIT_AS); 0: no limit
    time_limit: float = 600.0         # wall seconds per design in its worker

    def updated(self, **values) -> "Limits":
        """A copy with the given (not None) values replaced, each checked."""
        values = {k: v for k, v in values.items() if v is not None}
        limits = replace(self, **values)
        limits.check()
        return limits

    def check(self, where: str = "limits") -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            unit = " of seconds" if item.name == "time_limit" else (" (MiB)" if item.name.endswith("_mb") else "")
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value)
                    or value < 0 or (value == 0 and item.name != "memory_mb")):
                raise LightweightError(f"{where}: {item.name} must be a positive number{unit}, got {value!r}")

    def as_dict(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self)}


LIMIT_KEYS = tuple(item.name for item in fields(Limits))


@dataclass
class Submission:
    """A design that passed the file checks: its files (design first) and their joint SHA-256."""

    path: Path
    files: list[Path]
    sha256: str


def display_name(path) -> str:
    """A file name as printable UTF-8 (bytes that are not UTF-8 become \\xNN escapes)."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def inspect_design(path, limits: Limits | None = None, deep: bool = True) -> Submission:
    """Check a design's files against the sandbox rules -> Submission; SubmissionError otherwise.

    deep=False does only what the evaluator's own process needs to name and hash the design
    (links, format, sizes, the .xdmf's references, parsed with the standard library); the worker
    process that evaluates the design runs the deep checks (inflating compressed data, opening
    HDF5 files, scanning decks), so a file that crashes a native library crashes only a worker.
    """
    limits = limits or Limits()
    path = Path(path)
    name = display_name(path)
    suffix = path.suffix.lower()
    info = _regular_file(path, f"design {name}")
    if suffix not in FORMATS:
        raise SubmissionError(f"design {name}: format {display_name(path.suffix) or '(none)'} is not "
                              f"accepted; submit one of {', '.join(f'{k} ({v})' for k, v in FORMATS.items())}")
    _check_size(info, name, limits)
    files = [path]
    if suffix == ".vtu" and deep:
        _check_vtu(path, name, limits)
    elif suffix == ".xdmf":
        files += _check_xdmf(path, name, limits, deep)
    elif suffix == ".inp" and deep:
        _check_inp(path, name)
    if len(files) == 1:
        sha = file_sha256(path)
    else:
        h = hashlib.sha256()
        for file in files:
            h.update(os.fsencode(file.name) + b"\0" + file_sha256(file).encode() + b"\n")
        sha = h.hexdigest()
    return Submission(path=path, files=files, sha256=sha)


def _regular_file(path: Path, what: str) -> os.stat_result:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise SubmissionError(f"{what} does not exist") from None
    except OSError as exc:
        raise SubmissionError(f"{what} cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise SubmissionError(f"{what} is a symbolic link; links are refused, submit the file itself")
    if not stat.S_ISREG(info.st_mode):
        raise SubmissionError(f"{what} is not a regular file")
    return info


def _check_size(info: os.stat_result, name: str, limits: Limits) -> None:
    if info.st_size > limits.max_file_mb * MB:
        raise SubmissionError(f"{name} has {info.st_size / MB:.1f} MiB; the limit is "
                              f"{limits.max_file_mb:g} MiB per file (limits.max_file_mb)")


def _inside(folder: Path, reference: str, what: str, limits: Limits) -> Path:
    """The file a relative reference names, if it is a regular file in ``folder``; never quotes it."""
    if not reference or os.path.isabs(reference) or "\\" in reference:
        raise SubmissionError(f"{what} is not a relative path in the design's folder; references "
                              f"must name a file beside the design")
    target = folder / reference
    resolved_folder = folder.resolve()
    if target.resolve().parent != resolved_folder or Path(reference).name != reference:
        raise SubmissionError(f"{what} points outside the design's folder; references must name "
                              f"a file beside the design")
    info = _regular_file(target, what)
    _check_size(info, display_name(target), limits)
    return target


def _no_doctype(head: bytes, name: str) -> None:
    if re.search(rb"<!(DOCTYPE|ENTITY)", head, re.IGNORECASE):
        raise SubmissionError(f"design {name}: XML with a DOCTYPE or entity declarations is refused")


# ------------------------------------------------------------------------------------- VTU
def _check_vtu(path: Path, name: str, limits: Limits) -> None:
    raw = path.read_bytes()
    appended_raw = None
    match = re.search(rb'<AppendedData[^>]*encoding\s*=\s*"raw"[^>]*>', raw)
    if match:
        start = raw.find(b"_", match.end())
        stop = raw.rfind(b"</AppendedData>")
        if start < 0 or stop < start:
            raise SubmissionError(f"design {name}: the raw AppendedData section is not closed")
        appended_raw = raw[start + 1:stop]
        raw = raw[:match.end()] + raw[stop:]
    _no_doctype(raw, name)
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as exc:
        raise SubmissionError(f"design {name}: not well-formed XML (line {exc.position[0]}); is "
                              f"the file complete?") from None
    if root.tag != "VTKFile" or root.get("type") != "UnstructuredGrid":
        raise SubmissionError(f"design {name}: not a VTK XML UnstructuredGrid file")
    compressor = root.get("compressor")
    if compressor not in (None, "vtkZLibDataCompressor"):
        raise SubmissionError(f"design {name}: compressor {compressor!r} is not accepted (zlib or none)")
    header = np.dtype(np.uint64 if root.get("header_type") == "UInt64" else np.uint32)
    header = header.newbyteorder(">" if root.get("byte_order") == "BigEndian" else "<")
    for piece in root.iter("Piece"):
        cells = _int_attribute(piece, "NumberOfCells", name)
        nodes = _int_attribute(piece, "NumberOfPoints", name)
        _check_counts(cells, nodes, name, limits)
    appended = None
    for element in root.iter("AppendedData"):
        if element.get("encoding", "raw") != "raw":
            text = (element.text or "").strip()
            appended = text[1:] if text.startswith("_") else ""
    budget = int(limits.max_inflated_mb * MB)
    inflated = 0
    for array in root.iter("DataArray"):
        form = array.get("format", "ascii")
        if form == "binary":
            data = "".join((array.text or "").split())
        elif form == "appended":
            data = appended_raw if appended_raw is not None else appended
            offset = _int_attribute(array, "offset", name)
            if data is None or offset > len(data):
                raise SubmissionError(f"design {name}: a DataArray's offset lies outside its AppendedData")
            data = data[offset:]
        else:
            continue
        inflated += _array_bytes(data, header, compressor, budget - inflated, name)
        if inflated > budget:
            raise SubmissionError(f"design {name}: its compressed data inflates to more than "
                                  f"{limits.max_inflated_mb:g} MiB (limits.max_inflated_mb)")


def _int_attribute(element, key: str, name: str) -> int:
    try:
        return int(element.get(key, "0"))
    except ValueError:
        raise SubmissionError(f"design {name}: attribute {key} is not an integer") from None


def _check_counts(cells: int, nodes: int, name: str, limits: Limits) -> None:
    if cells > limits.max_cells:
        raise SubmissionError(f"design {name} has {cells} cells; the limit is {limits.max_cells} "
                              f"(limits.max_cells)")
    if nodes > 4 * limits.max_cells:
        raise SubmissionError(f"design {name} has {nodes} nodes; the limit is {4 * limits.max_cells} "
                              f"(4 x limits.max_cells)")


def _take(data, n_bytes: int, name: str) -> tuple[bytes, object]:
    """The first ``n_bytes`` of a binary DataArray and the rest, from raw bytes or VTK's base64 text
    (where the header and the data are separate base64 strings)."""
    if isinstance(data, bytes):
        head, rest = data[:n_bytes], data[n_bytes:]
    else:
        chars = 4 * ((n_bytes + 2) // 3)
        try:
            head = base64.b64decode(data[:chars])[:n_bytes]
        except ValueError:
            raise SubmissionError(f"design {name}: a binary DataArray is not valid base64") from None
        rest = data[chars:]
    if len(head) < n_bytes:
        raise SubmissionError(f"design {name}: a binary DataArray is cut short")
    return head, rest


def _array_bytes(data, header: np.dtype, compressor, budget: int, name: str) -> int:
    """Bytes one binary DataArray holds once inflated; stops counting beyond ``budget``."""
    size = header.itemsize
    first, _ = _take(data, size, name)
    if compressor is None:
        return int(np.frombuffer(first, header)[0])
    n_blocks = int(np.frombuffer(first, header)[0])
    if n_blocks > len(data):
        raise SubmissionError(f"design {name}: a compressed DataArray declares more blocks than it has bytes")
    head, rest = _take(data, size * (3 + n_blocks), name)
    if not isinstance(rest, bytes):
        try:
            rest = base64.b64decode(rest)
        except ValueError:
            raise SubmissionError(f"design {name}: a binary DataArray is not valid base64") from None
    sizes = np.frombuffer(head, header)[3:].astype(np.int64)
    total, offset = 0, 0
    for block_size in sizes.tolist():
        total += _inflate_bounded(rest[offset:offset + block_size], budget - total, name)
        offset += block_size
        if total > budget:
            break
    return total


def _inflate_bounded(block: bytes, budget: int, name: str) -> int:
    """Length of zlib-inflated ``block``, counted in 1 MiB steps; stops once above ``budget``."""
    inflater = zlib.decompressobj()
    total, data = 0, block
    try:
        while data:
            out = inflater.decompress(data, MB)
            total += len(out)
            if total > budget:
                return total
            data = inflater.unconsumed_tail
            if not out and not data:
                break
    except zlib.error:
        raise SubmissionError(f"design {name}: a compressed data block is corrupt (zlib)") from None
    return total


# ------------------------------------------------------------------------------------ XDMF
def _check_xdmf(path: Path, name: str, limits: Limits, deep: bool = True) -> list[Path]:
    raw = path.read_bytes()
    _no_doctype(raw, name)
    if re.search(rb"XInclude|<\s*(\w+:)?include\b", raw):
        raise SubmissionError(f"design {name}: XInclude is refused; keep the whole XDMF in one file")
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as exc:
        raise SubmissionError(f"design {name}: not well-formed XML (line {exc.position[0]})") from None
    folder = path.parent
    files: list[Path] = []
    budget = int(limits.max_inflated_mb * MB)
    inflated = 0
    for number, item in enumerate(root.iter("DataItem"), start=1):
        form = item.get("Format", "XML")
        where = f"design {name}: DataItem {number}"
        if form == "XML":
            continue
        if form != "HDF":
            raise SubmissionError(f"{where} has Format={form!r}; only XML and HDF data items are accepted")
        reference = (item.text or "").strip()
        file_part, _, dataset = reference.partition(":")
        h5 = _inside(folder, file_part, f"{where}'s HDF5 file", limits)
        if deep:
            inflated += _check_hdf5_dataset(h5, dataset, where)
        if inflated > budget:
            raise SubmissionError(f"design {name}: its HDF5 data holds more than "
                                  f"{limits.max_inflated_mb:g} MiB (limits.max_inflated_mb)")
        if h5 not in files:
            files.append(h5)
    for topology in root.iter("Topology"):
        count = topology.get("NumberOfElements")
        if count is not None:
            _check_counts(_int_attribute(topology, "NumberOfElements", name), 0, name, limits)
    # read_metadata opens the .h5 of the same stem: it is part of the design too
    twin = path.with_suffix(".h5")
    if twin.exists() or twin.is_symlink():
        twin = _inside(folder, twin.name, f"design {name}'s HDF5 file", limits)
        if twin not in files:
            files.append(twin)
    return files


def _check_hdf5_dataset(h5: Path, dataset: str, where: str) -> int:
    """Bytes of a plain HDF5 dataset reached through hard links only; SubmissionError otherwise."""
    import h5py
    try:
        with h5py.File(h5, "r") as file:
            node = file
            for part in [p for p in dataset.split("/") if p]:
                link = node.get(part, getlink=True)
                if link is None:
                    raise SubmissionError(f"{where} names an HDF5 dataset its file does not have")
                if not isinstance(link, h5py.HardLink):
                    raise SubmissionError(f"{where} reaches its data through an HDF5 "
                                          f"{type(link).__name__}; only plain datasets are accepted")
                node = node[part]
            if not isinstance(node, h5py.Dataset):
                raise SubmissionError(f"{where} does not name an HDF5 dataset")
            if node.external or node.is_virtual:
                raise SubmissionError(f"{where} is an HDF5 dataset stored in other files "
                                      f"(external or virtual); only plain datasets are accepted")
            return int(np.prod(node.shape, dtype=np.int64)) * node.dtype.itemsize
    except SubmissionError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises many types for garbled files
        raise SubmissionError(f"{where}: its HDF5 file cannot be read ({type(exc).__name__})") from None


# ------------------------------------------------------------------------------------ Abaqus
def _check_inp(path: Path, name: str) -> None:
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            text = line.lstrip()
            if not text.startswith(b"*") or text.startswith(b"**"):
                continue
            keyword = text.upper().replace(b" ", b"")
            if keyword.startswith(b"*INCLUDE") or b"INPUT=" in keyword:
                raise SubmissionError(f"design {name}: line {number} reads another file (*INCLUDE or "
                                      f"INPUT=); submit one self-contained deck")


# ------------------------------------------------------------------------------ after reading
def check_mesh(mesh, name: str, limits: Limits):
    """Checks only the parsed mesh allows: size, duplicate cells; drops nodes no cell uses.

    Returns the mesh to analyse (the same object, or a copy without orphan nodes: a node no
    cell uses has no stiffness and would make the part look like a mechanism).
    """
    _check_counts(mesh.n_cells, mesh.n_nodes, name, limits)
    key = np.sort(mesh.cells, axis=1)
    _, first, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
    if len(first) != mesh.n_cells:
        seen = np.zeros(mesh.n_cells, dtype=bool)
        seen[first] = True
        repeated = np.flatnonzero(~seen)
        raise SubmissionError(f"design {name}: {repeated.size} cell(s) repeat another cell's nodes "
                              f"(cells {repeated[:10].tolist()}); each cell must appear once, or its "
                              f"material would count twice")
    used = np.zeros(mesh.n_nodes, dtype=bool)
    used[mesh.cells.ravel()] = True
    if used.all():
        return mesh
    from .mesh import Mesh
    new_id = np.cumsum(used) - 1
    node_sets = {k: new_id[v[used[v]]] for k, v in mesh.node_sets.items() if used[v].any()}
    face_sets = {k: new_id[f[used[f].all(axis=1)]] for k, f in mesh.face_sets.items()
                 if used[f].all(axis=1).any()}
    return Mesh(mesh.points[used], new_id[mesh.cells], mesh.cell_type,
                node_sets={k: v for k, v in node_sets.items() if k not in face_sets},
                face_sets=face_sets, cell_sets=dict(mesh.cell_sets), source=mesh.source)
