"""Tangent-space normal-map baking from the dense mesh onto the low mesh's UV atlas (paper 6.4), and the
paper's baked / geometric normal-error metrics (paper 6.1, footnote 3; Table 2 "Baked Mean", "Geo Mean").

Bake, per texel of the ``size`` x ``size`` map (texel (r, c) centre at u = (c + .5) / size,
v = (r + .5) / size, glTF UVs):
  1. G-buffer: ``rasterize_uv`` of the low mesh gives (face, barycentrics); ``interpolate`` gives world
     position p, normal n_low and tangent t_low (xyz, w) of the texel.
  2. Frame: (T, B, N) = ``tangents.shading_frame(n_low, t_low)``: N = normalize(n_low),
     T = Gram-Schmidt(t_low.xyz, N), B = sign(t_low.w) * cross(N, T) -- the frame the viewer rebuilds.
  3. UV-reliability filter: texels of faces whose UV triangle is degenerate (``face_uv_derivatives``)
     or whose UV map is strongly anisotropic (singular values of [dP/ds, dP/dt] with ratio > 100), and
     texels whose frame is degenerate, get the neutral normal (0, 0, 1).
  4. Closest point q on the dense mesh to p (one BVH, reusable through ``dense_bvh``); its smooth normal
     n_hi = normalize(sum_k bary_k * n_dense[v_k]). Hits farther than max_distance_fraction x the low
     mesh's bounding-box diagonal are rejected to (0, 0, 1).
  5. Tangent-space normal n_ts = (n_hi . T, n_hi . B, n_hi . N) (exact inverse of the viewer's
     n = normalize(x T + y B + z N) because the frame is orthonormal), RGB8 = round((n_ts + 1) / 2 * 255).
  6. Gutter: ``dilate`` rounds of filling each empty texel with the renormalised mean of its valid
     8-neighbours (then it counts as valid), so bilinear filtering and mip-maps at chart seams read
     baked values. Texels still empty are (128, 128, 255).

Work: one rasterisation (O(F_low + size^2)), size^2 closest-point queries of O(log F_dense) each, and
dilate x 8 full-image shifted adds (each ~12 bytes x size^2). Host numpy + numba (rasteriser and BVH);
the GPU port keeps the same stages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.errors import ConfigError, MeshError
from engine.geometry.bvh import Bvh, build_bvh
from engine.geometry.mesh import TriMesh, face_areas, validate_mesh, vertex_normals
from engine.geometry.rasterize import interpolate, rasterize_uv
from engine.geometry.tangents import face_uv_derivatives, shading_frame

NEUTRAL_RGB = (128, 128, 255)
MAX_ANISOTROPY = 100.0          # UV-reliability: largest allowed ratio of the UV map's singular values


@dataclass(frozen=True)
class BakeReport:
    """texels: texels covered by the low mesh; rejected_distance: covered texels whose closest dense
    point was beyond the distance limit; rejected_uv: covered texels on unreliable UVs / frames;
    seconds: wall time of the bake (BVH build included when it was not passed in)."""

    texels: int
    rejected_distance: int
    rejected_uv: int
    seconds: float


def encode_normals(n: np.ndarray) -> np.ndarray:
    """Tangent-space unit vectors float [..., 3] -> uint8 RGB [..., 3] = round((n + 1) / 2 * 255)."""
    return np.clip(np.rint((np.asarray(n, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def decode_normals(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] -> float64 [..., 3] tangent-space vectors rgb / 255 * 2 - 1 (not renormalised)."""
    return np.asarray(rgb, np.float64) / 127.5 - 1.0


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


def _check_low(low: TriMesh) -> None:
    validate_mesh(low, "low-poly mesh")
    nv = low.num_vertices
    for name, arr, width in (("uvs", low.uvs, 2), ("normals", low.normals, 3), ("tangents", low.tangents, 4)):
        if arr is None:
            raise MeshError(f"low-poly mesh has no {name}",
                            "run unwrap_uv and compute_tangents on it before baking")
        if np.shape(arr) != (nv, width) or not np.isfinite(arr).all():
            raise MeshError(f"low-poly {name} have shape {np.shape(arr)} or non-finite values",
                            f"give finite {name} of shape ({nv}, {width})")


def dense_normals(dense: TriMesh) -> np.ndarray:
    """The dense mesh's smooth vertex normals float32 [V, 3]: its own, else area-weighted."""
    if dense.normals is not None and np.shape(dense.normals) == (dense.num_vertices, 3):
        return np.asarray(dense.normals, np.float32)
    return vertex_normals(dense.vertices, dense.faces)


