"""Triangle rasterisation on the host: UV-space coverage and orthographic z-buffered views (numba, CPU).

The engine's CPU rasteriser (``engine.geometry.rasterize`` re-exports it) and the reference of the GPU ones,
shared by ``rasterize_uv.py`` and ``rasterize_views.py``.

Maths. A triangle with screen vertices a0, a1, a2 covers a sample point p when the three edge functions
  E_i(p) = cross(a_{i+2} - a_{i+1}, p - a_{i+1})          (i = 0, 1, 2; indices mod 3)
have the sign of the triangle's doubled signed area A = E_0(a0); barycentrics are b_i = E_i(p) / A
(b_i is the weight of vertex i). Samples exactly on an edge (E_i = 0) follow a top-left-style rule so a
point on an edge shared by two triangles is covered by exactly one of them: after orienting the edge
so the triangle has positive area, the edge owns its points when its direction e satisfies
(e_y > 0) or (e_y == 0 and e_x < 0); the neighbour traverses the shared edge the other way and does not.
Edge functions are evaluated from the lexicographically smaller endpoint so that both triangles compute
bit-identical values (with opposite sign) on their shared edge.

Layouts and conventions:
  rasterize_uv:   UVs float32 [V, 2], glTF (origin top-left, v down). Texel (row r, col c) has its centre
                  at u = (c + 0.5) / size, v = (r + 0.5) / size. Both windings are covered (mirrored charts).
  rasterize_ortho: vertices float32 [V, 3] world (glTF, +Y up), an ``OrthoView`` (engine: ``OrthoCamera``)
                  gives pixel coordinates (x right, y down, centres at +0.5) and depth along the view
                  direction from the camera plane; depth is affine in screen space (orthographic), so it
                  is interpolated with the screen barycentrics. Nearest depth wins; ties keep the face
                  drawn first (lowest index). Front faces (normal towards the camera) appear clockwise in
                  the y-down pixel frame.
Outputs: face_id int32 [H, W] (-1 empty), bary float32 [H, W, 3], depth float32 [H, W] (inf empty).

Limits: a serial loop over faces then over the pixels of each face's bounding box (O(F + covered px));
a triangle's bounding box is clipped to the image. Degenerate (zero-area) triangles cover nothing.
Floor on the work: every covered pixel is written once per covering face, 1 + 3 + 1 floats per pixel.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numba import njit

from triton_kernels.errors import ConfigError, MeshError


class OrthoView(Protocol):
    """What the rasterisers read of an orthographic camera (``engine.texture.views.OrthoCamera``)."""

    half_extent: float

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right [3], image_up [3], direction [3]) float64, orthonormal and right-handed."""
        ...

    def world_to_pixel(self, points: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """World points [N, 3] -> (px float32 [N, 2], x right, y down, centres at +0.5; depth float32 [N])."""
        ...


# --------------------------------------------------------------------------------------------------
# Reference (numpy, vectorised over pixels; slow, for tests on small inputs)
# --------------------------------------------------------------------------------------------------

def _edge_ref(ax, ay, bx, by, px, py):
    """Edge function from the lexicographically smaller endpoint; returns (value, owns_boundary)."""
    swap = (bx < ax) or (bx == ax and by < ay)
    if swap:
        val = -((ax - bx) * (py - by) - (ay - by) * (px - bx))
    else:
        val = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    return val


def rasterize_points_ref(xy: np.ndarray, faces: np.ndarray, depth: np.ndarray | None,
                         width: int, height: int, front_sign: float = 0.0):
    """Reference rasteriser: xy float [V, 2] pixel coordinates (sample at centres c + 0.5), optional
    per-vertex depth [V]; ``front_sign`` != 0 culls faces whose signed area has the other sign.
    Returns (face_id int32 [H, W], bary float32 [H, W, 3], depth float32 [H, W])."""
    xy = np.asarray(xy, dtype=np.float64)
    fid = np.full((height, width), -1, np.int32)
    bary = np.zeros((height, width, 3), np.float32)
    zbuf = np.full((height, width), np.inf, np.float32)
    py, px = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    for f, tri in enumerate(np.asarray(faces)):
        a = xy[tri]
        area = _edge_ref(a[1, 0], a[1, 1], a[2, 0], a[2, 1], a[0, 0], a[0, 1])
        if area == 0.0 or (front_sign != 0.0 and area * front_sign < 0.0):
            continue
        s = 1.0 if area > 0 else -1.0
        inside = np.ones((height, width), bool)
        bs = []
        for i in range(3):
            b, c = a[(i + 1) % 3], a[(i + 2) % 3]
            e = s * _edge_ref(b[0], b[1], c[0], c[1], px, py)
            ex, ey = s * (c[0] - b[0]), s * (c[1] - b[1])
            owns = (ey > 0) or (ey == 0 and ex < 0)
            inside &= (e > 0) | ((e == 0) & owns)
            bs.append(e / abs(area))
        b3 = np.stack(bs, -1)
        z = b3 @ depth[tri] if depth is not None else np.zeros((height, width))
        take = inside & (z < zbuf) if depth is not None else inside
        fid[take], bary[take], zbuf[take] = f, b3[take], z[take]
    return fid, bary, zbuf


def rasterize_uv_ref(uvs: np.ndarray, faces: np.ndarray, size: int):
    """Reference for ``rasterize_uv`` (later faces overwrite earlier ones where charts overlap)."""
    fid, bary, _ = rasterize_points_ref(np.asarray(uvs, np.float64) * size, faces, None, size, size)
    return fid, bary


# --------------------------------------------------------------------------------------------------
# Kernel (numba, CPU)
# --------------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _edge(ax, ay, bx, by, px, py):
    if bx < ax or (bx == ax and by < ay):
        return -((ax - bx) * (py - by) - (ay - by) * (px - bx))
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@njit(cache=True)
def _raster_kernel(xy, faces, zv, use_depth, front_sign, fid, bary, zbuf):
    """xy float64 [V, 2] pixel coords, faces int32 [F, 3], zv float64 [V] depth (ignored unless
    use_depth), front_sign: 0 = both windings, else keep only faces whose signed area has that sign.
    Writes fid/bary/zbuf in place (later faces overwrite when not use_depth)."""
    h, w = fid.shape
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0, x1, y1, x2, y2 = xy[i0, 0], xy[i0, 1], xy[i1, 0], xy[i1, 1], xy[i2, 0], xy[i2, 1]
        area = _edge(x1, y1, x2, y2, x0, y0)
        if area == 0.0 or not np.isfinite(area) or (front_sign != 0.0 and area * front_sign < 0.0):
            continue
        s = 1.0 if area > 0.0 else -1.0
        inv = 1.0 / abs(area)
        # ownership of boundary points per edge (edge i is opposite vertex i)
        o0 = (s * (y2 - y1) > 0.0) or (y2 == y1 and s * (x2 - x1) < 0.0)
        o1 = (s * (y0 - y2) > 0.0) or (y0 == y2 and s * (x0 - x2) < 0.0)
        o2 = (s * (y1 - y0) > 0.0) or (y1 == y0 and s * (x1 - x0) < 0.0)
        c_lo = max(int(np.floor(min(x0, x1, x2) - 0.5)), 0)
        c_hi = min(int(np.ceil(max(x0, x1, x2) - 0.5)), w - 1)
        r_lo = max(int(np.floor(min(y0, y1, y2) - 0.5)), 0)
        r_hi = min(int(np.ceil(max(y0, y1, y2) - 0.5)), h - 1)
        for r in range(r_lo, r_hi + 1):
            py = r + 0.5
            for c in range(c_lo, c_hi + 1):
                px = c + 0.5
                e0 = s * _edge(x1, y1, x2, y2, px, py)
                if e0 < 0.0 or (e0 == 0.0 and not o0):
                    continue
                e1 = s * _edge(x2, y2, x0, y0, px, py)
                if e1 < 0.0 or (e1 == 0.0 and not o1):
                    continue
                e2 = s * _edge(x0, y0, x1, y1, px, py)
                if e2 < 0.0 or (e2 == 0.0 and not o2):
                    continue
                b0, b1, b2 = e0 * inv, e1 * inv, e2 * inv
                if use_depth:
                    z = b0 * zv[i0] + b1 * zv[i1] + b2 * zv[i2]
                    if not z < zbuf[r, c]:
                        continue
                    zbuf[r, c] = z
                fid[r, c] = f
                bary[r, c, 0] = b0
                bary[r, c, 1] = b1
                bary[r, c, 2] = b2


# --------------------------------------------------------------------------------------------------
# Public launchers
# --------------------------------------------------------------------------------------------------

def _check_faces(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    f = np.ascontiguousarray(faces, dtype=np.int32)
    if f.ndim != 2 or f.shape[1] != 3:
        raise MeshError(f"faces must have shape [F, 3], got {f.shape}", "pass triangle indices")
    if f.size and (f.min() < 0 or f.max() >= num_vertices):
        raise MeshError(f"face indices outside [0, {num_vertices})", "re-export the mesh")
    return f


def _check_size(size: int, what: str) -> int:
    if int(size) != size or not 1 <= size <= 16384:
        raise ConfigError(f"{what} {size} out of range", "use an integer in [1, 16384]")
    return int(size)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise triangles in UV space.

    uvs:   float32 [V, 2] glTF UVs (origin top-left, v down); faces: int32 [F, 3].
    size:  atlas edge in texels; texel (r, c) centre is at u = (c + 0.5) / size, v = (r + 0.5) / size.
    Returns face_id int32 [size, size] (-1 where no face) and bary float32 [size, size, 3]. Overlapping
    charts: the highest face index wins. Shared edges are covered once (top-left rule).
    """
    size = _check_size(size, "atlas size")
    uv = np.asarray(uvs, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2 or not np.isfinite(uv).all():
        raise MeshError(f"UVs must be finite with shape [V, 2], got {uv.shape}", "re-unwrap the mesh")
    f = _check_faces(faces, uv.shape[0])
    fid = np.full((size, size), -1, np.int32)
    bary = np.zeros((size, size, 3), np.float32)
    zbuf = np.empty((1, 1), np.float32)
    _raster_kernel(np.ascontiguousarray(uv * size), f, np.zeros(1), False, 0.0, fid, bary, zbuf)
    return fid, bary


def rasterize_ortho(vertices: np.ndarray, faces: np.ndarray, camera: OrthoView, resolution: int,
                    cull_backfaces: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffered orthographic rasterisation of a mesh seen by ``camera``.

    vertices: float32 [V, 3] world (glTF); faces: int32 [F, 3] CCW front faces.
    Returns face_id int32 [R, R] (-1 empty), bary float32 [R, R, 3] (weights of the face's vertices 0, 1, 2),
    depth float32 [R, R] = distance along the viewing direction from the camera plane (inf where empty).
    ``cull_backfaces`` drops faces whose normal points away from the camera.
    """
    res = _check_size(resolution, "view resolution")
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
        raise MeshError(f"vertices must be finite with shape [V, 3], got {v.shape}", "repair the mesh")
    f = _check_faces(faces, v.shape[0])
    px, depth = camera.world_to_pixel(v, res)
    fid = np.full((res, res), -1, np.int32)
    bary = np.zeros((res, res, 3), np.float32)
    zbuf = np.full((res, res), np.inf, np.float32)
    # world CCW seen from the camera is clockwise in the y-down pixel frame: negative signed area
    front_sign = -1.0 if cull_backfaces else 0.0
    _raster_kernel(np.ascontiguousarray(px, dtype=np.float64), f, depth.astype(np.float64), True,
                   front_sign, fid, bary, zbuf)
    return fid, bary, zbuf


def interpolate(attr: np.ndarray, faces: np.ndarray, face_id: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of a per-vertex attribute.

    attr: [V, C] (or [V]); faces int32 [F, 3]; face_id int32 [H, W]; bary float32 [H, W, 3].
    Returns float32 [H, W, C] (or [H, W]) with zeros where face_id == -1.
    """
    a = np.asarray(attr)
    squeeze = a.ndim == 1
    a = a.reshape(a.shape[0], -1).astype(np.float32, copy=False)
    fid = np.asarray(face_id)
    if bary.shape != fid.shape + (3,):
        raise ConfigError(f"bary shape {bary.shape} does not match face_id {fid.shape}",
                          "pass the outputs of one rasterize call")
    out = np.zeros(fid.shape + (a.shape[1],), np.float32)
    hit = fid >= 0
    tri = np.asarray(faces)[fid[hit]]                         # [N, 3]
    b = bary[hit]                                            # [N, 3]
    out[hit] = (a[tri[:, 0]] * b[:, 0:1] + a[tri[:, 1]] * b[:, 1:2] + a[tri[:, 2]] * b[:, 2:3])
    return out[..., 0] if squeeze else out
