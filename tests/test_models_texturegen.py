"""TextureGen: structured multi-view attention, the DiT (tiny config), the flow-matching sampler, the
benchmark's CPU path."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import ConfigError, WeightsError
from engine.models import multiview_attention as mva
from engine.models.checkpoints import load_strict
from engine.models.multiview_attention import (
    MultiViewAttentionPlan,
    context_table,
    multiview_attention,
    multiview_attention_ref,
    slot_names,
)
from engine.models.texturegen_dit import (
    TextureGenConfig,
    TextureGenDiT,
    attention_share,
    build_texturegen,
    flops_per_forward,
    param_count,
)
from engine.sampling.texturegen_sampler import (
    GuidanceMode,
    TextureSamplerConfig,
    flow_times,
    sample_texture_views,
)
from engine.texture.views import camera_rig

# ---------------------------------------------------------------- the pattern


def test_slot_order_is_the_rig_order():
    for k in (6, 10):
        assert slot_names(k) == ("reference",) + tuple(c.name for c in camera_rig(k))


def test_context_table_follows_the_paper_rule():
    names = slot_names(10)
    table = {names[s]: {names[c] for c in ctx} for s, ctx in enumerate(context_table(10))}
    ring = ["front", "front_right", "right", "rear_right", "rear", "rear_left", "left", "front_left"]
    cardinals = {"front", "right", "rear", "left"}
    assert table["reference"] == {"reference"}
    for i, view in enumerate(ring):
        nbrs = {ring[i - 1], ring[(i + 1) % 8]}
        assert table[view] == {"reference", view} | nbrs
        if view not in cardinals:            # diagonals see only cardinal neighbours
            assert nbrs <= cardinals
        else:                                # cardinals see the two diagonals beside them
            assert not nbrs & cardinals
    assert table["top"] == {"reference", "top"} | cardinals
    assert table["bottom"] == {"reference", "bottom"} | cardinals
    # K = 6: the ring is the 4 cardinals, each sees the two beside it
    names6 = slot_names(6)
    t6 = {names6[s]: {names6[c] for c in ctx} for s, ctx in enumerate(context_table(6))}
    assert t6["front"] == {"reference", "front", "right", "left"}
    assert t6["top"] == {"reference", "top", "front", "right", "rear", "left"}


@pytest.mark.parametrize("num_views", [10, 6])
def test_sparse_attention_equals_dense_masked(num_views):
    gen = torch.Generator().manual_seed(0)
    s = 1 + num_views
    q, k, v = (torch.randn(2, s, 12, 3, 16, generator=gen) for _ in range(3))
    plan = MultiViewAttentionPlan(num_views)
    out = multiview_attention(q, k, v, plan)
    ref = multiview_attention_ref(q, k, v, plan.table)
    assert out.shape == (2, s, 12, 3, 16)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_sparse_attention_strided_inputs_match():
    """The model passes strided views of one fused QKV tensor."""
    gen = torch.Generator().manual_seed(1)
    qkv = torch.randn(1, 11, 6, 3, 2, 8, generator=gen)
    q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
    plan = MultiViewAttentionPlan(10)
    torch.testing.assert_close(multiview_attention(q, k, v, plan),
                               multiview_attention_ref(q.contiguous(), k.contiguous(), v.contiguous(),
                                                       plan.table), rtol=1e-5, atol=1e-6)


def test_sparse_attention_never_builds_the_dense_problem(monkeypatch):
    calls = []

    def spy(q, k, v, mask=None):
        calls.append((tuple(q.shape), tuple(k.shape), mask))
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    monkeypatch.setattr(mva, "attention", spy)
    t = 5
    q = torch.randn(2, 11, t, 2, 8)
    mva.multiview_attention(q, q, q, MultiViewAttentionPlan(10))
    # three grouped calls: reference (1 slot), 8 side views (4 slots each), top/bottom (6 slots each)
    assert [(c[0][0], c[1][2]) for c in calls] == [(2, 1 * t), (16, 4 * t), (4, 6 * t)]
    assert all(c[2] is None for c in calls)


def test_context_reduction():
    plan = MultiViewAttentionPlan(10)
    assert plan.context_slots() == 45                      # of 121 for full attention
    assert attention_share(TextureGenConfig.paper(), (64, 64)) == pytest.approx(45 / 121)


# ---------------------------------------------------------------- the DiT


def _inputs(cfg: TextureGenConfig, b: int = 2, hw: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    c = cfg.latent_channels
    grid = torch.randn(b, cfg.num_slots, c, hw, hw, generator=gen)
    geo = torch.randn(b, cfg.num_views, 2 * c, hw, hw, generator=gen)
    t5 = torch.randn(b, 7, cfg.t5_dim, generator=gen)
    clip = torch.randn(b, 3, cfg.clip_dim, generator=gen)
    t = torch.rand(b, generator=gen)
    return grid, geo, t5, clip, t


def _run(model: TextureGenDiT, grid, geo, t5, clip, t):
    with torch.inference_mode():
        return model(grid, t, model.prepare(geo, t5, clip))


def _live_gates(model: TextureGenDiT, seed: int = 3) -> TextureGenDiT:
    """Random AdaLN weights (AdaLN-Zero makes a fresh block the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in model.blocks:
            blk.ada[1].weight.copy_(torch.randn(blk.ada[1].weight.shape, generator=gen) * 0.05)
    return model


def test_dit_shapes_and_seed_determinism():
    cfg = TextureGenConfig.tiny()
    inputs = _inputs(cfg)
    a = _run(_live_gates(build_texturegen(cfg, seed=5)), *inputs)
    b = _run(_live_gates(build_texturegen(cfg, seed=5)), *inputs)
    c = _run(_live_gates(build_texturegen(cfg, seed=6)), *inputs)
    assert a.shape == inputs[0].shape and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_dit_patch_two_shapes():
    cfg = TextureGenConfig(depth=1, width=32, heads=2, latent_channels=3, patch=2, t5_dim=8, clip_dim=8)
    out = _run(build_texturegen(cfg), *_inputs(cfg, b=1, hw=4))
    assert out.shape == (1, 11, 3, 4, 4)


def test_dit_information_flows_only_along_the_pattern():
    """One block: a view's output depends on its context slots only; the reference on itself only."""
    cfg = TextureGenConfig(depth=1, width=32, heads=2, latent_channels=2, t5_dim=8, clip_dim=8)
    model = _live_gates(build_texturegen(cfg, seed=2))
    grid, geo, t5, clip, t = _inputs(cfg, b=1, hw=3)
    base = _run(model, grid, geo, t5, clip, t)
    names = slot_names(10)
    rear = names.index("rear")
    poked = grid.clone()
    poked[:, rear] += 1.0
    out = _run(model, poked, geo, t5, clip, t)
    changed = {names[s] for s in range(11) if not torch.allclose(out[:, s], base[:, s], atol=1e-6)}
    assert changed == {"rear", "rear_right", "rear_left", "top", "bottom"}


def test_dit_strict_checkpoint_round_trip(tmp_path):
    cfg = TextureGenConfig.tiny()
    src = _live_gates(build_texturegen(cfg, seed=9))
    path = tmp_path / "texturegen.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = load_strict(build_texturegen(cfg, seed=1), load_file(str(path)))
    inputs = _inputs(cfg)
    assert torch.equal(_run(src, *inputs), _run(dst, *inputs))
    broken = load_file(str(path))
    broken.pop("blocks.0.attn.qkv.weight")
    broken["blocks.0.attn.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="blocks.0.attn.qkv.weight"):
        load_strict(build_texturegen(cfg), broken)


def test_paper_size_and_flops():
    with torch.device("meta"):
        model = TextureGenDiT(TextureGenConfig.paper())
    assert 7.3e9 < param_count(model) < 7.5e9
    cfg = TextureGenConfig.paper()
    sparse = flops_per_forward(cfg, 1, (64, 64), 205)
    dense = flops_per_forward(cfg, 1, (64, 64), 205, dense_attention=True)
    assert 0.5 * dense < sparse < dense


def test_config_validation():
    with pytest.raises(ConfigError):
        TextureGenConfig(num_views=8)
    with pytest.raises(ConfigError):
        TextureGenConfig.from_name("huge")
    with pytest.raises(ConfigError):
        TextureSamplerConfig(steps=0)


# ---------------------------------------------------------------- the sampler


def _oracle(target_of, log):
    """Exact velocity towards a point target x1 = target_of(reference [B', C, h, w]) on the straight
    path: v = (x1 - z) / (1 - t). Slot 0's velocity is garbage (NaN) to prove it is ignored."""

    def fn(grid, t):
        log.append((grid.clone(), t.clone()))
        x1 = target_of(grid[:, 0])
        x1 = x1[:, None] if x1.dim() == 4 else x1                  # one target for all views, or per slot
        v = (x1 - grid) / (1.0 - t)[:, None, None, None, None]
        v[:, 0] = float("nan")
        return v

    return fn


def test_sampler_distilled_closed_form():
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 10, 3, 4, 4, generator=gen, dtype=torch.float64)
    ref = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    star = torch.randn(2, 10, 3, 4, 4, generator=gen, dtype=torch.float64)
    log = []
    out = sample_texture_views(_oracle(lambda r: torch.cat([r[:, None], star], 1), log), noise, ref,
                               TextureSamplerConfig.flash())
    x1 = star
    torch.testing.assert_close(out, x1)
    times = flow_times(4)
    assert len(log) == 4
    for (grid, t), tk in zip(log, times[:-1], strict=True):
        assert torch.allclose(t, torch.full_like(t, tk))
        torch.testing.assert_close(grid[:, 1:], (1 - tk) * noise + tk * x1)   # exactly on the line
        assert torch.equal(grid[:, 0], ref)                                     # pinned every step


def test_sampler_cfg_closed_form_and_pinned_reference():
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(1, 10, 2, 3, 3, generator=gen, dtype=torch.float64)
    ref = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64)
    white = torch.full((2, 3, 3), 0.7, dtype=torch.float64)
    star = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64)
    w = 2.5
    log = []
    cfg = TextureSamplerConfig(steps=4, mode=GuidanceMode.CFG, guidance_scale=w)
    out = sample_texture_views(_oracle(lambda r: star + r, log), noise, ref, cfg, white_reference=white)
    # cond target star + ref, uncond target star + white: the guided flow is straight to their w-mix
    expect = (star + (1 - w) * white + w * ref)[:, None].expand_as(noise)
    torch.testing.assert_close(out, expect)
    for grid, _ in log:
        assert grid.shape[0] == 2
        assert torch.equal(grid[0, 0], ref[0]) and torch.equal(grid[1, 0], white)
        assert torch.equal(grid[0, 1:], grid[1, 1:])
    with pytest.raises(ConfigError):
        sample_texture_views(_oracle(lambda r: r, []), noise, ref, cfg)


