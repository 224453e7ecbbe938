"""Per-view photometric harmonisation and sub-pixel alignment (engine/texture/view_harmonisation.py): planted
gains and shifts are recovered on small synthetic views; clipped samples follow the censored rule."""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.texture import view_harmonisation as vh
from engine.texture.views import camera_rig

R = 96


def _texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A smooth colour field [..., 3] in about [0.15, 0.85] at pixel coordinates x, y."""
    t = []
    for c, (a, b, ph) in enumerate(((0.11, 0.07, 0.3), (0.05, 0.13, 1.1), (0.09, -0.08, 2.0))):
        t.append(0.5 + 0.2 * torch.sin(a * x + b * y + ph) + 0.15 * torch.cos(0.04 * (c + 1) * x - 0.06 * y))
    return torch.stack(t, -1)


def _views(gains: torch.Tensor, shifts: torch.Tensor, quantise: bool = True) -> torch.Tensor:
    """K views [K, 3, R, R]: view k shows at pixel p the colour g_k * f(p - s_k), clipped, uint8-rounded."""
    c = torch.arange(R, dtype=torch.float64) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    out = []
    for g, s in zip(gains.double(), shifts.double()):
        img = (_texture(xx - s[0], yy - s[1]) * g).clamp(0.0, 1.0)
        out.append(torch.round(img * 255.0) / 255.0 if quantise else img)
    return torch.stack(out).permute(0, 3, 1, 2).float().contiguous()


def _texels(k: int, margin: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Every view sees every texel at the same pixel (identity projection): pixel [K, N, 2], incidence."""
    c = torch.arange(margin, R - margin, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    px = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    return px.expand(k, -1, -1).contiguous(), torch.full((k, px.shape[0]), 0.9)


def test_gains_recover_planted_per_view_gains():
    k = 5
    gen = torch.Generator().manual_seed(0)
    gains = 1.0 + 0.2 * (torch.rand(k, 3, generator=gen) - 0.5)              # +-10 % per view and channel
    gains[2] = torch.tensor([1.25, 1.2, 1.3])                                 # an over-exposed view: clips
    px, inc = _texels(k)
    images = _views(gains, torch.zeros(k, 2))
    assert bool((images[2] >= vh.CLIP_LEVEL).any())                           # the planted clipping happens
    cfg = vh.HarmoniseConfig(align=False)
    corr = vh.harmonise_views(images, px, inc, camera_rig()[:k], cfg)
    want = gains / torch.exp(torch.log(gains).mean(0))                        # anchor: mean log gain 0
    assert torch.allclose(corr.gains, want, rtol=0, atol=5e-3), (corr.gains, want)
    assert corr.stats["harmonise_pairs"] == 3 * k * (k - 1) // 2
    assert torch.equal(corr.shifts, torch.zeros(k, 2))


def test_alignment_recovers_planted_subpixel_shifts():
    k = 6
    cams = camera_rig()[:k]
    basis = vh.translation_basis(cams, R, "cpu")
    gen = torch.Generator().manual_seed(1)
    raw = (torch.rand(k, 2, generator=gen) - 0.5) * 1.6                       # up to 0.8 px per axis
    shifts = vh.remove_common_translation(raw, basis, torch.ones(k))          # the observable part
    assert float(shifts.abs().max()) > 0.3
    px, inc = _texels(k)
    images = _views(torch.ones(k, 3), shifts, quantise=False)
    corr = vh.harmonise_views(images, px, inc, cams, vh.HarmoniseConfig(gains=False))
    err = torch.linalg.vector_norm(corr.shifts - shifts, dim=-1)
    assert float(err.max()) < 0.05, (corr.shifts, shifts)


def test_gains_and_shifts_together_on_quantised_views():
    k = 6
    cams = camera_rig()[:k]
    gen = torch.Generator().manual_seed(2)
    gains = 1.0 + 0.2 * (torch.rand(k, 3, generator=gen) - 0.5)
    raw = (torch.rand(k, 2, generator=gen) - 0.5) * 1.6
    shifts = vh.remove_common_translation(raw, vh.translation_basis(cams, R, "cpu"), torch.ones(k))
    px, inc = _texels(k)
    corr = vh.harmonise_views(_views(gains, shifts), px, inc, cams)
    want = gains / torch.exp(torch.log(gains).mean(0))
    assert float((corr.gains - want).abs().max()) < 5e-3
    assert float(torch.linalg.vector_norm(corr.shifts - shifts, dim=-1).max()) < 0.08


def test_common_translation_is_removed_exactly():
    cams = camera_rig()
    basis = vh.translation_basis(cams, 64, "cpu")
    t = torch.tensor([0.01, -0.02, 0.015])
    pure = torch.einsum("kij,j->ki", basis, t)                                # every view moved by one T
    assert float(vh.remove_common_translation(pure, basis, torch.ones(len(cams))).abs().max()) < 1e-5


def test_correct_views_censored_rule():
    x = torch.tensor([[0.5, 1.0, 0.2], [0.4, 0.4, 0.4]]).T.reshape(1, 3, 1, 2)   # pixel 0 clipped in G
    corr = vh.ViewCorrection(torch.tensor([[1.25, 1.25, 0.8]]), torch.zeros(1, 2), {})
    rgb, aux = vh.correct_views(x, corr)
    assert torch.allclose(rgb[0, :, 0, 0], torch.tensor([0.4, 1.0, 0.25]))   # clipped channel -> 1.0
    assert torch.allclose(rgb[0, :, 0, 1], torch.tensor([0.32, 0.32, 0.5]))
    assert math.isclose(float(aux[0, 0, 0, 0]), vh.HarmoniseConfig().clipped_weight, rel_tol=1e-6)
    assert float(aux[0, 0, 0, 1]) == 1.0
    assert torch.allclose(aux[0, 1:, 0, 0], torch.tensor([0.0, 0.8, 0.0]))    # lower bound 1 / g
    lower = aux[:, 1:, 0, :].permute(0, 2, 1)                                 # [K=1, N=2, 3]
    floor = vh.censored_floor(torch.full((2, 3), 0.5), lower, torch.ones(1, 2, dtype=torch.bool))
    assert torch.allclose(floor[0], torch.tensor([0.5, 0.8, 0.5]))


def test_sample_bilinear_matches_the_host_tap():
    from engine.texture.backproject import _taps

    gen = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 16, 16, generator=gen)
    px = torch.rand(1, 50, 2, generator=gen) * 14 + 1                         # inside the outer centres
    got = vh.sample_bilinear(img, px)[0].numpy()
    x0, y0, x1, y1, fx, fy = _taps(px[0].numpy(), 16)
    a = img[0].permute(1, 2, 0).numpy()
    fx, fy = fx[:, None], fy[:, None]
    want = (a[y0, x0] * (1 - fx) + a[y0, x1] * fx) * (1 - fy) + (a[y1, x0] * (1 - fx) + a[y1, x1] * fx) * fy
    assert np.allclose(got, want, atol=1e-5)
