"""Marching cubes: generated table invariants, closed/outward meshes, Triton parity (TRITON_INTERPRET=1)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: run kernels on the CPU

import numpy as np
import pytest
import torch

from engine.errors import ConfigError, MeshError
from engine.geometry.marching_cubes import (
    _nonzero_area_device,
    _weld_device,
    extract_mesh,
    extract_mesh_device,
    weld_coincident,
)
from engine.geometry.mesh import face_areas
from engine.geometry.sdf_grid import SdfGrid
from triton_kernels.marching_cubes import (
    _FACES,
    EDGE_CORNERS,
    MC_COUNTS,
    MC_TRIANGLES,
    case_loops,
    marching_cubes_ref,
    marching_cubes_triton,
)


def _edge_use(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(undirected edge use counts, whether every directed edge appears exactly once)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    _, dcounts = np.unique(directed, axis=0, return_counts=True)
    return counts, bool((dcounts == 1).all())


def _assert_closed(faces: np.ndarray) -> None:
    counts, directed_once = _edge_use(faces)
    assert (counts == 2).all(), f"{int((counts != 2).sum())} edges not shared by exactly 2 faces"
    assert directed_once, "neighbouring faces are not consistently oriented"


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = (v[f[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _lattice(n: int, half: float) -> np.ndarray:
    g = np.linspace(-half, half, n)
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1)  # [n, n, n, 3]


def _sphere(n: int, r: float, half: float = 1.0) -> np.ndarray:
    return (np.linalg.norm(_lattice(n, half), axis=-1) - r).astype(np.float32)


def _torus(n: int) -> np.ndarray:
    p = _lattice(n, 1.0)
    q = np.sqrt(p[..., 0] ** 2 + p[..., 2] ** 2) - 0.6
    return (np.sqrt(q ** 2 + p[..., 1] ** 2) - 0.25).astype(np.float32)


def _pad_outside(v: np.ndarray) -> np.ndarray:
    return np.pad(v, 1, constant_values=1.0).astype(np.float32)


def _noise(n: int, seed: int) -> np.ndarray:
    return _pad_outside(np.random.default_rng(seed).standard_normal((n, n, n)).astype(np.float32))


def _checkerboard(n: int) -> np.ndarray:
    i = np.indices((n, n, n)).sum(axis=0)
    return _pad_outside(np.where(i % 2 == 0, -1.0, 1.0))


# ---------------------------------------------------------------------------------------------- table


def test_table_shape_and_crossed_edges():
    assert MC_TRIANGLES.shape == (256, 16) and MC_COUNTS.shape == (256,)
    assert MC_COUNTS[0] == 0 and MC_COUNTS[255] == 0 and MC_COUNTS.max() <= 5
    for case in range(256):
        k = 3 * MC_COUNTS[case]
        assert (MC_TRIANGLES[case, k:] == -1).all() and (MC_TRIANGLES[case, :k] >= 0).all()
        inside = np.array([(case >> c) & 1 for c in range(8)])
        crossed = {e for e in range(12) if inside[EDGE_CORNERS[e, 0]] != inside[EDGE_CORNERS[e, 1]]}
        assert set(MC_TRIANGLES[case, :k].tolist()) == crossed, case


def test_every_case_loops_are_closed_and_on_faces():
    face_edges = [set(edges) for _, _, edges in _FACES]
    for case in range(1, 255):
        tris = MC_TRIANGLES[case, : 3 * MC_COUNTS[case]].reshape(-1, 3).astype(np.int64)
        directed = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
        pairs = {tuple(d) for d in directed.tolist()}
        boundary = [d for d in pairs if (d[1], d[0]) not in pairs]
        # boundary segments lie on a cube face; each crossing has one incoming and one outgoing segment
        assert all(any({a, b} <= fe for fe in face_edges) for a, b in boundary), case
        starts, ends = sorted(a for a, _ in boundary), sorted(b for _, b in boundary)
        assert starts == ends and len(set(starts)) == len(starts), case


@pytest.mark.parametrize("case", range(1, 255))
def test_single_case_is_closed_and_outward(case):
    """Each case embedded in an all-outside block: a closed, outward mesh (crack-free with neighbours)."""
    v = np.ones((4, 4, 4), dtype=np.float32)
    for c in range(8):
        if (case >> c) & 1:
            v[1 + (c & 1), 1 + ((c >> 1) & 1), 1 + ((c >> 2) & 1)] = -1.0
    verts, faces = marching_cubes_ref(v)
    _assert_closed(faces)
    assert _signed_volume(verts, faces) > 0


def test_complementary_cases_reverse_loops():
    """Without an ambiguous face, case c and 255 - c have the same loops with opposite orientation."""
    def ambiguous(case: int) -> bool:
        for _, ring, _ in _FACES:
            s = [(case >> c) & 1 for c in ring]
            if s[0] == s[2] and s[1] == s[3] and s[0] != s[1]:
                return True
        return False

    def segments(loops: list[list[int]]) -> set[tuple[int, int]]:
        return {(lp[i], lp[(i + 1) % len(lp)]) for lp in loops for i in range(len(lp))}

    checked = 0
    for case in range(1, 255):
        if ambiguous(case):
            continue
        mine, other = segments(case_loops(case)), segments(case_loops(255 - case))
        assert other == {(b, a) for a, b in mine}, case
        checked += 1
    assert checked > 100


# ----------------------------------------------------------------------------------------- meshes


def test_sphere_closed_outward_volume():
    r = 0.6
    mesh = extract_mesh(SdfGrid(_sphere(65, r), -1.0, 1.0), backend="numpy")
    _assert_closed(mesh.faces)
    vol = _signed_volume(mesh.vertices, mesh.faces)
    assert vol == pytest.approx(4.0 / 3.0 * np.pi * r ** 3, rel=0.01)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - r).max() < 0.01
    # face normals point away from the centre
    c = mesh.vertices[mesh.faces].mean(axis=1)
    n = np.cross(mesh.vertices[mesh.faces[:, 1]] - mesh.vertices[mesh.faces[:, 0]],
                 mesh.vertices[mesh.faces[:, 2]] - mesh.vertices[mesh.faces[:, 0]])
    assert (np.einsum("ij,ij->i", n, c) > 0).mean() > 0.999


def test_level_offsets_surface():
    mesh = extract_mesh(SdfGrid(_sphere(49, 0.5), -1.0, 1.0), level=0.2, backend="numpy")
    assert np.linalg.norm(mesh.vertices, axis=1).mean() == pytest.approx(0.7, abs=0.01)


@pytest.mark.parametrize("field", ["noise", "checkerboard", "torus"])
def test_hard_fields_are_closed(field):
    v = {"noise": _noise(20, 1), "checkerboard": _checkerboard(8), "torus": _torus(40)}[field]
    verts, faces = marching_cubes_ref(v)
    _assert_closed(faces)
    assert _signed_volume(verts, faces) > 0


def test_nodes_exactly_on_level_are_welded_and_closed():
    # box with half-size on lattice nodes: whole faces of nodes have value exactly 0
    p = _lattice(21, 1.0)
    box = (np.abs(p) - 0.5).max(axis=-1).astype(np.float32)
    assert (box == 0).sum() > 100
    mesh = extract_mesh(SdfGrid(box, -1.0, 1.0), backend="numpy")
    _assert_closed(mesh.faces)
    # marching cubes chamfers the 12 box edges by half a cell: volume 1 - 12 * h^2 / 2 (h = 0.1) plus corners
    assert 0.93 < _signed_volume(mesh.vertices, mesh.faces) < 0.95
    assert np.abs(mesh.vertices).max() == pytest.approx(0.5, abs=1e-6)


def test_bad_fields_raise_mesh_error():
    v = _sphere(9, 0.5)
    v[3, 3, 3] = np.nan
    with pytest.raises(MeshError, match="NaN field"):
        extract_mesh(SdfGrid(v, -1.0, 1.0))
    with pytest.raises(MeshError, match="no surface crossing"):
        extract_mesh(SdfGrid(np.ones((8, 8, 8), np.float32), -1.0, 1.0))
    with pytest.raises(MeshError, match="no surface crossing"):
        extract_mesh(SdfGrid(-np.ones((8, 8, 8), np.float32), -1.0, 1.0))
    with pytest.raises(ConfigError):
        extract_mesh(SdfGrid(_sphere(9, 0.5), -1.0, 1.0), backend="cuda-magic")
    with pytest.raises(ConfigError):
        SdfGrid(np.zeros((4, 4, 5), np.float32), -1.0, 1.0)


# ------------------------------------------------------------------------------------ Triton parity


def _triples(verts: np.ndarray, faces: np.ndarray) -> set:
    tri = verts[faces]                                              # [F, 3, 3]
    return {tuple(sorted(map(tuple, t.tolist()))) for t in tri}


@pytest.mark.parametrize("field", ["sphere", "torus", "noise", "checkerboard"])
def test_triton_matches_reference(field):
    v = {"sphere": _sphere(18, 0.55), "torus": _torus(20), "noise": _noise(10, 3),
         "checkerboard": _checkerboard(6)}[field]
    ref_v, ref_f = marching_cubes_ref(v, 0.0)
    tri_v, tri_f = marching_cubes_triton(torch.from_numpy(v), 0.0)
    assert tri_v.dtype == torch.float32 and tri_f.dtype == torch.int32
    np.testing.assert_array_equal(tri_v.numpy(), ref_v)
    np.testing.assert_array_equal(tri_f.numpy(), ref_f)
    assert _triples(tri_v.numpy(), tri_f.numpy()) == _triples(ref_v, ref_f)


def test_triton_backend_through_extract_mesh():
    grid = SdfGrid(torch.from_numpy(_sphere(14, 0.6)), -1.0, 1.0)
    a = extract_mesh(grid, backend="triton")
    b = extract_mesh(grid, backend="numpy")
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)


def test_triton_launcher_validates_inputs():
    with pytest.raises(ValueError):
        marching_cubes_triton(torch.zeros(4, 4, 5), 0.0)
    with pytest.raises(ValueError):
        marching_cubes_triton(torch.zeros(4, 4, 4, dtype=torch.float64), 0.0)


# ------------------------------------------------------------------------------- device stage (GPU path)


def _box(n: int) -> np.ndarray:
    p = _lattice(n, 1.0)
    return (np.abs(p) - 0.5).max(axis=-1).astype(np.float32)     # whole faces of nodes exactly on the level


@pytest.mark.parametrize("field", ["sphere", "box", "noise", "checkerboard", "torus"])
def test_device_extraction_equals_host_extraction(field):
    """extract_mesh_device (torch ops after the Triton kernel) gives the host path's mesh bit for bit: the
    same vertex order (np.unique's byte order where vertices were welded), faces and meta."""
    v = {"sphere": _sphere(18, 0.55), "box": _box(21), "noise": _noise(10, 3),
         "checkerboard": _checkerboard(6), "torus": _torus(20)}[field]
    grid = SdfGrid(torch.from_numpy(v), -1.0, 1.0)
    host = extract_mesh(SdfGrid(v, -1.0, 1.0), backend="numpy")
    dm = extract_mesh_device(grid)
    assert dm.vertices.dtype == torch.float32 and dm.faces.dtype == torch.int32
    np.testing.assert_array_equal(dm.vertices.numpy(), host.vertices)
    np.testing.assert_array_equal(dm.faces.numpy(), host.faces)
    assert dm.meta == host.meta


def test_device_weld_reproduces_numpy_unique_order():
    """Welding on the device: coincident positions (also -0.0 vs +0.0, which differ in bytes) and the
    order of np.unique over 12-byte keys, with a face that collapses and is dropped."""
    rng = np.random.default_rng(4)
    world = rng.normal(size=(40, 3)).astype(np.float32)
    world[[5, 17, 30]] = world[2]
    world[9] = [0.0, 1.0, 2.0]
    world[10] = [-0.0, 1.0, 2.0]
    faces = rng.integers(0, 40, size=(60, 3))
    faces[0] = [2, 5, 7]                                           # collapses once 5 -> 2
    ref_v, ref_f = weld_coincident(world, faces)
    got_v, got_f = _weld_device(torch.from_numpy(world), torch.from_numpy(faces))
    np.testing.assert_array_equal(got_v.numpy(), ref_v)
    np.testing.assert_array_equal(got_f.numpy(), ref_f)


def test_device_area_filter_matches_host_rounding():
    """Zero-area test: float64 cross of float32 positions, zero after rounding to float32 (tiny but
    non-zero float64 crosses count as zero-area, like face_areas)."""
    world = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1e-30, 0], [0, 0, 1e-30], [0, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 3, 4], [0, 1, 5], [1, 3, 4]])
    want = face_areas(world, faces) > 0.0
    got = _nonzero_area_device(torch.from_numpy(world), torch.from_numpy(faces)).numpy()
    np.testing.assert_array_equal(got, want)
    assert want.tolist() == [False, False, True, True]


def test_device_extraction_errors():
    with pytest.raises(MeshError, match="NaN field"):
        v = _sphere(9, 0.5)
        v[3, 3, 3] = np.inf
        extract_mesh_device(SdfGrid(torch.from_numpy(v), -1.0, 1.0))
    with pytest.raises(MeshError, match="no surface crossing"):
        extract_mesh_device(SdfGrid(torch.ones(8, 8, 8), -1.0, 1.0))
    with pytest.raises(ConfigError):
        extract_mesh_device(SdfGrid(_sphere(9, 0.5), -1.0, 1.0))