def test_sampler_with_tiny_dit_is_deterministic():
    cfg = TextureGenConfig.tiny()
    model = _live_gates(build_texturegen(cfg, seed=4))
    _, geo, t5, clip, _ = _inputs(cfg, b=1, hw=4)
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(1, 10, cfg.latent_channels, 4, 4, generator=gen)
    ref = torch.randn(1, cfg.latent_channels, 4, 4, generator=gen)
    white = torch.ones(cfg.latent_channels, 4, 4)
    outs = []
    with torch.inference_mode():
        for _ in range(2):
            req = model.prepare(geo, t5, clip, repeat=2)
            outs.append(sample_texture_views(model.velocity_fn(req), noise, ref,
                                             TextureSamplerConfig.default(), white))
    assert outs[0].shape == noise.shape and torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------- the benchmark's CPU path


def test_benchmark_cpu_tiny(tmp_path):
    from benchmarks.models import texturegen as bench

    out, csv = tmp_path / "tg.md", tmp_path / "tg.csv"
    bench.main(["--device", "cpu", "--preset", "tiny", "--repeats", "1", "--out", str(out),
                "--csv", str(csv)])
    text = out.read_text()
    assert "flash" in text and "default" in text and "4.420" in text
    assert len(csv.read_text().strip().splitlines()) > 4


