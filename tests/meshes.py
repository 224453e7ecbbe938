"""Small analytic meshes shared by the tests, and a real-asset loader that welds positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.geometry.mesh import TriMesh, clean_mesh
from engine.io.asset_load import load_mesh


def icosphere(subdiv: int, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere, CCW outward faces: float32 [V, 3], int32 [F, 3] (20 * 4^subdiv faces)."""
    t = (1 + 5**0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]  # fmt: skip
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]  # fmt: skip
    verts = [np.array(p, float) / np.linalg.norm(p) for p in v]
    for _ in range(subdiv):
        mid: dict = {}
        new = []
        for a, b, c in f:
            m = []
            for i, j in ((a, b), (b, c), (c, a)):
                key = (min(i, j), max(i, j))
                if key not in mid:
                    p = verts[i] + verts[j]
                    verts.append(p / np.linalg.norm(p))
                    mid[key] = len(verts) - 1
                m.append(mid[key])
            new += [[a, m[0], m[2]], [b, m[1], m[0]], [c, m[2], m[1]], m]
        f = new
    return (np.array(verts) * radius).astype(np.float32), np.array(f, np.int32)


def welded_positions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A real asset's geometry only: positions welded across UV seams, degenerate faces dropped."""
    mesh = clean_mesh(load_mesh(path))
    return mesh.vertices, mesh.faces


def check_unwrap_contract(mesh, out, report, size: int) -> np.ndarray:
    """The contract every UV unwrapper keeps (``unwrap_uv``'s): split vertices gathered through
    ``meta["vmapping"]``, same faces in the same order, float32 UVs inside [0, 1], normals fixed before
    the seam split, no texel shared by two charts, the reported utilisation. Returns the rasterised face
    id per texel (int [size, size], -1 empty) for the caller's own checks."""
    import pytest

    from engine.geometry.rasterize import rasterize_uv
    from engine.geometry.uv_quality import overlap_texels

    vmap = out.meta["vmapping"]
    assert vmap.dtype == np.int64 and out.num_faces == mesh.num_faces
    np.testing.assert_array_equal(out.vertices, mesh.vertices[vmap])       # positions unchanged
    np.testing.assert_array_equal(vmap[out.faces], mesh.faces)             # same faces, same order
    assert out.uvs.dtype == np.float32 and out.uvs.shape == (out.num_vertices, 2)
    assert out.uvs.min() >= 0.0 and out.uvs.max() <= 1.0                 # every face inside the atlas
    first = np.full(mesh.num_vertices, -1)
    first[vmap[::-1]] = np.arange(vmap.size)[::-1]
    np.testing.assert_array_equal(out.normals, out.normals[first[vmap]])  # normals fixed before seams
    assert overlap_texels(out.uvs, out.faces, size) == 0                  # between charts
    fid, _ = rasterize_uv(out.uvs, out.faces, size)
    assert report.utilisation == pytest.approx((fid >= 0).mean())
    return fid


def torus(n_major: int = 24, n_minor: int = 12, major: float = 1.0, minor: float = 0.35
          ) -> tuple[np.ndarray, np.ndarray]:
    """Closed CCW (outward) torus around +Y, genus 1: float32 [n_major n_minor, 3], int32
    [2 n_major n_minor, 3]."""
    i, j = np.meshgrid(np.arange(n_major), np.arange(n_minor), indexing="ij")
    u, w = 2 * np.pi * i / n_major, 2 * np.pi * j / n_minor
    r = major + minor * np.cos(w)
    v = np.stack([r * np.cos(u), minor * np.sin(w), r * np.sin(u)], -1).reshape(-1, 3)
    a = (i * n_minor + j).reshape(-1)
    b = (((i + 1) % n_major) * n_minor + j).reshape(-1)
    c = (i * n_minor + (j + 1) % n_minor).reshape(-1)
    d = (((i + 1) % n_major) * n_minor + (j + 1) % n_minor).reshape(-1)
    faces = np.concatenate([np.stack([a, c, d], 1), np.stack([a, d, b], 1)])
    return v.astype(np.float32), faces.astype(np.int32)


# ------------------------------------------------------------------------------------------------------
# Shapes whose visible faces are known exactly (hidden-face removal). Each returns (mesh, visible bool [F]):
# a face is visible when some ray from outside reaches a point of it, either side. Truth comes from the
# construction: convex cavities seen through straight convex tunnels (a line from a cavity point escapes
# iff it passes the tunnel's inner and outer openings), evaluated in closed form at dense points of each
# face; every builder checks that no face is borderline (tiny visible part) so the truth is unambiguous.

