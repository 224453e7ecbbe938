"""The orthographic camera rig shared by condition rendering, backprojection and TextureGen (paper 7.1, 7.4).

One definition, used everywhere a view is named: ``camera_rig()`` returns the paper's 10 views -- 8 side
views at 45 deg azimuth steps around +Y starting at the front, then top and bottom -- each an
orthographic camera looking at the origin. Objects are first scaled into the rig sphere (centre 0,
radius ``radius``) by ``normalize_to_sphere`` so every view frames the whole object.

Frame of a camera (world = glTF: +Y up, front of the object faces +Z):
  d = ``direction``: unit vector from the object towards the camera; the camera looks along -d.
  r = normalize(up x d): image +x (right).   u = d x r: image up.   (r, u, d) is right-handed.
Pixel coordinates of a point p at resolution R (x right, y down, pixel (row i, col j) centre at
(j + 0.5, i + 0.5)):
  px = (p.r / h + 1) / 2 * R,   py = (1 - p.u / h) / 2 * R,   h = ``half_extent``
so the image spans [-h, h] along r and along u. Depth is the distance along the viewing direction from
the camera plane, which sits at distance h from the origin on the d side: depth = h - p.d (>= 0 for
points inside the rig sphere when h >= radius; ordering stays right for any point).

The front camera (azimuth 0) has d = +Z, up = +Y, so image column 0 is world x = -h and row 0 is y = +h:
a front-view image of the object is a picture of its front as a viewer facing it sees it.
Azimuth a rotates d about +Y: d = (sin a, 0, cos a) (45 deg is front-right of the viewer = the object's
left, +X). Top: d = +Y with image up = -Z (the object's front at the bottom of the image). Bottom:
d = -Y with image up = +Z (front at the top of the image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.errors import ConfigError, MeshError

# Paper 7.4 view priors w_k by side-view azimuth (degrees): front/rear 1, +-45 front 0.1, sides 0.01,
# +-45 rear 0.001; top/bottom 0.3.
SIDE_PRIORS = {0: 1.0, 45: 0.1, 90: 0.01, 135: 0.001, 180: 1.0, 225: 0.001, 270: 0.01, 315: 0.1}
TOP_BOTTOM_PRIOR = 0.3
SIDE_NAMES = {0: "front", 45: "front_right", 90: "right", 135: "rear_right", 180: "rear",
              225: "rear_left", 270: "left", 315: "front_left"}


@dataclass(frozen=True)
class OrthoCamera:
    """An orthographic view of the rig; see the module docstring for the frame and pixel conventions.

    name:         view name ("front", ..., "top", "bottom").
    direction:    unit 3-vector from the object towards the camera (the camera looks along -direction).
    up:           3-vector giving the image's up direction (need not be orthogonal to ``direction``).
    half_extent:  the image spans [-half_extent, half_extent] world units along both image axes.
    prior_weight: w_k of the blending formula (paper 7.4).
    """

    name: str
    direction: tuple[float, float, float]
    up: tuple[float, float, float]
    half_extent: float
    prior_weight: float

    def __post_init__(self) -> None:
        d = np.asarray(self.direction, dtype=np.float64)
        u = np.asarray(self.up, dtype=np.float64)
        if d.shape != (3,) or abs(np.linalg.norm(d) - 1.0) > 1e-5:
            raise ConfigError(f"camera '{self.name}' direction {self.direction} is not a unit 3-vector",
                              "pass a normalised direction")
        if u.shape != (3,) or np.linalg.norm(np.cross(u, d)) < 1e-6:
            raise ConfigError(f"camera '{self.name}' up {self.up} is zero or parallel to its direction",
                              "pass an up vector not parallel to the direction")
        if not self.half_extent > 0 or not self.prior_weight >= 0:
            raise ConfigError(f"camera '{self.name}' needs half_extent > 0 and prior_weight >= 0",
                              "fix the camera definition")

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right [3], image_up [3], direction [3]) float64, orthonormal and right-handed."""
        d = np.asarray(self.direction, dtype=np.float64)
        r = np.cross(np.asarray(self.up, dtype=np.float64), d)
        r /= np.linalg.norm(r)
        return r, np.cross(d, r), d

    def world_to_pixel(self, points: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """Project world points [N, 3] -> (px float32 [N, 2] as (x right, y down) in pixels with pixel
        centres at +0.5, depth float32 [N] = half_extent - p . direction)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        r, u, d = self.basis()
        h = float(self.half_extent)
        px = np.empty((p.shape[0], 2), dtype=np.float64)
        px[:, 0] = (p @ r / h + 1.0) * 0.5 * resolution
        px[:, 1] = (1.0 - p @ u / h) * 0.5 * resolution
        return px.astype(np.float32), (h - p @ d).astype(np.float32)

    def pixel_rays(self, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """Rays through pixel centres: (origins float32 [R, R, 3] on the camera plane (depth 0),
        direction float32 [3] = -direction, shared by all pixels)."""
        r, u, d = self.basis()
        h = float(self.half_extent)
        t = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution * 2.0 - 1.0  # [-1, 1] centres
        x = t[None, :, None] * h * r                # columns -> right
        y = -t[:, None, None] * h * u               # rows go down
        origins = x + y + h * d
        return origins.astype(np.float32), (-d).astype(np.float32)


def camera_rig(num_views: int = 10, radius: float = 1.0) -> list[OrthoCamera]:
    """The paper's orthographic rig (7.1): ``num_views`` = 10 gives 8 side views at azimuths 0, 45, ...,
    315 deg (front first) then top and bottom; 6 gives the 4 cardinal side views then top and bottom.
    Each view frames the rig sphere: half_extent = ``radius``. Priors as paper 7.4 (``SIDE_PRIORS``)."""
    if num_views not in (6, 10):
        raise ConfigError(f"camera rig with {num_views} views is not defined",
                          "use 10 views (paper) or 6 (cardinal + top/bottom)")
    if not radius > 0:
        raise ConfigError(f"rig radius {radius} must be positive", "use e.g. radius=1.0")
    step = 360 // (num_views - 2)
    cams = []
    for az in range(0, 360, step):
        a = math.radians(az)
        d = (math.sin(a), 0.0, math.cos(a))
        cams.append(OrthoCamera(SIDE_NAMES[az], d, (0.0, 1.0, 0.0), float(radius), SIDE_PRIORS[az]))
    cams.append(OrthoCamera("top", (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), float(radius), TOP_BOTTOM_PRIOR))
    cams.append(OrthoCamera("bottom", (0.0, -1.0, 0.0), (0.0, 0.0, 1.0), float(radius), TOP_BOTTOM_PRIOR))
    return cams


def normalize_to_sphere(vertices: np.ndarray, radius: float = 1.0
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    """Scale vertices [V, 3] into the rig sphere: returns (vertices float32 [V, 3], center float64 [3],
    scale float) with ``out = (vertices - center) * scale``. ``center`` is the bounding-box centre and
    ``scale`` makes the farthest vertex lie at distance ``radius`` from it."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if v.shape[0] == 0 or not np.isfinite(v).all():
        raise MeshError("cannot normalise an empty mesh or one with NaN/Inf vertices",
                        "repair the mesh before texturing")
    center = 0.5 * (v.min(axis=0) + v.max(axis=0))
    extent = float(np.linalg.norm(v - center, axis=1).max())
    if extent <= 0.0:
        raise MeshError("mesh has zero extent (all vertices coincide)", "give a mesh with non-zero size")
    scale = radius / extent
    return ((v - center) * scale).astype(np.float32), center, scale


def rig_mesh(mesh):
    """``mesh`` (a TriMesh) scaled into the rig sphere by ``normalize_to_sphere`` over the vertices its
    faces use: a mesh with unused vertices and its UV-split copy get the same frame (TextureGen's early
    condition renders, its views and the fusion plan all use this)."""
    v = np.asarray(mesh.vertices, np.float64)
    _, center, scale = normalize_to_sphere(v[np.unique(np.asarray(mesh.faces))])
    return mesh.copy(vertices=((v - center) * scale).astype(np.float32))
