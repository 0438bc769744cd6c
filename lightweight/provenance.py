"""Provenance: hashes of inputs and the package version, for every saved result.

Hashes are SHA-256 over a canonical byte encoding (arrays: dtype, shape and C-order bytes;
everything else: sorted-key JSON), so the same inputs give the same hash on any machine.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone

import numpy as np

from ._version import __version__


def _feed(h, obj) -> None:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        h.update(f"ndarray:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    elif isinstance(obj, dict):
        h.update(b"dict{")
        for key in sorted(obj, key=str):
            h.update(json.dumps(str(key)).encode())
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"list[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())


def hash_inputs(*objects) -> str:
    """SHA-256 hex digest of arrays, dicts, lists and JSON-able scalars."""
    h = hashlib.sha256()
    for obj in objects:
        _feed(h, obj)
    return h.hexdigest()


def file_sha256(path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(**extra) -> dict:
    """Version, time and platform facts plus ``extra`` (hashes, parameters), JSON-able."""
    record = {
        "package": "lightweight",
        "version": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    record.update(extra)
    return json.loads(json.dumps(record, default=str))
