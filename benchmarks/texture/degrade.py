"""Views degraded the way generated views are (issue 14 item 6), for the texture oracle's ``--degrade``.

A rendered view of the source is exact; a generated view is not. Each view k gets, deterministically from
(``seed``, CRC32 of the asset name), in this order of draws from ``numpy.random.default_rng``:
  exposure  e_k ~ 1 + U(-exposure, exposure)                    one factor per view      (default 10 %)
  white bal. b_kc ~ 1 + U(-white_balance, white_balance)          one factor per channel   (default 10 %)
            gain g_kc = e_k b_kc multiplies the sRGB colour, then clip to [0, 1] (over-exposed views
            saturate, as a generated image does), then uint8 rounding;
  misregistration  s_k = rho (cos theta, sin theta) pixels at the view's resolution, rho = max_shift
            sqrt(U(0, 1)), theta ~ U(0, 2 pi) (uniform in the disc of radius ``max_shift``, default 1 px):
            view k shows at pixel p + s_k what the geometry puts at p. Rendered exactly (no resampling
            blur): the source is translated by (s_x r_k - s_y u_k) 2 h / R in view k's image plane.
Every view is degraded, the front one included (TextureGen generates it too). The views' pixel masks
stay the exact silhouettes of the undegraded source: like the conditions the generator saw, they are
known before the colours and do not move with the generated content. Ours and the baseline fuse the same
degraded views.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Degradation:
    """Per-view jitter amplitudes (module docstring) and the seed."""

    exposure: float = 0.10
    white_balance: float = 0.10
    max_shift: float = 1.0
    seed: int = 0

    def describe(self) -> str:
        return (f"exposure x(1 +- U {self.exposure:.2f}), white balance x(1 +- U "
                f"{self.white_balance:.2f}) per channel, clipped; shift uniform in a {self.max_shift:g} px "
                f"disc; seed {self.seed} + CRC32(asset)")


def draws(asset: str, views: int, cfg: Degradation) -> tuple[np.ndarray, np.ndarray]:
    """(gains float64 [K, 3], shifts float64 [K, 2] pixels) of ``asset`` (module docstring)."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(asset.encode())])
    e = 1.0 + rng.uniform(-cfg.exposure, cfg.exposure, views)
    b = 1.0 + rng.uniform(-cfg.white_balance, cfg.white_balance, (views, 3))
    rho = cfg.max_shift * np.sqrt(rng.uniform(0.0, 1.0, views))
    theta = rng.uniform(0.0, 2.0 * np.pi, views)
    return e[:, None] * b, np.stack([rho * np.cos(theta), rho * np.sin(theta)], 1)


def degraded_views(source, cameras: list, res: int, asset: str, cfg: Degradation, cuda: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(views uint8 [K, R, R, 3], exact silhouettes bool [K, R, R], gains [K, 3], shifts [K, 2])."""
    from benchmarks.texture.oracle import rasterize, render_source

    gains, shifts = draws(asset, len(cameras), cfg)
    fid, _ = rasterize(source, cameras, res, cuda)
    out = np.zeros((len(cameras), res, res, 3), np.uint8)
    for i, cam in enumerate(cameras):
        r, u, _ = cam.basis()
        t = (shifts[i, 0] * r - shifts[i, 1] * u) * 2.0 * cam.half_extent / res
        moved = source.copy(vertices=(source.vertices.astype(np.float64) + t).astype(np.float32))
        rgb, _ = render_source(moved, [cam], res, cuda)
        out[i] = np.clip(np.rint(np.clip(rgb[0] * gains[i], 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return out, fid >= 0, gains, shifts
