"""Settings of the previews and the HTML report (``assetgen ... --preview DIR``).

Lighting model of the previews (``engine.report.render``), in linear RGB:
    colour = albedo * (ambient + diffuse * max(0, n . l))
with ``albedo`` the base-colour atlas sampled by UV (sRGB decoded), ``n`` the shading normal (vertex normal
perturbed by the tangent-space normal map) and ``l`` the unit light direction, given in the camera's frame
(right, image up, towards the camera) so every turntable frame is lit alike: the studio light moves with the
camera, the object turns under it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import ConfigError


@dataclass(frozen=True)
class PreviewConfig:
    """frames:          turntable views, evenly spaced in azimuth around +Y, starting at the front (+Z).
    frame_size:      edge of one turntable frame in pixels.
    sheet_tile:      edge of a frame in the contact sheet (frames are resized to it).
    supersample:     each pixel is the mean of supersample^2 samples (anti-aliasing).
    elevation_deg:   camera height above the horizon, degrees, in (-90, 90).
    light:           direction towards the light in the camera frame (right, up, towards camera).
    ambient:         ambient term of the lighting model (module docstring), >= 0.
    diffuse:         Lambert term of the lighting model, >= 0.
    wireframe_size:  edge of each of the two wireframe views in pixels.
    uv_layout_size:  largest edge of the UV layout image (the atlas is box-filtered down to it).
    background:      sRGB background of the renders.
    viewer:          embed the three.js viewer of the GLB in report.html (the GLB is inlined as base64).
    """

    frames: int = 8
    frame_size: int = 256
    sheet_tile: int = 256
    supersample: int = 2
    elevation_deg: float = 20.0
    light: tuple[float, float, float] = (-0.45, 0.6, 0.66)
    ambient: float = 0.3
    diffuse: float = 0.8
    wireframe_size: int = 512
    uv_layout_size: int = 1024
    background: tuple[int, int, int] = (236, 238, 242)
    viewer: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= 64:
            raise ConfigError(f"preview frames {self.frames} out of range", "use 1..64 turntable frames")
        for name in ("frame_size", "sheet_tile", "wireframe_size", "uv_layout_size"):
            value = getattr(self, name)
            if not 16 <= value <= 4096:
                raise ConfigError(f"preview {name} {value} out of range", f"use a {name} in 16..4096 pixels")
        if not 1 <= self.supersample <= 4:
            raise ConfigError(f"preview supersample {self.supersample} out of range", "use 1..4")
        if not -89.0 <= self.elevation_deg <= 89.0:
            raise ConfigError(f"preview elevation {self.elevation_deg} deg out of range",
                              "use -89..89 degrees")
        if len(self.light) != 3 or not math.isfinite(sum(self.light)) or math.hypot(*self.light) < 1e-6:
            raise ConfigError(f"preview light {self.light} is not a direction", "give a non-zero 3-vector")
        if not (self.ambient >= 0.0 and self.diffuse >= 0.0):
            raise ConfigError("preview ambient and diffuse must be >= 0", "use e.g. ambient 0.3, diffuse 0.8")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ConfigError(f"preview background {self.background} is not an sRGB colour",
                              "give three integers in 0..255")

    def light_unit(self) -> tuple[float, float, float]:
        """The light direction normalised (camera frame)."""
        norm = math.hypot(*self.light)
        return (self.light[0] / norm, self.light[1] / norm, self.light[2] / norm)