def _dense_bary(n: int = 24) -> np.ndarray:
    """Barycentric points [P, 3] covering a triangle (corners, edges and interior)."""
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    a, b = i[keep] / n, j[keep] / n
    return np.stack([1 - a - b, a, b], 1)


def _truth(mesh: TriMesh, slack, cavity: np.ndarray, min_share: float = 0.02) -> np.ndarray:
    """visible bool [F]: faces not in ``cavity`` (bool [F]) are visible; a cavity face is visible when
    ``slack`` (points [P, 3] -> float [P], > 0 where a point sees out) is positive somewhere on it. Raises
    when a face is visible on less than ``min_share`` of its points (borderline: change the tessellation)."""
    bary = _dense_bary()
    tri = mesh.vertices[mesh.faces[cavity]].astype(np.float64)               # [C, 3, 3]
    pts = np.einsum("pk,ckd->cpd", bary, tri)                                # [C, P, 3]
    share = (slack(pts.reshape(-1, 3)).reshape(pts.shape[:2]) > 1e-6).mean(axis=1)   # float32 corners
    bad = (share > 0) & (share < min_share)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} faces are borderline (visible share {share[bad].max():.3f})")
    visible = np.ones(mesh.num_faces, bool)
    visible[np.flatnonzero(cavity)] = share > 0
    return visible


def _rect(axis: int, value: float, sign: int, lo, hi, breaks: list[np.ndarray], hole=None):
    """Axis-aligned rectangle {x[axis] = value, lo <= x <= hi on the other axes}, cut along the global
    ``breaks`` (so neighbouring rectangles share vertices), faces CCW about sign * e_axis; cells whose
    centre is inside ``hole`` ((lo, hi) boxes over all axes) are left out. Returns (vertices, faces)."""
    u, w = (axis + 1) % 3, (axis + 2) % 3                                    # e_u x e_w = e_axis
    us = breaks[u][(breaks[u] >= lo[u] - 1e-9) & (breaks[u] <= hi[u] + 1e-9)]
    ws = breaks[w][(breaks[w] >= lo[w] - 1e-9) & (breaks[w] <= hi[w] + 1e-9)]
    gu, gw = np.meshgrid(us, ws, indexing="ij")
    v = np.zeros(gu.shape + (3,))
    v[..., axis], v[..., u], v[..., w] = value, gu, gw
    idx = np.arange(gu.size).reshape(gu.shape)
    faces = []
    for i in range(us.size - 1):
        for j in range(ws.size - 1):
            centre = v[i, j] + (v[i + 1, j + 1] - v[i, j]) / 2
            if hole is not None and (np.all(centre > hole[0]) and np.all(centre < hole[1])):
                continue
            a, b, c, d = idx[i, j], idx[i + 1, j], idx[i + 1, j + 1], idx[i, j + 1]
            faces += [[a, b, c], [a, c, d]] if sign > 0 else [[a, c, b], [a, d, c]]
    return v.reshape(-1, 3), np.array(faces, np.int64).reshape(-1, 3)


