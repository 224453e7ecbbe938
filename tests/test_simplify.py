"""QEM edge-collapse simplification (engine/geometry/simplify.py): maths vs reference, exact budgets,
manifoldness, orientation, fixed boundaries, error cases, and real scans (bunny with holes, armadillo)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path

from engine.errors import ConfigError, MeshError
from engine.geometry.mesh import TriMesh, face_normals
from engine.geometry.simplify import (
    Placement,
    _place,
    _quadrics,
    face_quadrics_ref,
    fixed_vertices,
    placement_ref,
    simplify_qem,
)


def uv_sphere(n: int, radius: float = 1.0) -> TriMesh:
    """Closed CCW (outward-facing) UV sphere with 4 n (n - 1) faces."""
    th = np.linspace(0.0, np.pi, n + 1)[1:-1]
    ph = np.linspace(0.0, 2.0 * np.pi, 2 * n, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    v = radius * np.vstack([[0.0, 1.0, 0.0], ring, [0.0, -1.0, 0.0]])
    r, c = th.size, ph.size
    j = np.arange(c)
    idx = lambda i, jj: 1 + i * c + (jj % c)  # noqa: E731
    faces = [np.stack([np.zeros(c, int), idx(0, j + 1), idx(0, j)], 1)]
    for i in range(r - 1):
        a, b, cc, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
        faces += [np.stack([a, b, d], 1), np.stack([a, d, cc], 1)]
    faces.append(np.stack([np.full(c, v.shape[0] - 1), idx(r - 1, j), idx(r - 1, j + 1)], 1))
    return TriMesh(v, np.concatenate(faces))


def grid_plane(n: int, bump: float = 0.0) -> TriMesh:
    """Open n x n-cell grid in the XZ plane facing +Y (2 n^2 faces), optional smooth height bump."""
    x, z = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    y = bump * np.sin(np.pi * x) * np.sin(np.pi * z)
    v = np.stack([x, y, z], -1).reshape(-1, 3)
    i, k = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (i * (n + 1) + k).reshape(-1)
    b, c, d = a + 1, a + n + 1, a + n + 2
    return TriMesh(v, np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]))


def read_obj(path) -> TriMesh:
    """Minimal OBJ reader (positions and triangle faces only) for the scanned test meshes."""
    v, f = [], []
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                v.append(line.split()[1:4])
            elif line.startswith("f "):
                f.append([int(t.split("/")[0]) - 1 for t in line.split()[1:4]])
    return TriMesh(np.array(v, dtype=np.float64), np.array(f))


def signed_volume(m: TriMesh) -> float:
    v = m.vertices.astype(np.float64)
    f = m.faces
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


def assert_manifold_oriented(m: TriMesh) -> None:
    """Every undirected edge in <= 2 faces, every directed edge at most once, no degenerate index."""
    f = m.faces.astype(np.int64)
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()
    d = np.stack([f, np.roll(f, -1, axis=1)], axis=2).reshape(-1, 2)
    n = m.num_vertices
    _, directed = np.unique(d[:, 0] * n + d[:, 1], return_counts=True)
    assert directed.max() == 1, "a directed edge is used twice: inconsistent orientation or non-manifold"
    _, undirected = np.unique(d.min(1) * n + d.max(1), return_counts=True)
    assert undirected.max() <= 2
    assert np.unique(np.sort(f, axis=1), axis=0).shape[0] == f.shape[0], "duplicate faces"


def boundary_vertices(m: TriMesh) -> np.ndarray:
    f = m.faces.astype(np.int64)
    e = np.sort(np.stack([f, np.roll(f, -1, axis=1)], axis=2).reshape(-1, 2), axis=1)
    keys, counts = np.unique(e[:, 0] * m.num_vertices + e[:, 1], return_counts=True)
    b = keys[counts == 1]
    return np.unique(np.concatenate([b // m.num_vertices, b % m.num_vertices]))


@pytest.mark.parametrize("placement", list(Placement))
def test_quadrics_and_placement_match_reference(placement):
    m = uv_sphere(8)
    rng = np.random.default_rng(1)
    pos = m.vertices.astype(np.float64) + rng.normal(scale=0.02, size=m.vertices.shape)
    q10 = _quadrics(pos, m.faces)
    qref = face_quadrics_ref(pos, m.faces)
    iu = np.triu_indices(4)
    np.testing.assert_allclose(q10, qref[:, iu[0], iu[1]], rtol=1e-10, atol=1e-14)
    fixed = np.zeros(pos.shape[0], dtype=bool)
    out = np.empty(3)
    for a, b in m.faces[:, :2][:40]:
        cost = _place(pos, q10, fixed, a, b, out, 0 if placement is Placement.ON_EDGE else 1)
        p_ref, c_ref = placement_ref(qref[a] + qref[b], pos[a], pos[b], placement)
        np.testing.assert_allclose(out, p_ref, atol=1e-9)
        assert cost == pytest.approx(c_ref, rel=1e-6, abs=1e-12)
        e = pos[b] - pos[a]
        if placement is Placement.ON_EDGE:                          # on the segment
            t = np.dot(out - pos[a], e) / np.dot(e, e)
            assert -1e-9 <= t <= 1 + 1e-9 and np.linalg.norm(np.cross(out - pos[a], e)) < 1e-9
        else:                                                       # within one edge length of the midpoint
            assert np.linalg.norm(out - (pos[a] + 0.5 * e)) <= np.linalg.norm(e) + 1e-12
        _place(pos, q10, fixed, a, b, out, 0)
        q = qref[a] + qref[b]
        h = lambda x: np.append(x, 1.0) @ q @ np.append(x, 1.0)  # noqa: E731
        assert cost <= h(out) + 1e-12                               # never worse than the on-edge point


def test_placement_singular_quadric_falls_back_to_midpoint():
    v = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    q = face_quadrics_ref(v, np.array([[0, 2, 1]]))                     # one plane: rank-1 A
    p, cost = placement_ref(q[0] + q[1], v[0], v[1])
    np.testing.assert_allclose(p, [0.5, 0.0, 0.0])
    assert cost == pytest.approx(0.0, abs=1e-15)
    out = np.empty(3)
    q10 = _quadrics(v, np.array([[0, 2, 1]], dtype=np.int32))
    for mode in (0, 1):
        _place(v, q10, np.zeros(3, dtype=bool), 0, 1, out, mode)
        np.testing.assert_allclose(out, [0.5, 0.0, 0.0])


@pytest.mark.parametrize("target,placement", [(1000, Placement.ON_EDGE), (1001, Placement.ON_EDGE),
                                              (1000, Placement.BOUNDED_OPTIMAL)])
def test_sphere_reaches_exact_budget_manifold_outward(target, placement):
    m = uv_sphere(60)                                              # 14160 faces
    out, rep = simplify_qem(m, target, placement)
    assert out.num_faces in (target, target - 1) and rep.faces_out == out.num_faces
    assert rep.reached and rep.reason == ("" if out.num_faces == target else
                                          "one face under the budget: every collapse removes 2 faces")
    assert_manifold_oriented(out)
    assert 2 * out.num_vertices - 4 == out.num_faces                # still a closed genus-0 surface
    centroid = out.vertices[out.faces].mean(axis=1)
    assert (np.einsum("ij,ij->i", face_normals(out.vertices, out.faces), centroid) > 0).all()
    assert signed_volume(out) == pytest.approx(signed_volume(m), rel=0.03)
    radius = np.linalg.norm(out.vertices, axis=1)
    assert np.abs(radius - 1.0).max() < 0.01                        # vertices stay near the surface


def test_open_plane_keeps_boundary_and_stays_up():
    m = grid_plane(30, bump=0.1)                                   # 1800 faces, 120 boundary vertices
    out, rep = simplify_qem(m, 300)
    assert rep.reached and out.num_faces in (300, 299)
    assert_manifold_oriented(out)
    b_in = m.vertices[boundary_vertices(m)]
    b_out = out.vertices[boundary_vertices(out)]
    assert len(b_out) == len(b_in)
    key = lambda a: np.round(a.astype(np.float64) * 1e6).astype(np.int64)  # noqa: E731
    assert {tuple(r) for r in key(b_in)} == {tuple(r) for r in key(b_out)}
    assert (face_normals(out.vertices, out.faces)[:, 1] > 0).all()  # nothing flipped under the bump


def test_unreachable_budget_raises_with_a_usable_fix():
    m = grid_plane(12)                                             # 48 fixed boundary vertices
    with pytest.raises(ConfigError, match=r"use --faces (\d+) or more") as err:
        simplify_qem(m, 10)
    msg = str(err.value)
    assert "\n" not in msg and "48 boundary edges kept fixed" in msg
    need = int(msg.rsplit("use --faces ", 1)[1].split()[0])
    assert 46 <= need < m.num_faces                                # a disk with 48 fixed edges keeps >= 46
    out, rep = simplify_qem(m, need)                               # the suggested budget works
    assert rep.reached and out.num_faces <= need
    assert_manifold_oriented(out)
    assert len(boundary_vertices(out)) == 48


def test_non_manifold_edge_is_locked():
    m = uv_sphere(20)
    a, b = m.faces[100, 0], m.faces[100, 1]
    apex = m.vertices[a] * 1.5                                     # a fin on edge (a, b): 3 faces there
    fin = TriMesh(np.vstack([m.vertices, apex]), np.vstack([m.faces, [[a, b, m.num_vertices]]]))
    assert fixed_vertices(fin.faces, fin.num_vertices)[[a, b]].all()
    out, rep = simplify_qem(fin, 200)
    assert rep.reached
    idx = [int(np.flatnonzero((out.vertices == fin.vertices[i]).all(1))[0]) for i in (a, b)]
    on_edge = np.isin(out.faces, idx).sum(axis=1) == 2
    assert on_edge.sum() == 3                                     # the fin edge survives untouched


def test_bad_inputs():
    m = uv_sphere(6)
    with pytest.raises(ConfigError):
        simplify_qem(m, 3)
    out, rep = simplify_qem(m, m.num_faces)
    assert rep.reached and "unchanged" in rep.reason and np.array_equal(out.faces, m.faces)
    bad = m.copy(vertices=m.vertices.copy())
    bad.vertices[0, 0] = np.nan
    with pytest.raises(MeshError):
        simplify_qem(bad, 10)


def test_welds_duplicate_positions_first():
    m = uv_sphere(20)
    soup = TriMesh(m.vertices[m.faces.reshape(-1)], np.arange(3 * m.num_faces).reshape(-1, 3))
    out, rep = simplify_qem(soup, 400)                              # unwelded soup would be all boundary
    assert rep.reached and out.num_faces in (400, 399)
    assert_manifold_oriented(out)


@pytest.mark.parametrize("name,target,placement", [("bunny", 5000, Placement.ON_EDGE),
                                                   ("armadillo", 10000, Placement.ON_EDGE),
                                                   ("armadillo", 5000, Placement.BOUNDED_OPTIMAL)])
def test_real_scans(shared_dir, name, target, placement):
    m = read_obj(asset_path(name))
    out, rep = simplify_qem(m, target, placement)
    assert rep.reached and out.num_faces in (target, target - 1)
    assert_manifold_oriented(out)
    assert signed_volume(out) == pytest.approx(signed_volume(m), rel=0.02)
    from engine.metrics import chamfer_hausdorff

    chamfer, hausdorff = chamfer_hausdorff(m, out, n=20_000, seed=0)   # units: longest box side
    assert chamfer < 1.5e-3 and hausdorff < 1e-2                   # measured: 6.5e-4..8.1e-4, 3.7e-3..5e-3
    n_boundary = len(boundary_vertices(m))
    assert len(boundary_vertices(out)) == n_boundary               # holes of the bunny scan kept as is
