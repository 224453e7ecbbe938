"""Anisotropic backprojection filter (paper 7.4): mip chain, footprints, torch reference and the numba-cuda
lookup kernel (CUDA simulator in CI, the GPU under the ``gpu`` marker)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.errors import ConfigError, InputImageError
from engine.geometry.mesh import TriMesh
from engine.texture.anisotropic import (
    AnisoConfig,
    _blur121,
    build_mip_chain,
    footprints,
    lanczos2_weights,
    pixel_jacobian,
    precompute_footprints,
    sample_anisotropic_ref,
    svd2x2,
    texel_differentials,
)
from engine.texture.backproject import sample_views, texel_geometry
from engine.texture.views import camera_rig
from triton_kernels.anisotropic_sample import sample_anisotropic_gpu
from triton_kernels.numba_cuda import kernel_device


def _lanczos_down_np(img: np.ndarray) -> np.ndarray:
    """Direct 2D evaluation of one Lanczos-2 2x level, float64: out[j, i] = sum w(dy) w(dx) img[clamp]."""
    s = img.shape[0]
    d = np.arange(8) - 3.5
    w = np.sinc(d / 2) * np.sinc(d / 4)
    w /= w.sum()
    out = np.zeros((s // 2, s // 2))
    for j in range(s // 2):
        for i in range(s // 2):
            for a in range(8):
                for b in range(8):
                    y = min(max(2 * j - 3 + a, 0), s - 1)
                    x = min(max(2 * i - 3 + b, 0), s - 1)
                    out[j, i] += w[a] * w[b] * img[y, x]
    return out


def test_lanczos_weights_and_mip_chain_against_direct_sum():
    w = lanczos2_weights()
    assert torch.allclose(w, w.flip(0)) and abs(float(w.sum()) - 1) < 1e-6 and float(w[0]) < 0
    img = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    mips = build_mip_chain(img, config=AnisoConfig(sharpen=0.0))
    assert [m.shape[-1] for m in mips] == [16, 8, 4, 2, 1]
    ref = _lanczos_down_np(img[1, 2].double().numpy())
    assert np.abs(mips[1][1, 2].numpy() - ref).max() < 1e-5
    assert [m.shape[-1] for m in build_mip_chain(torch.rand(1, 3, 24, 24))] == [24, 12, 6, 3]
    flat = build_mip_chain(torch.full((1, 3, 32, 32), 0.3))
    assert all(float((m - 0.3).abs().max()) < 1e-6 for m in flat)
    sharp = build_mip_chain(img, config=AnisoConfig(sharpen=0.5))
    assert torch.equal(sharp[0], mips[0]) and not torch.allclose(sharp[1], mips[1])
    blur = (mips[1][..., :-2, :] + 2 * mips[1][..., 1:-1, :] + mips[1][..., 2:, :]) / 4
    blur = (blur[..., :-2] + 2 * blur[..., 1:-1] + blur[..., 2:]) / 4        # interior [1, 2, 1]^2 / 16
    want = mips[1][..., 1:-1, 1:-1] + 0.5 * (mips[1][..., 1:-1, 1:-1] - blur)
    assert torch.allclose(sharp[1][..., 1:-1, 1:-1], want, atol=1e-6)
    # level 2 is the sharpened UNsharpened level 2 (no compounding)
    assert torch.allclose(sharp[2], mips[2] + 0.5 * (mips[2] - _blur121(mips[2])), atol=1e-6)


def test_mip_chain_bad_input():
    with pytest.raises(InputImageError):
        build_mip_chain(torch.rand(2, 16, 16, 3))
    with pytest.raises(InputImageError):
        build_mip_chain(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    bad = torch.rand(1, 3, 8, 8)
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(InputImageError, match="NaN"):
        build_mip_chain(bad)
    with pytest.raises(InputImageError):
        build_mip_chain(torch.rand(2, 3, 8, 8), mask=torch.ones(1, 8, 8, dtype=torch.bool))
    with pytest.raises(ConfigError):
        AnisoConfig(max_taps=0)
    with pytest.raises(ConfigError):
        AnisoConfig(lod_bias=float("nan"))


def test_svd2x2_matches_numpy():
    j = torch.randn(4, 300, 2, 2, generator=torch.Generator().manual_seed(2))
    s1, s2, e1 = svd2x2(j[..., 0], j[..., 1])
    u, s, _ = np.linalg.svd(j.double().numpy())
    assert np.abs(s1.numpy() - s[..., 0]).max() < 1e-5
    assert np.abs(s2.numpy() - s[..., 1]).max() < 1e-5
    assert np.abs(np.abs((u[..., :, 0] * e1.numpy()).sum(-1)) - 1).max() < 1e-4


def test_footprint_rules():
    ju = torch.tensor([[[1.0, 0.0], [8.0, 0.0], [32.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    jv = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 2.0], [0.5, 0.0]]])
    fp = footprints(ju, jv)
    assert fp.taps[0].tolist() == [1, 8, 8, 1, 1, 6]
    # minor axis selects the level (bias -0.5); beyond 8:1 the minor widens to major / 8
    expect = [0.0, 0.0, math.log2(4) - 0.5, 0.0, 0.5, 0.0]
    assert np.allclose(fp.lod[0].numpy(), expect, atol=1e-6)
    # taps spread over the major axis: spacing major / n along it
    assert np.allclose(np.abs(fp.step[0, 1].numpy()), [1.0, 0.0], atol=1e-6)
    assert np.allclose(np.abs(fp.step[0, 5].numpy()), [0.0, 0.5], atol=1e-6)


def _quad(shift_px: tuple[float, float], res: int) -> TriMesh:
    """Front-facing square filling the front view, UV = view (1 texel = 1 pixel at atlas = res), shifted
    by a sub-pixel offset so bilinear lookups fall between pixel centres."""
    sx, sy = 2.0 * shift_px[0] / res, -2.0 * shift_px[1] / res
    v = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32) + [sx, sy, 0.0]
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)
    return TriMesh(v.astype(np.float32), np.array([[0, 1, 2], [0, 2, 3]], np.int32), uvs=uv)


def test_texel_differentials_one_sided_at_borders():
    pos = torch.zeros(4, 5, 3)
    pos[..., 0] = torch.arange(5.0)[None, :] * 0.1                       # x grows 0.1 per column
    pos[..., 1] = torch.arange(4.0)[:, None] ** 2 * 0.01                 # y grows faster per row
    valid = torch.ones(4, 5, dtype=torch.bool)
    valid[0, 0] = False                                                   # (0, 1) has only a +u neighbour
    valid[3, :] = False
    valid[3, 2] = True                                                    # isolated in v, alone in u
    du, dv, ok_u, ok_v = texel_differentials(pos, valid)
    p = pos[valid]
    assert torch.allclose(du[:, 0][ok_u], torch.full((int(ok_u.sum()),), 0.1))
    assert torch.allclose(dv[0], pos[1, 1] - pos[0, 1])                  # first valid texel: (0, 1)
    last = p.shape[0] - 1                                                 # texel (3, 2): backward v
    assert torch.allclose(dv[last], pos[3, 2] - pos[2, 2]) and not bool(ok_u[last])
    # where both sides exist the shorter one wins: texel (1, 2) backward 0.01 vs forward 0.03
    row1 = int(valid[0].sum()) + 2                                        # texel (1, 2)
    assert torch.allclose(dv[row1], pos[1, 2] - pos[0, 2])
    cams = camera_rig()[:1]
    ju, jv = pixel_jacobian(du, dv, ok_u, ok_v, cams, 64)
    assert torch.allclose(ju[0, last], torch.stack([-jv[0, last, 1], jv[0, last, 0]]))


def test_axis_aligned_view_equals_single_bilinear_tap():
    res = 32
    mesh = _quad((0.3, 0.2), res)
    tex = texel_geometry(mesh, res)
    assert tex.valid.all()
    cam = camera_rig()[0]
    img = np.random.default_rng(3).random((1, res, res, 3)).astype(np.float32)
    want = sample_views(tex, [cam], img)[0][tex.valid]                  # [T, 3]
    fp = precompute_footprints(torch.from_numpy(tex.position), torch.from_numpy(tex.valid), [cam], res)
    assert int(fp.taps.max()) == 1 and float(fp.lod.max()) == 0.0
    px = torch.from_numpy(cam.world_to_pixel(tex.position[tex.valid], res)[0])[None]   # [1, T, 2]
    mips = build_mip_chain(torch.from_numpy(img).permute(0, 3, 1, 2))
    got = sample_anisotropic_ref(mips, px, fp)[0]
    assert np.abs(got.numpy() - want).max() < 1e-5
    dev = kernel_device()
    gk = sample_anisotropic_gpu([m.to(dev) for m in mips], px.to(dev),
                                type(fp)(fp.step.to(dev), fp.lod.to(dev), fp.taps.to(dev)))
    assert np.abs(gk[0].cpu().numpy() - want).max() < 1e-5


def _bilinear_single(img: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    one = footprints(torch.zeros(1, px.shape[0], 2), torch.zeros(1, px.shape[0], 2))
    return sample_anisotropic_ref(build_mip_chain(img), px[None], one)[0]


def test_minified_checkerboard_averages_where_single_tap_aliases():
    r = 64
    g = torch.arange(r)
    checker = ((g[:, None] + g[None, :]) % 2).float().expand(1, 3, r, r).contiguous()
    stripes = (g[None, :] % 2).float().expand(r, r).expand(1, 3, r, r).contiguous()   # vertical, 1 px
    bands = ((g[:, None] // 2) % 2).float().expand(r, r).expand(1, 3, r, r).contiguous()  # 2 px rows
    rng = np.random.default_rng(4)
    px = torch.from_numpy(rng.integers(16, 48, (40, 2)).astype(np.float32) + 0.5)     # pixel centres
    n = px.shape[0]
    iso = footprints(torch.tensor([[8.0, 0.0]]).expand(1, n, 2), torch.tensor([[0.0, 8.0]]).expand(1, n, 2))
    aniso = footprints(torch.tensor([[8.0, 0.0]]).expand(1, n, 2), torch.tensor([[0.0, 1.0]]).expand(1, n, 2))
    single = _bilinear_single(checker, px)
    assert float((single - 0.5).abs().min()) > 0.45                       # aliasing: 0 or 1
    got = sample_anisotropic_ref(build_mip_chain(checker), px[None], iso)[0]
    assert float((got - 0.5).abs().max()) < 0.02
    got = sample_anisotropic_ref(build_mip_chain(stripes), px[None], aniso)[0]
    assert float((_bilinear_single(stripes, px) - 0.5).abs().min()) > 0.45
    assert float((got - 0.5).abs().max()) < 0.02
    # detail across the minor axis is kept (isotropic filtering at the major axis' level would blur it)
    got = sample_anisotropic_ref(build_mip_chain(bands), px[None], aniso)[0]
    assert float((got - _bilinear_single(bands, px)).abs().max()) < 0.1
    blurred = sample_anisotropic_ref(build_mip_chain(bands), px[None], iso)[0]
    assert float((blurred - 0.5).abs().max()) < 0.1


@pytest.mark.parametrize("masked", [False, True])
def test_kernel_matches_reference(masked):
    gen = torch.Generator().manual_seed(5)
    k, r, t = 3, 32, 300
    dev = kernel_device()
    img = torch.rand(k, 3, r, r, generator=gen)
    mask = torch.rand(k, r, r, generator=gen) > 0.3 if masked else None
    mips = build_mip_chain(img, mask)
    px = torch.rand(k, t, 2, generator=gen) * (r + 4) - 2                 # some beyond the border
    scale = 2.0 ** (torch.rand(k, t, 1, generator=gen) * 9 - 1)           # level 0 .. beyond the last
    ju = torch.randn(k, t, 2, generator=gen) * scale
    jv = torch.randn(k, t, 2, generator=gen) * scale * 0.3
    fp = footprints(ju, jv)
    where = torch.rand(k, t, generator=gen) > 0.2
    assert int(fp.taps.max()) == 8 and int(fp.taps.min()) < 4
    assert float(fp.lod.max()) > len(mips) - 1 and float((fp.lod % 1).max()) > 0.5   # clamped; trilinear
    for w in (where, None):
        ref = sample_anisotropic_ref(mips, px, fp, w)
        got = sample_anisotropic_gpu([m.to(dev) for m in mips], px.to(dev),
                                     type(fp)(fp.step.to(dev), fp.lod.to(dev), fp.taps.to(dev)),
                                     None if w is None else w.to(dev))
        assert torch.allclose(got.cpu(), ref, atol=1e-5, rtol=1e-5)
    assert float(got.abs().sum()) > 0


def test_kernel_rejects_bad_inputs():
    dev = kernel_device()
    mips = build_mip_chain(torch.rand(2, 3, 8, 8, device=dev))
    fp = footprints(torch.ones(2, 5, 2, device=dev), torch.ones(2, 5, 2, device=dev))
    with pytest.raises(ConfigError, match="px"):
        sample_anisotropic_gpu(mips, torch.zeros(2, 5, 2, dtype=torch.float64, device=dev), fp)
    with pytest.raises(ConfigError, match="mip chain"):
        sample_anisotropic_gpu(mips[:0], torch.zeros(2, 5, 2, device=dev), fp)
    with pytest.raises(ConfigError, match="where"):
        sample_anisotropic_gpu(mips, torch.zeros(2, 5, 2, device=dev), fp, torch.ones(2, 4, device=dev))


@pytest.mark.gpu
def test_kernel_matches_reference_realistic_gpu():
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(6)
    k, r, t = 10, 1024, 400_000
    mips = build_mip_chain(torch.rand(k, 3, r, r, generator=gen, device=dev),
                           torch.rand(k, r, r, generator=gen, device=dev) > 0.1)
    px = torch.rand(k, t, 2, generator=gen, device=dev) * r
    fp = footprints(torch.randn(k, t, 2, generator=gen, device=dev) * 3,
                    torch.randn(k, t, 2, generator=gen, device=dev))
    where = torch.rand(k, t, generator=gen, device=dev) > 0.6
    got = sample_anisotropic_gpu(mips, px, fp, where)
    ref = sample_anisotropic_ref(mips, px, fp, where)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_footprints_cuda_match_cpu():
    gen = torch.Generator().manual_seed(7)
    s = 512
    yy, xx = torch.meshgrid(torch.arange(s) / s, torch.arange(s) / s, indexing="ij")
    pos = torch.stack([torch.sin(3 * xx), yy * 0.8, torch.cos(3 * xx) * 0.5], dim=-1)   # curved sheet
    valid = torch.rand(s, s, generator=gen) > 0.05
    cams = camera_rig()
    cpu = precompute_footprints(pos, valid, cams, 1024)
    gpu = precompute_footprints(pos.cuda(), valid.cuda(), cams, 1024)
    assert torch.allclose(gpu.lod.cpu(), cpu.lod, atol=1e-4)
    aniso = (cpu.taps >= 3) & (gpu.taps.cpu() >= 3)                      # major axis well defined
    assert torch.allclose(gpu.step.cpu().abs()[aniso], cpu.step.abs()[aniso], atol=1e-4)
    assert float((gpu.taps.cpu() != cpu.taps).float().mean()) < 1e-3     # ceil ties may round apart