def _dense_normal_at(dense: TriMesh, normals: np.ndarray, bvh: Bvh, points: np.ndarray,
                     max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Closest-point smooth normal of the dense mesh: (unit normals float64 [P, 3], hit bool [P])."""
    hits = bvh.closest_point(points, max_distance=max_distance)
    hit = hits.face_id >= 0
    tri = dense.faces[np.where(hit, hits.face_id, 0)]                       # [P, 3]
    b = hits.bary.astype(np.float64)
    n = sum(b[:, k:k + 1] * normals[tri[:, k]] for k in range(3))          # [P, 3]
    return _normalize(n), hit


def unreliable_uv_faces(low: TriMesh) -> np.ndarray:
    """bool [F]: faces whose UV triangle is degenerate or whose UV map is anisotropic beyond
    MAX_ANISOTROPY (ratio of the singular values of the 3 x 2 Jacobian [dP/ds, dP/dt])."""
    dpds, dpdt, ok = face_uv_derivatives(low.vertices, low.faces, low.uvs)
    a, b, c = (np.einsum("fi,fi->f", x, y) for x, y in ((dpds, dpds), (dpds, dpdt), (dpdt, dpdt)))
    root = np.sqrt(np.maximum((a - c) ** 2 + 4 * b * b, 0.0))
    s_max2, s_min2 = 0.5 * (a + c + root), 0.5 * (a + c - root)           # eigenvalues of J^T J
    ok &= s_min2 * MAX_ANISOTROPY ** 2 > s_max2
    return ~ok


def dilate_normals(values: np.ndarray, valid: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow ``values`` float32 [H, W, 3] from ``valid`` bool [H, W] texels by ``rounds`` 8-neighbour
    rings (renormalised mean of valid neighbours). Returns new (values, valid); inputs untouched."""
    vals = values.copy()
    ok = valid.copy()
    h, w = ok.shape
    for _ in range(rounds):
        pad_v = np.pad(vals * ok[..., None], ((1, 1), (1, 1), (0, 0)))
        pad_m = np.pad(ok.astype(np.float32), 1)
        acc = np.zeros_like(vals)
        cnt = np.zeros((h, w), np.float32)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == 1 and dx == 1:
                    continue
                acc += pad_v[dy:dy + h, dx:dx + w]
                cnt += pad_m[dy:dy + h, dx:dx + w]
        grow = (~ok) & (cnt > 0)
        if not grow.any():
            break
        vals[grow] = _normalize(acc[grow])
        ok |= grow
    return vals, ok


def bake_normal_map(low: TriMesh, dense: TriMesh, size: int = 1024, max_distance_fraction: float = 0.01,
                    dilate: int = 8, dense_bvh: Bvh | None = None) -> tuple[np.ndarray, BakeReport]:
    """Bake the dense mesh's normals into a tangent-space normal map on ``low``'s UV atlas.

    low: TriMesh with uvs float32 [V, 2] (glTF), normals float32 [V, 3], tangents float32 [V, 4]
        (``compute_tangents``); dense: TriMesh (its ``normals`` if present, else smooth ones).
    size: map edge in texels; max_distance_fraction: closest-point limit as a share of low's bounding-box
        diagonal (> 0); dilate: gutter rings (>= 0); dense_bvh: ``build_bvh(dense.vertices, dense.faces)``
        to reuse across calls.
    Returns (uint8 [size, size, 3] RGB normal map, row 0 = v in [0, 1/size), BakeReport).
    """
    t0 = time.perf_counter()
    _check_low(low)
    validate_mesh(dense, "dense mesh")
    if int(size) != size or not 16 <= size <= 16384:
        raise ConfigError(f"normal map size {size} out of range", "use an integer in [16, 16384]")
    if not (np.isfinite(max_distance_fraction) and max_distance_fraction > 0):
        raise ConfigError(f"bake distance fraction {max_distance_fraction} is not > 0", "use e.g. 0.01")
    if int(dilate) != dilate or dilate < 0:
        raise ConfigError(f"dilation {dilate} is not a count >= 0", "use e.g. 8 texels")
    bvh = dense_bvh if dense_bvh is not None else build_bvh(dense.vertices, dense.faces)

    face_id, bary = rasterize_uv(low.uvs, low.faces, int(size))
    covered = face_id >= 0                                                  # [S, S]
    fid = face_id[covered]                                                  # [P]
    pos, n_low, t_low = (interpolate(a, low.faces, face_id, bary)[covered]    # [P, 3], [P, 3], [P, 4]
                         for a in (low.vertices, low.normals, low.tangents))
    t_axis, b_axis, n_axis, frame_ok = shading_frame(n_low, t_low)
    reliable = frame_ok & ~unreliable_uv_faces(low)[fid]                   # [P]

    n_ts = np.tile(np.array([0.0, 0.0, 1.0]), (fid.shape[0], 1))            # [P, 3]
    query = np.flatnonzero(reliable)
    n_hi, hit = _dense_normal_at(dense, dense_normals(dense), bvh, pos[query],
                                 max_distance_fraction * low.diagonal())
    q = query[hit]
    n_hi = n_hi[hit]
    n_ts[q] = np.stack([np.einsum("pi,pi->p", n_hi, ax[q]) for ax in (t_axis, b_axis, n_axis)], axis=1)

    image = np.zeros((size, size, 3), np.float32)
    image[covered] = n_ts
    image, valid = dilate_normals(image, covered, int(dilate))
    image[~valid] = (0.0, 0.0, 1.0)
    report = BakeReport(int(fid.shape[0]), int(query.shape[0] - q.shape[0]),
                        int(fid.shape[0] - query.shape[0]), time.perf_counter() - t0)
    return encode_normals(image), report


def _sample_low(low: TriMesh, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface samples on ``low``: (face ids int64 [n], barycentrics float64 [n, 3])."""
    if int(n) != n or n < 1:
        raise ConfigError(f"sample count {n} is not >= 1", "use e.g. 100000")
    areas = face_areas(low.vertices, low.faces)
    if not areas.sum() > 0:
        raise MeshError("low-poly mesh has zero surface area", "give a mesh with non-degenerate faces")
    rng = np.random.default_rng(seed)
    fid = rng.choice(low.num_faces, size=int(n), p=areas / areas.sum())
    r1, r2 = rng.random(int(n)), rng.random(int(n))
    s = np.sqrt(r1)
    return fid, np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=1)


def _lerp(attr: np.ndarray, faces: np.ndarray, fid: np.ndarray, bary: np.ndarray) -> np.ndarray:
    tri = faces[fid]                                                        # [n, 3]
    a = np.asarray(attr, np.float64)
    return sum(bary[:, k:k + 1] * a[tri[:, k]] for k in range(3))


def sample_normal_map(normal_map: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup (clamp to edge, texel centres at (i + .5) / size) of the decoded map at glTF
    uv [n, 2]; returns float64 [n, 3] (filtered, not renormalised -- the shader normalises later)."""
    h, w = normal_map.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = uv[:, 1] * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    xi = [np.clip(x0 + d, 0, w - 1).astype(np.int64) for d in (0, 1)]
    yi = [np.clip(y0 + d, 0, h - 1).astype(np.int64) for d in (0, 1)]
    d = [[decode_normals(normal_map[yi[r], xi[c]]) for c in (0, 1)] for r in (0, 1)]
    return (1 - fy) * ((1 - fx) * d[0][0] + fx * d[0][1]) + fy * ((1 - fx) * d[1][0] + fx * d[1][1])


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.einsum("pi,pi->p", _normalize(a), _normalize(b)), -1.0, 1.0)))