def _weld(parts: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[TriMesh, np.ndarray]:
    """Merge (vertices, faces, tag) parts, weld equal positions; returns (mesh, tag int [F])."""
    verts, faces, tags, off = [], [], [], 0
    for v, f, tag in parts:
        verts.append(v)
        faces.append(f + off)
        tags.append(np.full(f.shape[0], tag))
        off += v.shape[0]
    v = np.concatenate(verts).astype(np.float32) + np.float32(0.0)          # -0.0 -> +0.0
    _, first, inv = np.unique(v, axis=0, return_index=True, return_inverse=True)
    f = inv.reshape(-1)[np.concatenate(faces)]
    used, remap = np.unique(f, return_inverse=True)
    return TriMesh(v[first][used], remap.reshape(-1, 3)), np.concatenate(tags)


def tunnel_box(outer, cavity, axis: int, hole_lo, hole_hi, step: float,
               extra=()) -> tuple[TriMesh, np.ndarray]:
    """A solid box ``outer`` ((lo, hi) arrays) with a box-shaped cavity ``cavity`` reached from outside by a
    straight rectangular tunnel along +axis (cross-section hole_lo..hole_hi on the other axes, from the
    cavity's +axis wall to the outer +axis face). Faces of the outer surface and of the tunnel are visible;
    a cavity face is visible exactly where a line through the tunnel's two openings reaches it.
    ``extra``: more cut positions (axis, value) so faces do not straddle a visibility boundary."""
    olo, ohi = (np.asarray(b, float) for b in outer)
    clo, chi = (np.asarray(b, float) for b in cavity)
    hlo, hhi = np.asarray(hole_lo, float), np.asarray(hole_hi, float)
    breaks = []
    for a in range(3):
        cuts = [olo[a], ohi[a], clo[a], chi[a], hlo[a], hhi[a]] + [x for ax, x in extra if ax == a]
        grid = np.arange(olo[a], ohi[a] + 1e-9, step)
        breaks.append(np.unique(np.round(np.concatenate([grid, cuts]), 9)))
    t_in, t_out = chi[axis], ohi[axis]
    hole_box = (np.where(np.arange(3) == axis, -np.inf, hlo), np.where(np.arange(3) == axis, np.inf, hhi))
    parts = []
    for a in range(3):
        for sign, val in ((-1, olo[a]), (1, ohi[a])):                        # outer surface, outward
            holed = hole_box if (a == axis and sign > 0) else None
            parts.append((*_rect(a, val, sign, olo, ohi, breaks, holed), 0))
        for sign, val in ((1, clo[a]), (-1, chi[a])):                        # cavity walls, into the cavity
            holed = hole_box if (a == axis and sign < 0) else None
            parts.append((*_rect(a, val, sign, clo, chi, breaks, holed), 2))
        if a != axis:                                                        # tunnel walls, into the tunnel
            lo_t, hi_t = hlo.copy(), hhi.copy()
            lo_t[axis], hi_t[axis] = t_in, t_out
            parts.append((*_rect(a, hlo[a], 1, lo_t, hi_t, breaks), 1))
            parts.append((*_rect(a, hhi[a], -1, lo_t, hi_t, breaks), 1))
    mesh, tag = _weld(parts)
    others = [a for a in range(3) if a != axis]

    def slack(p: np.ndarray) -> np.ndarray:
        gap = t_in - p[:, axis]                                              # <= 0: on the holed wall
        k = (t_out - p[:, axis]) / np.where(gap > 1e-6, gap, np.nan)        # opening-to-opening scale
        out = np.full(p.shape[0], np.inf)
        for a in others:
            reach_lo = p[:, a] + (hlo[a] - p[:, a]) * k
            reach_hi = p[:, a] + (hhi[a] - p[:, a]) * k
            out = np.minimum(out, np.minimum(hhi[a] - reach_lo, reach_hi - hlo[a]))
        return np.where(np.isnan(out), -np.inf, out)

    return mesh, _truth(mesh, slack, tag == 2)


def box_with_hole(step: float = 0.3) -> tuple[TriMesh, np.ndarray]:
    """A 2 x 2 x 2 box with 0.1-thick walls and a 0.2 x 0.2 square hole in its top: the cavity floor and
    the lower part of the side walls (below y = 0.5) are seen through the hole, the rest of the inside is
    not."""
    return tunnel_box(([-1, -1, -1], [1, 1, 1]), ([-0.9, -0.9, -0.9], [0.9, 0.9, 0.9]), 1,
                      [-0.1, 0, -0.1], [0.1, 0, 0.1], step, extra=[(1, 0.5)])


def mouth(step: float = 0.2) -> tuple[TriMesh, np.ndarray]:
    """A head (2 x 2 x 2 solid box) with a wide, thin mouth slit in its front (+z) leading into a deeper,
    taller mouth cavity: the lips' inner sides and the cavity corners are hidden."""
    return tunnel_box(([-1, -1, -1], [1, 1, 1]), ([-0.6, -0.8, -0.4], [0.6, -0.1, 0.7]), 2,
                      [-0.4, -0.5, 0], [0.4, -0.4, 0], step)


def _revolve(profile: np.ndarray, n: int, rows: np.ndarray) -> tuple[TriMesh, np.ndarray]:
    """Surface of revolution about +y of a polyline ``profile`` [K, 2] of (r, y), n segments around;
    faces CCW about d(profile) x d(angle). rows int [K-1]: subdivisions per segment. Returns (mesh, segment
    index of each face)."""
    pts, seg = [], []
    for k in range(profile.shape[0] - 1):
        t = np.linspace(0, 1, rows[k] + 1)
        t = t if k == profile.shape[0] - 2 else t[:-1]                       # shared ends appear once
        pts.append(profile[k] + t[:, None] * (profile[k + 1] - profile[k]))
        seg.append(np.full(t.size, k))
    pr, sg = np.concatenate(pts), np.concatenate(seg)
    pr[:, 0] = np.where(np.abs(pr[:, 0]) < 1e-9, 0.0, pr[:, 0])              # poles weld (sin(pi) != 0)
    ang = 2 * np.pi * np.arange(n) / n
    v = np.stack([pr[:, None, 0] * np.cos(ang), np.broadcast_to(pr[:, None, 1], (pr.shape[0], n)),
                  pr[:, None, 0] * np.sin(ang)], -1)                          # [K', n, 3]
    idx = np.arange(v.shape[0] * n).reshape(v.shape[0], n)
    faces, tag = [], []
    for i in range(v.shape[0] - 1):
        for j in range(n):
            a, b, c, d = idx[i, j], idx[i + 1, j], idx[i + 1, (j + 1) % n], idx[i, (j + 1) % n]
            faces += [[a, c, b], [a, d, c]]
            tag += [sg[i], sg[i]]
    mesh, _ = _weld([(v.reshape(-1, 3), np.array(faces), 0)])
    tag = np.array(tag)
    f = mesh.faces
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])  # drop the fans' degenerate faces
    return TriMesh(mesh.vertices, f[ok]), tag[ok]


