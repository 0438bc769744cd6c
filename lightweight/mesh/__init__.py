"""Mesh layer: data model, structured grids, named sets and file I/O (no physics here)."""

from .grid import grid_node_index, structured_grid, to_quadratic
from .io import read_mesh, read_mesh_fields, read_metadata, write_mesh
from .mesh import Mesh

__all__ = ["Mesh", "structured_grid", "grid_node_index", "read_mesh", "read_mesh_fields", "read_metadata", "write_mesh",
           "to_quadratic"]