def _error(low: TriMesh, dense: TriMesh, n: int, seed: int, dense_bvh: Bvh | None, use_map: bool) -> float:
    fid, b = _sample_low(low, n, seed)
    points = _lerp(low.vertices, low.faces, fid, b)
    normals = low.normals if low.normals is not None else vertex_normals(low.vertices, low.faces)
    n_low = _lerp(normals, low.faces, fid, b)
    if use_map:
        t_axis, b_axis, n_axis, _ = shading_frame(n_low, _lerp(low.tangents, low.faces, fid, b))
        c = sample_normal_map(low.normal_map, _lerp(low.uvs, low.faces, fid, b))
        n_low = c[:, 0:1] * t_axis + c[:, 1:2] * b_axis + c[:, 2:3] * n_axis
    bvh = dense_bvh if dense_bvh is not None else build_bvh(dense.vertices, dense.faces)
    n_true, _ = _dense_normal_at(dense, dense_normals(dense), bvh, points, np.inf)
    return float(_angles_deg(n_low, n_true).mean())


def baked_normal_error(low_with_map: TriMesh, dense: TriMesh, n: int = 100_000, seed: int = 0,
                       dense_bvh: Bvh | None = None) -> float:
    """The paper's "Baked Mean" (degrees): n area-uniform samples on the low mesh; the normal map
    (uint8 [H, W, 3] in ``low_with_map.normal_map``) is read bilinearly at their UVs and taken to world
    space with the shared frame; compared with the dense mesh's smooth normal at the closest point."""
    _check_low(low_with_map)
    validate_mesh(dense, "dense mesh")
    nm = low_with_map.normal_map
    if nm is None or np.ndim(nm) != 3 or np.shape(nm)[2] != 3:
        raise MeshError("low-poly mesh has no RGB normal map", "bake one with bake_normal_map first")
    return _error(low_with_map, dense, n, seed, dense_bvh, use_map=True)


def geometric_normal_error(low: TriMesh, dense: TriMesh, n: int = 100_000, seed: int = 0,
                           dense_bvh: Bvh | None = None) -> float:
    """The paper's "Geo Mean" (degrees): as ``baked_normal_error`` (same samples for the same seed) but
    with the low mesh's interpolated vertex normal (its own, else area-weighted) and no map."""
    validate_mesh(low, "low-poly mesh")
    validate_mesh(dense, "dense mesh")
    return _error(low, dense, n, seed, dense_bvh, use_map=False)
