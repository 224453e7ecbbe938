"""Preview renders of a finished asset on the CPU: lit turntable frames and a wireframe view.

Built on the engine's own rasteriser and cameras: ``rasterize_ortho`` (z-buffered, both windings drawn,
nearest wins) through an ``OrthoCamera`` of ``engine.texture.views`` placed on an orbit (azimuth around
+Y from the front +Z, elevation above the horizon), then per-pixel attributes by barycentric interpolation
(``interpolate``). The projection is orthographic, as everywhere in the engine; the report's three.js viewer
gives the perspective view.

Per covered sample (module docstring of ``engine.report.config`` for the lighting model):
  n      = ``render_conditions.shading_normals``: interpolated vertex normal N, tangent T made orthogonal
           to N, B = w * cross(N, T) (glTF / MikkTSpace), n = normalize(T x + B y + N z) with
           (x, y, z) = rgb / 255 * 2 - 1 of the normal map (bilinear). Two-sided: where the face looks away
           from the camera, n is negated (the inside of an open mesh is lit like its outside).
  albedo = base-colour atlas at the interpolated UV, sRGB decoded, bilinear with clamp-to-edge (the GLB's
           sampler); without an atlas the vertex colours, else 0.8 grey.
  colour = albedo * (ambient + diffuse * max(0, n . l)), clipped to [0, 1], l in the camera frame.
Anti-aliasing: the image is rasterised at ``supersample`` times the size; each output pixel averages its
samples in linear RGB with the background filling the uncovered ones, then is sRGB encoded (uint8).

Shapes: vertices are first scaled into the unit sphere (``normalize_to_sphere``); a frame is uint8
[size, size, 3] RGB, row 0 at the top, x to the right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.geometry.mesh import TriMesh, face_normals, validate_mesh
from engine.geometry.rasterize import interpolate, rasterize_ortho
from engine.report.config import PreviewConfig
from engine.texture.render_conditions import sample_bilinear_repeat, shading_normals, smooth_normals
from engine.texture.views import OrthoCamera, normalize_to_sphere

FRAME_MARGIN = 1.04          # half extent of the cameras over the unit sphere's radius
CLAY_ALBEDO = 0.55           # linear grey of the wireframe view's surface
EDGE_COLOUR = (0.02, 0.06, 0.2)  # linear RGB of wireframe lines
EDGE_WIDTH_PX = 0.6          # half width of a wireframe line in output pixels


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear, float32 (IEC 61966-2-1)."""
    c = np.asarray(c, np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb8(c: np.ndarray) -> np.ndarray:
    """Linear RGB (any float, clipped to [0, 1]) -> sRGB uint8, rounded."""
    c = np.clip(np.asarray(c, np.float32), 0.0, 1.0)
    s = np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1.0 / 2.4) - 0.055)
    return np.round(s * 255.0).astype(np.uint8)


def orbit_camera(azimuth_deg: float, elevation_deg: float, name: str = "",
                 half_extent: float = FRAME_MARGIN) -> OrthoCamera:
    """An orthographic camera on the orbit: direction (sin a cos e, sin e, cos a cos e) from the object
    towards the camera (a = 0: the front, +Z; a = 90: the object's left, +X), image up along +Y."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    d = (math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e))
    return OrthoCamera(name or f"az{azimuth_deg:03.0f}", d, (0.0, 1.0, 0.0), float(half_extent), 0.0)


def turntable_cameras(frames: int, elevation_deg: float) -> list[OrthoCamera]:
    """``frames`` cameras at azimuths 0, 360 / frames, ... degrees (front first)."""
    return [orbit_camera(360.0 * k / frames, elevation_deg) for k in range(frames)]


@dataclass(frozen=True)
class Surface:
    """A mesh made ready to render: scaled into the unit sphere, with what every view reads.

    mesh:      the asset's TriMesh with vertices float32 [V, 3] inside the unit sphere.
    vnormals:  float32 [V, 3] unit vertex normals.
    fnormals:  float32 [F, 3] unit face normals (for two-sided lighting).
    albedo:    float32 [H, W, 3] linear base-colour atlas, or None.
    """

    mesh: TriMesh
    vnormals: np.ndarray
    fnormals: np.ndarray
    albedo: np.ndarray | None


def prepare_surface(mesh: TriMesh) -> Surface:
    """Scale ``mesh`` into the unit sphere and precompute normals and the linear atlas."""
    validate_mesh(mesh)
    verts, _, _ = normalize_to_sphere(mesh.vertices)
    scaled = mesh.copy(vertices=verts)
    albedo = None
    if mesh.base_color is not None and mesh.uvs is not None:
        albedo = srgb_to_linear(mesh.base_color[..., :3].astype(np.float32) / 255.0)
    return Surface(scaled, smooth_normals(scaled), face_normals(verts, scaled.faces), albedo)


def _albedo(surface: Surface, fid: np.ndarray, bary: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Linear albedo float32 [N, 3] of the covered samples."""
    mesh = surface.mesh
    if surface.albedo is not None:
        h, w = surface.albedo.shape[:2]
        uv = interpolate(mesh.uvs, mesh.faces, fid, bary)[hit]                    # [N, 2]
        uv = np.clip(uv, [0.5 / w, 0.5 / h], [1.0 - 0.5 / w, 1.0 - 0.5 / h])    # clamp to edge
        return sample_bilinear_repeat(surface.albedo, uv)
    if mesh.colors is not None:
        return interpolate(mesh.colors, mesh.faces, fid, bary)[hit]
    return np.full((int(hit.sum()), 3), 0.8, np.float32)


