"""Shared fixtures: paths to the shipped reference data, the sample bracket's model."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def repo_root() -> Path:
    return ROOT


# unit tractions on the sample bracket's load face, by load case name
BRACKET_TRACTIONS = {"down": (0.0, 0.0, -1.0), "side": (0.0, 1.0, 0.0), "pull": (1.0, 0.0, 0.0)}


@pytest.fixture(scope="session")
def bracket_model():
    """Builds the Model of the sample Gmsh tet bracket (meshes/bracket.msh, aluminium in N, mm):
    bolt holes clamped, a unit traction on the load face per named case of BRACKET_TRACTIONS.
    ``bracket_model("down", "side", mesh=None)``; ``mesh``: another mesh with the same sets
    (an exported part)."""
    import lightweight as lw

    def build(*cases, mesh=None):
        mesh = lw.read_mesh(ROOT / "meshes" / "bracket.msh") if mesh is None else mesh
        return lw.Model(mesh, material=lw.Material(E=70e3, nu=0.33), supports={"bolt_holes": "xyz"},
                        loads={case: [lw.Traction("load_face", BRACKET_TRACTIONS[case])] for case in cases})
    return build