def test_live_adaln_draws_equal_live_adaln(tmp_path):
    """The background draws give a fresh random DiT exactly ``live_adaln``'s weights (the ones the FP8
    recipe was measured on), touching only the adaLN-Zero blocks' modulation: drawn serially the first
    time (the generator states kept), in parallel from the kept states after, serially again when the
    kept file is corrupt."""
    from engine.models.dit_layers import build_on
    from engine.models.texturegen_dit import (LiveAdalnDraws, TextureGenConfig, TextureGenDiT, init_random,
                                              live_adaln)

    cfg = TextureGenConfig.tiny()

    def fresh():
        return build_on("cpu", torch.float32, TextureGenDiT, cfg, seed=3, init=init_random)

    ref = live_adaln(fresh(), seed=3).state_dict()
    states = tmp_path / "live" / "states.pt"
    for parallel in (False, True, False):
        if parallel is False and states.exists():
            states.write_bytes(b"corrupt")
        draws = LiveAdalnDraws(cfg, seed=3, dtype=torch.float32, states=states, workers=2)
        got = draws.apply(fresh())
        assert draws.parallel is parallel and states.is_file()
        changed = 0
        for (name, a), (_, b) in zip(got.state_dict().items(), ref.items(), strict=True):
            assert torch.equal(a, b), name
            changed += name.startswith("blocks.") and name.endswith("ada.1.weight") and bool(a.any())
        assert changed == cfg.depth
    with pytest.raises(ValueError, match="not zero"):
        LiveAdalnDraws(cfg, seed=3, dtype=torch.float32).apply(got)