def _samples(surface: Surface, camera: OrthoCamera, res: int, normal_map: bool):
    """Rasterise one view: (face_id [R, R], bary [R, R, 3], hit [R, R], two-sided unit normals [N, 3])."""
    mesh = surface.mesh
    fid, bary, _ = rasterize_ortho(mesh.vertices, mesh.faces, camera, res)
    hit = fid >= 0
    n = shading_normals(mesh, fid, bary, surface.vnormals, normal_map)[hit]        # [N, 3]
    _, _, d = camera.basis()
    away = surface.fnormals[fid[hit]] @ d.astype(np.float32) < 0.0
    n[away] = -n[away]
    return fid, bary, hit, n


def _lambert(n: np.ndarray, camera: OrthoCamera, config: PreviewConfig) -> np.ndarray:
    """ambient + diffuse * max(0, n . l), float32 [N], with l given in the camera frame."""
    r, u, d = camera.basis()
    lx, ly, lz = config.light_unit()
    light = (lx * r + ly * u + lz * d).astype(np.float32)
    return config.ambient + config.diffuse * np.maximum(n @ light, 0.0)


def _resolve(colour: np.ndarray, hit: np.ndarray, ss: int, background: tuple[int, int, int]) -> np.ndarray:
    """Supersampled linear colour [R, R, 3] (any value where not hit) -> uint8 [R / ss, R / ss, 3]."""
    r = hit.shape[0] // ss
    bg = srgb_to_linear(np.asarray(background, np.float32) / 255.0)
    full = np.where(hit[..., None], np.clip(colour, 0.0, 1.0), bg)
    return linear_to_srgb8(full.reshape(r, ss, r, ss, 3).mean(axis=(1, 3)))


def render_lit(surface: Surface, camera: OrthoCamera, size: int, config: PreviewConfig,
               normal_map: bool = True) -> np.ndarray:
    """A lit view of the textured asset: uint8 [size, size, 3] sRGB (module docstring). ``normal_map``
    False shades with the interpolated vertex normals only."""
    ss = config.supersample
    fid, bary, hit, n = _samples(surface, camera, size * ss, normal_map)
    colour = np.zeros(hit.shape + (3,), np.float32)
    colour[hit] = _albedo(surface, fid, bary, hit) * _lambert(n, camera, config)[:, None]
    return _resolve(colour, hit, ss, config.background)


def edge_distance_px(surface: Surface, camera: OrthoCamera, res: int, fid: np.ndarray, bary: np.ndarray,
                     hit: np.ndarray) -> np.ndarray:
    """Distance in pixels from each covered sample to the nearest edge of its triangle, float32 [N]:
    min_i b_i * h_i with h_i the triangle's projected altitude from vertex i (b_i is the sample's
    fractional distance from the edge opposite vertex i towards vertex i)."""
    px, _ = camera.world_to_pixel(surface.mesh.vertices, res)
    tri = px.astype(np.float64)[surface.mesh.faces]                              # [F, 3, 2]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])                     # [F] doubled area
    opposite = np.stack([np.linalg.norm(tri[:, (i + 2) % 3] - tri[:, (i + 1) % 3], axis=1)
                         for i in range(3)], axis=1)                              # [F, 3]
    altitude = area2[:, None] / np.maximum(opposite, 1e-12)                      # [F, 3]
    return (bary[hit] * altitude[fid[hit]]).min(axis=1).astype(np.float32)


def render_wireframe(surface: Surface, camera: OrthoCamera, size: int, config: PreviewConfig) -> np.ndarray:
    """Clay-shaded view with every visible triangle edge drawn: uint8 [size, size, 3]. Hidden edges are
    not drawn (the z-buffer decides), so the picture shows the mesh the game engine will draw."""
    ss = config.supersample
    res = size * ss
    fid, bary, hit, n = _samples(surface, camera, res, normal_map=False)
    shade = (CLAY_ALBEDO * _lambert(n, camera, config))[:, None] * np.ones(3, np.float32)
    on_edge = edge_distance_px(surface, camera, res, fid, bary, hit) < EDGE_WIDTH_PX * ss
    shade[on_edge] = EDGE_COLOUR
    colour = np.zeros(hit.shape + (3,), np.float32)
    colour[hit] = shade
    return _resolve(colour, hit, ss, config.background)
