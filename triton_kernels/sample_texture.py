"""Per-pixel surface attributes of rasterised samples (numba-cuda): world position and the shading normal
with a tangent-space normal map, sampled bilinearly with REPEAT wrap. The device twin of the CPU path of
``engine.texture.render_conditions``, whose maths is the reference here (``interpolate`` +
``shading_normals_ref`` + ``sample_bilinear_repeat``, which the engine's CPU path calls).

Maths per sample (face f, barycentrics b = (b0, b1, b2), vertex indices i0, i1, i2), float32 unless noted:
  p  = v[i0] b0 + v[i1] b1 + v[i2] b2                       (order of ``rasterize_host.interpolate``)
  n  = N / max(|N|, 1e-12),  N = sum b_j n[i_j]              (smooth vertex normals)
  with a normal map (uvs, tangents [V, 4] and an 8-bit RGB map of H x W texels):
    t4 = sum b_j t[i_j];  t = T / max(|T|, 1e-12), T = t4.xyz - n (t4.xyz . n)   (Gram-Schmidt)
    B  = s cross(n, t), s = -1 where t4.w < 0 else +1         (glTF / MikkTSpace)
    uv = sum b_j uv[i_j];  x = u W - 0.5, y = v H - 0.5 in float64, x0 = floor(x), fx = x - x0, taps
         (x0, x0 + 1) mod W, (y0, y0 + 1) mod H (REPEAT), bilinear in float32 of rgb / 255 * 2 - 1 = ts
    n  = normalize(t ts.x + B ts.y + n ts.z)
Empty pixels (face id -1) get zeros for both outputs.

Layouts: face_id int32 [P] and bary float32 [P, 3] (P = K R R pixels, any order; the rasteriser's
row-major [K, R, R]); vertices float32 [V, 3], faces int32 [F, 3], normals float32 [V, 3], uvs float32
[V, 2], tangents float32 [V, 4], normal_map uint8 [H, W, 3]; outputs position and normal float32 [P, 3].
Grid-stride over pixels, ``PX_PER_THREAD`` each (coalesced; keeps the simulator's thread count low).

Limits: P < 2^63; the normal map is read through the texture path of the L1 only by luck of locality
(neighbouring pixels hit neighbouring UVs). Floor per covered pixel: read 4 + 12 B (face id, bary),
gather 3 x (12 + 12 + 8 + 16) B of vertex attributes (mostly cache hits) and 4 x 3 B of the map, write
24 B; ~60 FLOPs. 10 views at 1024^2 (~4M covered pixels): ~0.3 GB of traffic, ~0.1 ms at 3 TB/s.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import float32, float64, int64

from triton_kernels.errors import ConfigError
from triton_kernels.numba_cuda import cuda_module, kernel_device, launch, view
from triton_kernels.rasterize_host import interpolate

cuda = cuda_module()

PX_PER_THREAD = 32


# --------------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------------

def sample_bilinear_repeat(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup with REPEAT wrap. image [H, W, C] (any dtype), uv [..., 2] glTF UVs (origin
    top-left); texel (r, c) centre at ((c + 0.5) / W, (r + 0.5) / H). Returns float32 [..., C] in the
    image's units."""
    h, w = image.shape[:2]
    x = uv[..., 0].astype(np.float64) * w - 0.5
    y = uv[..., 1].astype(np.float64) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0 = x0.astype(np.int64) % w
    y0 = y0.astype(np.int64) % h
    x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    img = image.astype(np.float32).reshape(h, w, -1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


def shading_normals_ref(faces: np.ndarray, face_id: np.ndarray, bary: np.ndarray, vnormals: np.ndarray,
                        uvs: np.ndarray | None = None, tangents: np.ndarray | None = None,
                        normal_map: np.ndarray | None = None) -> np.ndarray:
    """World-space unit normals float32 [H, W, 3] at rasterised samples (face_id int32 [H, W], bary
    float32 [H, W, 3]) from unit vertex normals vnormals float32 [V, 3] over faces int32 [F, 3]. The
    tangent-space normal map (uint8 [Hm, Wm, 3]) is applied only when uvs float32 [V, 2], tangents
    float32 [V, 4] and normal_map are all given. The engine's CPU ``shading_normals``."""
    hit = face_id >= 0
    n = interpolate(vnormals, faces, face_id, bary)[hit]                           # [N, 3]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    if normal_map is not None and tangents is not None and uvs is not None:
        t4 = interpolate(tangents, faces, face_id, bary)[hit]                      # [N, 4]
        t = t4[:, :3] - n * np.sum(t4[:, :3] * n, axis=1, keepdims=True)
        t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        sign = np.where(t4[:, 3:4] < 0, -1.0, 1.0).astype(np.float32)
        b = sign * np.cross(n, t)
        uv = interpolate(uvs, faces, face_id, bary)[hit]                           # [N, 2]
        ts = sample_bilinear_repeat(normal_map, uv) / 255.0 * 2.0 - 1.0            # [N, 3]
        n = t * ts[:, 0:1] + b * ts[:, 1:2] + n * ts[:, 2:3]
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    out = np.zeros(face_id.shape + (3,), np.float32)
    out[hit] = n
    return out


def shade_pixels_ref(face_id: np.ndarray, bary: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                     normals: np.ndarray, uvs: np.ndarray | None = None, tangents: np.ndarray | None = None,
                     normal_map: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The CPU code path (``interpolate`` and ``shading_normals_ref``): face_id int32 [..., H, W], bary
    float32 [..., H, W, 3] -> (position, normal) float32 [..., H, W, 3]."""
    tris = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    fid = np.asarray(face_id).reshape(-1, face_id.shape[-1])
    b = np.asarray(bary).reshape(fid.shape + (3,))
    pos = interpolate(vertices, faces, fid, b)
    nrm = shading_normals_ref(tris, fid, b, np.asarray(normals, np.float32), uvs, tangents, normal_map)
    return pos.reshape(face_id.shape + (3,)), nrm.reshape(face_id.shape + (3,))


# --------------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------------

@cuda.jit(device=True, inline=True)
def _lerp(attr, i0, i1, i2, b0, b1, b2, a):
    return attr[i0, a] * b0 + attr[i1, a] * b1 + attr[i2, a] * b2


@cuda.jit(device=True, inline=True)
def _texel(nmap, y, x, c):
    return float32(nmap[y, x, c]) / float32(255.0) * float32(2.0) - float32(1.0)


@cuda.jit(device=True)
def _shade_one(face_id, bary, verts, faces, vnormals, uvs, tangents, nmap, use_map, want_normal,
               pos_out, nrm_out, i):
    f = face_id[i]
    if f < 0:
        for a in range(3):
            pos_out[i, a] = float32(0.0)
            if want_normal:
                nrm_out[i, a] = float32(0.0)
        return
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    b0, b1, b2 = bary[i, 0], bary[i, 1], bary[i, 2]
    for a in range(3):
        pos_out[i, a] = _lerp(verts, i0, i1, i2, b0, b1, b2, a)
    if not want_normal:
        return
    nx = _lerp(vnormals, i0, i1, i2, b0, b1, b2, 0)
    ny = _lerp(vnormals, i0, i1, i2, b0, b1, b2, 1)
    nz = _lerp(vnormals, i0, i1, i2, b0, b1, b2, 2)
    inv = float32(1.0) / max(math.sqrt(nx * nx + ny * ny + nz * nz), float32(1e-12))
    nx, ny, nz = nx * inv, ny * inv, nz * inv
    if use_map:
        tx = _lerp(tangents, i0, i1, i2, b0, b1, b2, 0)
        ty = _lerp(tangents, i0, i1, i2, b0, b1, b2, 1)
        tz = _lerp(tangents, i0, i1, i2, b0, b1, b2, 2)
        tw = _lerp(tangents, i0, i1, i2, b0, b1, b2, 3)
        dot = tx * nx + ty * ny + tz * nz
        tx, ty, tz = tx - nx * dot, ty - ny * dot, tz - nz * dot
        inv = float32(1.0) / max(math.sqrt(tx * tx + ty * ty + tz * tz), float32(1e-12))
        tx, ty, tz = tx * inv, ty * inv, tz * inv
        s = float32(-1.0) if tw < float32(0.0) else float32(1.0)
        bx, by, bz = s * (ny * tz - nz * ty), s * (nz * tx - nx * tz), s * (nx * ty - ny * tx)
        h = nmap.shape[0]
        w = nmap.shape[1]
        x = float64(_lerp(uvs, i0, i1, i2, b0, b1, b2, 0)) * w - 0.5
        y = float64(_lerp(uvs, i0, i1, i2, b0, b1, b2, 1)) * h - 0.5
        xf = math.floor(x)
        yf = math.floor(y)
        fx = float32(x - xf)
        fy = float32(y - yf)
        x0 = int64(xf) % w
        y0 = int64(yf) % h
        x1 = (x0 + 1) % w
        y1 = (y0 + 1) % h
        ts0 = float32(0.0)
        ts1 = float32(0.0)
        ts2 = float32(0.0)
        for c in range(3):
            top = _texel(nmap, y0, x0, c) * (float32(1.0) - fx) + _texel(nmap, y0, x1, c) * fx
            bot = _texel(nmap, y1, x0, c) * (float32(1.0) - fx) + _texel(nmap, y1, x1, c) * fx
            v = top * (float32(1.0) - fy) + bot * fy
            if c == 0:
                ts0 = v
            elif c == 1:
                ts1 = v
            else:
                ts2 = v
        mx = tx * ts0 + bx * ts1 + nx * ts2
        my = ty * ts0 + by * ts1 + ny * ts2
        mz = tz * ts0 + bz * ts1 + nz * ts2
        inv = float32(1.0) / max(math.sqrt(mx * mx + my * my + mz * mz), float32(1e-12))
        nx, ny, nz = mx * inv, my * inv, mz * inv
    nrm_out[i, 0] = nx
    nrm_out[i, 1] = ny
    nrm_out[i, 2] = nz


@cuda.jit(cache=True)
def _shade_kernel(face_id, bary, verts, faces, vnormals, uvs, tangents, nmap, use_map, want_normal,
                  pos_out, nrm_out, n_px):
    for i in range(cuda.grid(1), n_px, cuda.gridsize(1)):
        _shade_one(face_id, bary, verts, faces, vnormals, uvs, tangents, nmap, use_map, want_normal,
                   pos_out, nrm_out, i)


# --------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------

def _need(name: str, t: torch.Tensor, dtype: torch.dtype, shape: tuple[int | None, ...]) -> None:
    ok = t.dtype == dtype and t.ndim == len(shape)
    ok = ok and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ConfigError(f"{name} must be {dtype} {want}, got {t.dtype} {tuple(t.shape)}",
                          f"pass {name} as {dtype} {want}")
    if t.device != kernel_device():
        raise ConfigError(f"{name} on {t.device}, kernels run on {kernel_device()}",
                          "move it to triton_kernels.numba_cuda.kernel_device()")


def shade_pixels_gpu(face_id: torch.Tensor, bary: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                     normals: torch.Tensor | None, uvs: torch.Tensor | None = None,
                     tangents: torch.Tensor | None = None, normal_map: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """World positions and shading normals of rasterised samples, on ``kernel_device()``.

    face_id int32 [..., H, W] (-1 empty); bary float32 [..., H, W, 3]; vertices float32 [V, 3];
    faces int32 [F, 3]; normals float32 [V, 3] unit smooth vertex normals, or None to skip the normal
    output; uvs float32 [V, 2], tangents float32 [V, 4] and normal_map uint8 [Hm, Wm, 3]: the map is
    applied only when all three are given (as the CPU ``shading_normals``).
    Returns (position float32 [..., H, W, 3], normal float32 [..., H, W, 3] or None), zeros where empty.
    """
    _need("bary", bary, torch.float32, tuple(face_id.shape) + (3,))
    _need("face_id", face_id, torch.int32, tuple(None for _ in face_id.shape))
    _need("vertices", vertices, torch.float32, (None, 3))
    _need("faces", faces, torch.int32, (None, 3))
    n_v = vertices.shape[0]
    want_normal = normals is not None
    use_map = want_normal and uvs is not None and tangents is not None and normal_map is not None
    if want_normal:
        _need("normals", normals, torch.float32, (n_v, 3))
    if use_map:
        _need("uvs", uvs, torch.float32, (n_v, 2))
        _need("tangents", tangents, torch.float32, (n_v, 4))
        _need("normal_map", normal_map, torch.uint8, (None, None, 3))
        if normal_map.shape[0] == 0 or normal_map.shape[1] == 0:
            raise ConfigError("normal map is empty", "pass a non-empty uint8 [H, W, 3] map or None")
    dev = vertices.device
    dummy2 = torch.zeros((1, 1), dtype=torch.float32, device=dev)
    fid = face_id.contiguous().view(-1)
    n_px = fid.shape[0]
    pos = torch.empty((n_px, 3), dtype=torch.float32, device=dev)
    nrm = torch.empty((n_px, 3) if want_normal else (1, 3), dtype=torch.float32, device=dev)
    nmap = normal_map.contiguous() if use_map else torch.zeros((1, 1, 3), dtype=torch.uint8, device=dev)
    args = (view(fid), view(bary.contiguous().view(-1, 3)), view(vertices.contiguous()),
            view(faces.contiguous()), view(normals.contiguous() if want_normal else dummy2),
            view(uvs.contiguous() if use_map else dummy2), view(tangents.contiguous() if use_map else dummy2),
            view(nmap),
            bool(use_map), bool(want_normal), view(pos), view(nrm), n_px)
    launch(_shade_kernel, (n_px + PX_PER_THREAD - 1) // PX_PER_THREAD, *args)
    shape = tuple(face_id.shape) + (3,)
    return pos.view(shape), (nrm.view(shape) if want_normal else None)
