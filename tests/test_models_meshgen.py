"""MeshGen DiTs and shared DiT layers on tiny configs (CPU): shapes, determinism, FLOP formula, attention
maths, 3D RoPE, refine token anchoring, strict checkpoint round trip, benchmark smoke run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import WeightsError
from engine.models.attention import attention_flops
from engine.models.checkpoints import (
    load_engine_checkpoint,
    load_state_dict,
    load_strict,
    save_engine_checkpoint,
)
from engine.models.dit_layers import DiTBlock, DiTBlockConfig, apply_rope, build_on, swiglu_hidden
from engine.models.meshgen_dit import (
    MeshGenConfig,
    MeshGenDiT,
    dinov2_tokens,
    flops_per_forward,
    param_count,
    refine_token_positions,
)
from engine.models.rope3d import axis_pairs, rope3d_ref, rope3d_tables


def _tiny(name: str = "tiny", seed: int = 0) -> MeshGenDiT:
    return build_on("cpu", torch.float32, MeshGenDiT, MeshGenConfig.from_name(name), seed=seed).eval()


def _sphere(rows: int = 12, cols: int = 24, r: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    u, v = np.meshgrid(np.linspace(0, np.pi, rows), np.linspace(0, 2 * np.pi, cols), indexing="ij")
    verts = np.stack([np.sin(u) * np.cos(v), np.sin(u) * np.sin(v), np.cos(u)], -1).reshape(-1, 3) * r
    cells = [(i * cols + j, (i + 1) * cols + j) for i in range(rows - 1) for j in range(cols - 1)]
    faces = [[a, a + 1, b] for a, b in cells] + [[a + 1, b + 1, b] for a, b in cells]
    return torch.tensor(verts), torch.tensor(faces)


def test_paper_sizes():
    coarse, refine = MeshGenConfig.paper(), MeshGenConfig.refine()
    assert (coarse.depth, coarse.width, coarse.heads) == (24, 2048, 16)
    assert (coarse.n_tokens, coarse.latent_dim) == (4096, 64)
    assert coarse.long_skips == 11 and coarse.mlp_hidden == 5632 == swiglu_hidden(2048)
    assert coarse.n_context == dinov2_tokens(518) == 1374 and refine.n_context == dinov2_tokens(1022) == 5334
    assert refine.n_tokens == 16384 and refine.rope and refine.steps == 5
    n = param_count(coarse)
    assert abs(n - 2.3e9) / 2.3e9 < 0.01, n  # paper: "a 2.3B parameter model"
    assert param_count(refine) == n


def test_forward_shapes_and_determinism():
    m = _tiny()
    cfg = m.cfg
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, cfg.n_tokens, cfg.latent_dim, generator=g)
    cond = torch.randn(2, cfg.n_context, cfg.context_dim, generator=g)
    t = torch.tensor([999.0, 10.0])
    with torch.inference_mode():
        v = m(x, t, m.precompute_context(cond))
        v2 = _tiny()(x, t, _tiny().precompute_context(cond))
        v3 = _tiny(seed=1)(x, t, _tiny(seed=1).precompute_context(cond))
        v_t = m(x, torch.tensor([500.0, 10.0]), m.precompute_context(cond))
    assert v.shape == x.shape and torch.isfinite(v).all()
    assert torch.equal(v, v2) and not torch.allclose(v, v3)
    assert not torch.allclose(v_t[0], v[0]) and torch.allclose(v_t[1], v[1], atol=1e-6)  # per-sample t


def test_flops_formula_matches_counter():
    m = _tiny()
    cfg, b = m.cfg, 2
    x = torch.randn(b, cfg.n_tokens, cfg.latent_dim)
    ctx = m.precompute_context(torch.randn(b, cfg.n_context, cfg.context_dim))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        m(x, torch.tensor([3.0, 4.0]), ctx)
    w = cfg.width
    adaln = cfg.depth * 2 * b * w * 3 * len(cfg.modulate) * w
    t_mlp = 2 * b * (cfg.freq_dim * w + w * w)
    attn = cfg.depth * (attention_flops(b, cfg.heads, cfg.n_tokens, cfg.n_tokens, w // cfg.heads)
                        + attention_flops(b, cfg.heads, cfg.n_tokens, cfg.n_context, w // cfg.heads))
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    gemm = sum(v for k, v in counts.items() if k in ("aten.mm", "aten.addmm", "aten.bmm"))
    # the GEMMs match exactly; attention (CPU SDPA kernel, not seen by the counter) by the formula
    assert gemm == flops_per_forward(cfg, batch=b) - attn + adaln + t_mlp


def test_cross_attention_and_block_math():
    torch.manual_seed(0)
    cfg = DiTBlockConfig(width=32, heads=4, mlp_hidden=64, context_dim=24, modulate=("self", "cross", "ffn"),
                         adaln_zero=True)
    blk = DiTBlock(cfg).eval()
    x, c, ctx = torch.randn(2, 9, 32), torch.randn(2, 32), torch.randn(2, 5, 24)
    with torch.inference_mode():
        assert torch.equal(blk(x, c, blk.cross.context_kv(ctx)), x)  # adaLN-Zero: identity at init
        ca = blk.cross
        k, v = ca.context_kv(ctx)
        q = ca.q_norm(ca.q(x).view(2, 9, 4, 8).transpose(1, 2))
        want = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
        want = ca.out(want.transpose(1, 2).reshape(2, 9, 32))
        assert torch.allclose(ca(x, (k, v)), want, atol=1e-5)


def test_rope3d_tables_and_relative_positions():
    assert axis_pairs(128) == (22, 21, 21) and sum(axis_pairs(64)) == 32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 6, 12, generator=g)
    pos = torch.randint(0, 16, (6, 3), generator=g)
    cos, sin = rope3d_tables(pos, 12)
    assert torch.allclose(apply_rope(x, cos, sin), rope3d_ref(x, pos), atol=1e-5)
    q, k = torch.randn(1, 2, 6, 12, generator=g), torch.randn(1, 2, 6, 12, generator=g)

    def scores(p: torch.Tensor) -> torch.Tensor:
        c, s = rope3d_tables(p, 12)
        return apply_rope(q, c, s) @ apply_rope(k, c, s).transpose(-1, -2)

    shifted = pos + torch.tensor([3, -2, 5])
    assert torch.allclose(scores(pos), scores(shifted), atol=1e-4)  # depends on relative positions only
    assert not torch.allclose(scores(pos), scores(pos * 2), atol=1e-2)


@pytest.mark.parametrize("n,grid", [(64, 8), (300, 16), (500, 16)])
def test_refine_token_positions(n, grid):
    verts, faces = _sphere()
    vox, centres = refine_token_positions(verts, faces, n=n, grid=grid, seed=3)
    assert vox.shape == (n, 3) and centres.shape == (n, 3)
    assert len({tuple(p) for p in vox.tolist()}) == n  # exactly n unique voxels
    assert int(vox.min()) >= 0 and int(vox.max()) < grid
    radius = centres.norm(dim=1)
    assert float((radius - 0.8).abs().max()) < 3 * (2.0 / grid)  # anchored near the surface
    vox2, _ = refine_token_positions(verts, faces, n=n, grid=grid, seed=3)
    assert torch.equal(vox, vox2)


def test_refine_model_runs_with_positions():
    m = _tiny("tiny_refine")
    cfg = m.cfg
    vox, _ = refine_token_positions(*_sphere(), n=cfg.n_tokens, grid=8)
    cond = torch.randn(1, cfg.n_context, cfg.context_dim)
    x = torch.randn(1, cfg.n_tokens, cfg.latent_dim)
    with torch.inference_mode():
        v = m(x, torch.tensor([500.0]), m.precompute_context(cond, vox))
        v_perm = m(x, torch.tensor([500.0]), m.precompute_context(cond, vox.flip(0)))
    assert v.shape == x.shape and not torch.allclose(v, v_perm)  # positions matter
    with pytest.raises(ValueError, match="positions"):
        m.precompute_context(cond)


def test_checkpoint_round_trip_strict(tmp_path):
    m = _tiny()
    path = save_engine_checkpoint(tmp_path / "meshgen_tiny.safetensors", m, m.cfg, "meshgen_dit")
    m2, cfg2 = load_engine_checkpoint(path, MeshGenDiT, MeshGenConfig, model_name="meshgen_dit")
    assert cfg2 == m.cfg
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    state = load_state_dict(path)
    state.pop("blocks.0.attn.qkv.weight")
    state["blocks.0.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="blocks.0.attn.qkv.weight") as err:
        load_strict(_tiny(), state)
    assert "blocks.0.extra" in str(err.value)


def test_benchmark_cpu_tiny(tmp_path):
    from benchmarks.models.meshgen import bench, write_markdown

    rows = bench(device="cpu", preset="tiny", repeats=1)
    want = {"coarse_step_eager", "coarse_step_graph", "coarse_2_steps_eager", "refine_2_steps_graph",
            "coarse_teacher_100_steps_scaled"}
    assert {r["variant"] for r in rows} >= want
    assert all(r["p50"] > 0 and math.isfinite(r["p50"]) for r in rows)
    out = tmp_path / "meshgen.md"
    write_markdown(rows, out, "cpu")
    assert "coarse" in out.read_text()
