"""The plain texture-fusion baseline of the oracle benchmark: common practice in open texturing pipelines.

Same plan as ours (``engine.texture.fusion_gpu.FusionPlan``: texel geometry, projection, depth-test
visibility, edge mask, min incidence 0.05, the views' pixel masks), so the comparison isolates the three
choices the paper changes:
  sampling   one bilinear tap per (view, texel) at the texel centre (no footprint, no mip chain): the
             anisotropic sampler with a one-tap footprint (n = 1, lod 0) on the level-0 images only, which
             is exactly ``backproject.sample_views``;
  weighting  w_k = max(0, n . d_k)^4 (cos^4), no view priors: ``blend_views_gpu`` with priors 1, alpha 4;
  holes      OpenCV ``cv2.inpaint`` (Telea, radius 3) in UV space over every texel without a colour
             (unseen chart texels and the background together, so the black background is not a source),
  then the same gutter dilation as ours (chart colours extended ``gutter`` texels, 0 beyond).
Returns a host uint8 atlas [S, S, 3] (cv2 works on host images; the round trip is part of its cost).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.texture.anisotropic import Footprint, sample_anisotropic
from engine.texture.blend_gpu import blend_views_gpu
from engine.texture.fusion_gpu import FusionPlan, prepare_views
from engine.texture.fusion_precompute import mask_incidence
from engine.texture.inpaint import dilate_gutter

TELEA_RADIUS = 3
COS_POWER = 4.0


def one_tap_footprint(k: int, n: int, device: torch.device) -> Footprint:
    """A footprint of one bilinear tap at lod 0 for [K, N] (view, texel) pairs."""
    return Footprint(torch.zeros(k, n, 2, device=device), torch.zeros(k, n, device=device),
                     torch.ones(k, n, dtype=torch.uint8, device=device))


def baseline_fuse(plan: FusionPlan, images, masks=None, gutter: int | None = 16) -> tuple[np.ndarray, dict]:
    """Plain fusion (module docstring). images [K, R, R, 3] uint8 / float [0, 1], masks bool [K, R, R] or
    None, as ``fuse_views_gpu``. Returns (atlas uint8 [S, S, 3] host, stats: valid_texels, known_texels)."""
    pre = plan.pre
    x, allowed, _ = prepare_views(plan, images, masks)                        # [K, 3, R, R]
    inc = pre.incidence if allowed is None else mask_incidence(pre, allowed)  # [K, N]
    k, n = inc.shape
    colours = sample_anisotropic([x], pre.pixel, one_tap_footprint(k, n, inc.device), where=inc > 0)
    ones = torch.ones(k, dtype=torch.float32, device=inc.device)
    packed, known = blend_views_gpu(colours, inc, ones, COS_POWER)            # [N, 3], [N]
    t = pre.texels
    atlas = t.scatter(packed, channels=True).cpu().numpy()                     # [S, S, 3] float
    known_d = t.scatter(known).cpu().numpy()
    valid = t.valid.cpu().numpy()
    u8 = np.clip(np.rint(atlas * 255.0), 0, 255).astype(np.uint8)
    holes = (~known_d).astype(np.uint8) * 255
    filled = cv2.inpaint(np.ascontiguousarray(u8), holes, TELEA_RADIUS, cv2.INPAINT_TELEA)
    filled[~valid] = 0
    out = dilate_gutter(filled, valid, gutter)
    return out, {"valid_texels": int(valid.sum()), "known_texels": int((known_d & valid).sum())}


def baseline_fuse_host(mesh, cameras, images, atlas_size: int, masks=None, min_incidence: float = 0.05,
                       gutter: int | None = 16) -> tuple[np.ndarray, dict]:
    """The same baseline on the host, on the plan of the CPU reference ``backproject.fuse_views`` (texel
    geometry, z-buffer visibility, edge mask, min incidence, the views' pixel masks): one bilinear tap per
    (view, texel) (``sample_views``), cos^4 without view priors (``blend_views``, priors 1, alpha 4),
    OpenCV Telea in UV space, the same gutter. images [K, R, R, 3] uint8 / float [0, 1]; masks bool
    [K, R, R] or None. Returns (atlas uint8 [S, S, 3], stats: valid_texels, known_texels)."""
    from engine.texture.backproject import edge_mask, sample_views, texel_geometry, visibility
    from engine.texture.blend import blend_views
    from engine.texture.render_conditions import render_views

    texels = texel_geometry(mesh, atlas_size)
    renders = render_views(mesh, list(cameras), np.asarray(images).shape[1], normal_map=False)
    inc = visibility(texels, list(cameras), renders, edges=edge_mask(renders), pixel_mask=masks)
    inc[inc < min_incidence] = 0.0
    colours = sample_views(texels, list(cameras), images, where=inc > 0)
    atlas, known = blend_views(colours, inc, np.ones(len(cameras), np.float32), COS_POWER)
    u8 = np.clip(np.rint(atlas * 255.0), 0, 255).astype(np.uint8)
    holes = (~known).astype(np.uint8) * 255
    filled = cv2.inpaint(np.ascontiguousarray(u8), holes, TELEA_RADIUS, cv2.INPAINT_TELEA)
    valid = texels.valid
    filled[~valid] = 0
    out = dilate_gutter(filled, valid, gutter)
    return out, {"valid_texels": int(valid.sum()), "known_texels": int((known & valid).sum())}