def deep_cup(n: int = 24) -> tuple[TriMesh, np.ndarray]:
    """An open cylinder with a 0.1-thick wall and bottom, 2.1 tall and 0.8 wide inside: every face is
    visible (its cavity is convex and open at the top), the bottom corners only from a narrow cone."""
    prof = np.array([[0, 0], [0.5, 0], [0.5, 2.2], [0.4, 2.2], [0.4, 0.1], [0, 0.1]], float)
    mesh, _ = _revolve(prof, n, np.array([2, 8, 1, 8, 2]))
    return mesh, np.ones(mesh.num_faces, bool)


def hollow_sphere_with_window(n: int = 32, rings: int = 12) -> tuple[TriMesh, np.ndarray]:
    """A sphere of radius 1 with a 0.4-thick shell and a small round window at the top: a vertical
    cylindrical hole of radius 0.15. Through it the bottom of the inside is seen, its upper half is not."""
    r_out, r_in, a = 1.0, 0.6, 0.15
    th_o, th_i = np.arcsin(a / r_out), np.arcsin(a / r_in)
    outer = [[r_out * np.sin(t), r_out * np.cos(t)] for t in np.linspace(np.pi, th_o, rings + 1)]
    inner = [[r_in * np.sin(t), r_in * np.cos(t)] for t in np.linspace(th_i, np.pi, rings + 1)]
    prof = np.array(outer + inner)
    mesh, seg = _revolve(prof, n, np.ones(prof.shape[0] - 1, int))
    y_i, y_o = r_in * np.cos(th_i), r_out * np.cos(th_o)

    def slack(p: np.ndarray, radius: float) -> np.ndarray:
        gap = y_i - p[:, 1]
        k = (y_o - p[:, 1]) / np.where(gap > 1e-6, gap, np.nan)
        centre = p[:, [0, 2]] * (1 - k[:, None])                              # projected inner disc centre
        out = radius * k + radius - np.linalg.norm(centre, axis=1)
        return np.where(np.isnan(out), -np.inf, out)

    cavity = seg >= rings + 1                                                # the inner sphere's faces
    sure = _truth(mesh, lambda p: slack(p, a * np.cos(np.pi / n)), cavity)  # the n-gon's inscribed circle
    maybe = _truth(mesh, lambda p: slack(p, a), cavity)                      # its circumscribed circle
    if not np.array_equal(sure, maybe):
        raise ValueError("faces too close to the window's visibility boundary: change rings")
    return mesh, sure


def shell_with_inner_object() -> tuple[TriMesh, np.ndarray]:
    """A closed icosphere (radius 1) around an inner icosphere and a cube: only the outer shell is
    visible."""
    v, f = icosphere(3)
    vi, fi = icosphere(2, 0.5)
    cube_v = np.array([[x, y, z] for x in (-0.2, 0.2) for y in (0.55, 0.75) for z in (-0.2, 0.2)])
    cube_f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    mesh, tag = _weld([(v, f, 0), (vi, fi, 1), (cube_v, cube_f, 1)])
    return mesh, tag == 0
