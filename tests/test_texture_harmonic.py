"""Harmonic fill of the texels no view saw (engine/texture/harmonic_fill.py, issue 14 item 2)."""

from __future__ import annotations

import numpy as np
from test_texture import _box, _unwrap

from engine.texture.backproject import texel_geometry
from engine.texture.harmonic_fill import fill_smoothness, harmonic_fill, stopping_residual, surface_graph
from engine.texture.inpaint import inpaint_3d, texel_world_size


def _neighbour_means(atlas: np.ndarray, links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean colour of each texel's graph neighbours [N, C], degree [N]) over links [E, 2]."""
    n = atlas.shape[0] * atlas.shape[1]
    flat = atlas.reshape(n, -1).astype(np.float64)
    total, degree = np.zeros_like(flat), np.zeros(n)
    for a, b in (links.T, links[:, ::-1].T):
        np.add.at(total, a, flat[b])
        np.add.at(degree, a, 1)
    return total / np.maximum(degree, 1)[:, None], degree


def _ramp():
    """Flat 5 x 10 chart, colour 0 known in column 0 and 1 in column 9 (solution: c = x / 9)."""
    h, w = 5, 10
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    position = np.stack([xx, yy, np.zeros_like(xx)], -1)
    valid, known = np.ones((h, w), bool), np.zeros((h, w), bool)
    known[:, [0, w - 1]] = True
    atlas = np.full((h, w, 3), 0.5, np.float32)
    atlas[:, 0], atlas[:, w - 1] = 0.0, 1.0
    return atlas, known, valid, position, 1.0


def _seam():
    """Charts A (columns 0-3) and B (6-9) continue each other in 3D; chart C (11-13) is far away and
    holds no known texel (unreachable); only A's first column is known."""
    h, w = 4, 14
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x3 = np.where(xx < 5, xx, xx - 2.0)
    z3 = np.where(xx >= 11, 100.0, 0.0)
    position = np.stack([x3, yy, z3], -1).astype(np.float32)
    valid = np.ones((h, w), bool)
    valid[:, [4, 5, 10]] = False
    known = np.zeros((h, w), bool)
    known[:, 0] = True
    atlas = np.full((h, w, 3), 0.3, np.float32)
    atlas[:, 0] = 0.9
    atlas[:, 11:] = np.linspace(0.1, 0.7, 3 * h * 3, dtype=np.float32).reshape(h, 3, 3)   # kept as is
    return atlas, known, valid, position, 1.0


def test_harmonic_fill_is_a_linear_ramp_between_two_known_columns():
    """A flat chart, colour 0 known in column 0 and 1 in column 9: the Laplace solution is the ramp
    c = x / 9 (the k-nearest start is not); the stopping rule's residual says so."""
    atlas, known, valid, position, delta = _ramp()
    h, w = valid.shape
    stats: dict = {}
    out = harmonic_fill(atlas, known, valid, position, delta=delta, tol=1e-5, stats=stats)
    xx = np.arange(w, dtype=np.float32)
    np.testing.assert_allclose(out[..., 0], np.broadcast_to(xx / (w - 1), (h, w)), atol=1e-4)
    assert stats["harmonic_texels"] == h * (w - 2) and stats["harmonic_kept"] == 0
    assert stopping_residual(out, known, valid, position, delta) <= 1e-5
    assert stopping_residual(atlas, known, valid, position, delta) > 0.05


def test_harmonic_fill_crosses_a_seam_and_keeps_unreachable_texels():
    """Chart A (columns 0-3) and chart B (columns 6-9) are apart in the atlas but continue each other
    in 3D; only A's first column is known. B must be filled across the seam; chart C (far away in 3D,
    no known texel) keeps its start colour."""
    atlas, known, valid, position, delta = _seam()
    h, w = valid.shape
    links = surface_graph(valid, position, delta=delta)
    assert ((links[:, 0] % w == 3) & (links[:, 1] % w == 6)).any()           # seam link A <-> B
    stats: dict = {}
    out = harmonic_fill(atlas, known, valid, position, delta=delta, tol=1e-5, stats=stats)
    np.testing.assert_allclose(out[:, :10][valid[:, :10]], 0.9, atol=1e-4)   # constant boundary
    np.testing.assert_array_equal(out[:, 11:], atlas[:, 11:])                 # C: unreachable, kept
    assert stats["harmonic_kept"] == 3 * h


def test_inpaint_harmonic_on_a_box_is_exact_smooth_and_complete():
    mesh = _unwrap(_box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], n=2))
    texels = texel_geometry(mesh, 96)
    pos, valid = texels.position, texels.valid
    known = valid & (pos[..., 2] > 0.49)                                      # the front face is seen
    atlas = np.zeros((96, 96, 3), np.float32)
    atlas[known] = np.where(pos[known][:, :1] > 0, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    stats: dict = {}
    out = inpaint_3d(atlas, known, texels, stats=stats, harmonic=True)
    np.testing.assert_array_equal(out[known], atlas[known])                   # exact at known texels
    delta = texel_world_size(pos, valid)
    mean, degree = _neighbour_means(out, surface_graph(valid, pos, delta))
    filled = (valid & ~known).ravel()
    assert (degree[filled] > 0).all() and stats["harmonic_texels"] == filled.sum()
    dev = np.abs(out.reshape(-1, 3)[filled] - mean[filled]).max()
    assert dev < 2e-3, dev                                                    # harmonic within tolerance
    knn = inpaint_3d(atlas, known, texels)
    before = fill_smoothness(knn, valid & ~known, valid, pos, delta)
    after = fill_smoothness(out, valid & ~known, valid, pos, delta)
    assert after["fill_rms"] < 0.8 * before["fill_rms"] and after["fill_jumps"] < 0.5 * before["fill_jumps"]


def test_cpu_fusion_plan_follows_the_config():
    from engine.config import InpaintFill, TextureConfig
    from engine.runtime.backends import _cpu_fusion_plan

    assert TextureConfig().inpaint_fill is InpaintFill.HARMONIC
    plan = _cpu_fusion_plan(None, [], 64, 64, None, 0.1, 8, InpaintFill.KNN)
    assert not plan["harmonic"]
    assert _cpu_fusion_plan(None, [], 64, 64, None, 0.1, 8, InpaintFill.HARMONIC)["harmonic"]


def test_gpu_fusion_plan_and_texture_source_follow_the_config(monkeypatch):
    """On CUDA the fusion plan asks for the harmonic fill (engine/texture/harmonic_fill_gpu.py) exactly when
    TextureConfig.inpaint_fill is harmonic, and the texture source says so on both devices."""
    import engine.texture.fusion_gpu as fusion_gpu
    from engine.config import InpaintFill, PipelineConfig
    from engine.pipeline import TEXTURE_SOURCE_HARMONIC, generate_sources
    from engine.runtime.backends import _gpu_fusion_plan

    seen = []
    monkeypatch.setattr(fusion_gpu, "plan_fusion", lambda *a, **kw: seen.append(a[5].harmonic))
    for fill in InpaintFill:
        _gpu_fusion_plan(None, [], 64, 64, None, 0.1, 8, fill)
    assert seen == [fill is InpaintFill.HARMONIC for fill in InpaintFill]
    for device in ("cpu", "cuda"):
        config = PipelineConfig.from_name("flash").with_overrides(device=device)
        assert TEXTURE_SOURCE_HARMONIC in generate_sources({}, config)["texture"]
