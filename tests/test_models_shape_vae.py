"""VecSet shape VAE decoder and hierarchical decoding: layout, determinism, top-k, strict loading, hierarchy
equal to dense decoding (analytic fields and a smooth tiny VAE), and the benchmark's CPU smoke run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.errors import ConfigError, WeightsError
from engine.models.shape_decoding import (
    GridField,
    HierarchyConfig,
    SphereField,
    TorusField,
    VaeField,
    active_cells,
    dense_decode,
    hierarchical_decode,
)
from engine.models.shape_vae import (
    LatentKV,
    ShapeVaeConfig,
    ShapeVaeDecoder,
    init_random,
    load_hunyuan_vae,
    param_count,
    query_flops,
    topk_attention,
)
from triton_kernels.marching_cubes import marching_cubes_ref


def _tiny(seed: int = 0, **changes) -> ShapeVaeDecoder:
    return init_random(ShapeVaeDecoder(ShapeVaeConfig.tiny().with_(**changes)), seed).eval()


def _latents(cfg: ShapeVaeConfig, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, cfg.num_latents, cfg.embed_dim, generator=torch.Generator().manual_seed(seed))


def _points(p: int, seed: int = 2) -> torch.Tensor:
    return torch.rand(1, p, 3, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


def test_hunyuan_layout_names_and_shapes():
    with torch.device("meta"):
        model = ShapeVaeDecoder(ShapeVaeConfig.from_name("hunyuan_v2_0"))
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sd["post_kl.weight"] == (1024, 64)
    assert sd["transformer.resblocks.15.attn.c_qkv.weight"] == (3072, 1024)
    assert "transformer.resblocks.0.attn.c_qkv.bias" not in sd                   # qkv_bias false
    assert sd["transformer.resblocks.0.attn.attention.q_norm.weight"] == (64,)
    assert sd["transformer.resblocks.0.mlp.c_fc.weight"] == (4096, 1024)
    assert sd["geo_decoder.query_proj.weight"] == (1024, 51)                     # 3 (2 * 8 + 1)
    assert sd["geo_decoder.cross_attn_decoder.attn.c_kv.weight"] == (2048, 1024)
    assert sd["geo_decoder.cross_attn_decoder.attn.attention.k_norm.bias"] == (64,)
    assert sd["geo_decoder.output_proj.weight"] == (1, 1024)
    assert "transformer.resblocks.16.ln_1.weight" not in sd and len(sd) == 266
    assert 200e6 < param_count(model) < 230e6
    assert ShapeVaeConfig.from_name("hunyuan_v2_1").num_latents == 4096
    assert ShapeVaeConfig.from_name("hunyuan_mini").scale_factor == pytest.approx(1.0188137142395404)
    with pytest.raises(ConfigError):
        ShapeVaeConfig.from_name("nope")


def test_fourier_embedding_layout():
    emb = ShapeVaeDecoder(ShapeVaeConfig.tiny().with_(num_freqs=3)).geo_decoder.fourier_embedder
    p = torch.tensor([[0.1, -0.4, 0.7]])
    e = [p[0, i].item() * 2.0**j for i in range(3) for j in range(3)]               # coordinate-major
    expected = [0.1, -0.4, 0.7] + [math.sin(a) for a in e] + [math.cos(a) for a in e]
    torch.testing.assert_close(emb(p)[0], torch.tensor(expected), rtol=0, atol=1e-6)


def test_shapes_and_seed_determinism():
    cfg = ShapeVaeConfig.tiny()
    a, b, c = _tiny(0), _tiny(0), _tiny(1)
    kv = a.decode_latents(_latents(cfg))
    assert kv.k.shape == (1, cfg.heads, cfg.num_latents, cfg.width // cfg.heads) == kv.v.shape
    with torch.no_grad():
        out_a = a.query(_points(300), kv)
        out_b = b.query(_points(300), b.decode_latents(_latents(cfg)))
        out_c = c.query(_points(300), c.decode_latents(_latents(cfg)))
    assert out_a.shape == (1, 300) and out_a.dtype == torch.float32
    assert torch.equal(out_a, out_b) and not torch.allclose(out_a, out_c)


def test_topk_all_latents_equals_full_attention():
    model = _tiny()
    with torch.no_grad():
        kv = model.decode_latents(_latents(model.cfg))
        full = model.query(_points(1000), kv)
        for chunk in (128, 1000, 300):
            same = model.query(_points(1000), kv, topk=model.cfg.num_latents, chunk=chunk)
            torch.testing.assert_close(same, full, rtol=0, atol=0)
        k_all = topk_attention(torch.randn(1, 4, 500, 16), kv, model.cfg.num_latents, 128)
        q = torch.randn(1, 4, 500, 16, generator=torch.Generator().manual_seed(3))
        ref = torch.softmax(q @ kv.k.transpose(-1, -2) / 4.0, -1) @ kv.v
        torch.testing.assert_close(topk_attention(q, kv, model.cfg.num_latents, 128), ref, rtol=1e-5,
                                   atol=1e-5)
        assert k_all.shape == (1, 4, 500, 16)


def test_topk_selects_by_mean_chunk_logit():
    """k < N against a masked dense reference: per (chunk, head) the latents with the largest
    k . mean(q) are kept and the others get -inf logits."""
    g = torch.Generator().manual_seed(5)
    b, h, p, n, d, k, chunk = 1, 2, 96, 40, 8, 7, 32
    q, kk, vv = (torch.randn(b, h, m, d, generator=g) for m in (p, n, n))
    out = topk_attention(q, LatentKV(kk, vv), k, chunk)
    for c in range(p // chunk):
        qc = q[:, :, c * chunk:(c + 1) * chunk]
        keep = (qc.mean(2, keepdim=True) @ kk.transpose(-1, -2)).topk(k, -1).indices        # [B, H, 1, k]
        mask = torch.full((b, h, 1, n), -math.inf).scatter(-1, keep, 0.0)
        ref = torch.softmax(qc @ kk.transpose(-1, -2) / math.sqrt(d) + mask, -1) @ vv
        torch.testing.assert_close(out[:, :, c * chunk:(c + 1) * chunk], ref, rtol=1e-5, atol=1e-5)


def test_inside_positive_flips_sign():
    a, b = _tiny(0), _tiny(0, inside_positive=True)
    with torch.no_grad():
        va = a.query(_points(50), a.decode_latents(_latents(a.cfg)))
        vb = b.query(_points(50), b.decode_latents(_latents(b.cfg)))
    torch.testing.assert_close(va, -vb, rtol=0, atol=0)


def _hunyuan_file(tmp_path, model: ShapeVaeDecoder, extra: dict | None = None, drop: str | None = None):
    from safetensors.torch import save_file

    state = {"vae." + k: v.detach().half().contiguous() for k, v in model.state_dict().items() if k != drop}
    state["vae.encoder.cross_attn.ln_1.weight"] = torch.ones(64, dtype=torch.float16)   # ignored encoder
    state["vae.pre_kl.weight"] = torch.zeros(16, 64, dtype=torch.float16)
    state["model.latent_in.weight"] = torch.zeros(4, 4, dtype=torch.float16)             # the DiT's group
    state.update(extra or {})
    path = tmp_path / "model.fp16.safetensors"
    save_file(state, str(path))
    return path


def test_strict_load_hunyuan_layout_and_fp16_cast(tmp_path):
    from engine.models.checkpoints import load_state_dict

    src = _tiny(3)
    path = _hunyuan_file(tmp_path, src)
    dst = load_hunyuan_vae(_tiny(9), load_state_dict(path, prefix="vae."))
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert b.dtype == torch.float32, name
        assert torch.equal(b, a.half().float()), name                               # fp16 values, fp32 model
    with torch.no_grad():
        kv = dst.decode_latents(_latents(dst.cfg))
        ref = src.query(_points(64), src.decode_latents(_latents(src.cfg)))
        torch.testing.assert_close(dst.query(_points(64), kv), ref, rtol=2e-2, atol=2e-3)


def test_strict_load_lists_missing_and_unexpected_keys(tmp_path):
    from engine.models.checkpoints import load_state_dict

    src = _tiny(3)
    missing = "geo_decoder.cross_attn_decoder.attn.c_q.weight"
    path = _hunyuan_file(tmp_path, src, drop=missing)
    with pytest.raises(WeightsError, match="c_q.weight"):
        load_hunyuan_vae(_tiny(9), load_state_dict(path, prefix="vae."))
    path = _hunyuan_file(tmp_path, src, extra={"vae.geo_decoder.extra.weight": torch.zeros(2)})
    with pytest.raises(WeightsError, match="extra.weight"):
        load_hunyuan_vae(_tiny(9), load_state_dict(path, prefix="vae."))


def _crossing_cells(values: np.ndarray) -> np.ndarray:
    inside = torch.from_numpy(values < 0).float()[None, None]
    some_in = torch.nn.functional.max_pool3d(inside, 2, stride=1) > 0
    some_out = torch.nn.functional.max_pool3d(1.0 - inside, 2, stride=1) > 0
    return (some_in & some_out)[0, 0].numpy()


def _assert_hierarchy_matches_dense(fld, cfg: HierarchyConfig, exact: bool = True):
    h = hierarchical_decode(fld, cfg)
    dense = dense_decode(fld, cfg.final_res, cfg.bound)
    if exact:
        assert torch.equal(h.values[h.decoded], dense[h.decoded])
    else:
        torch.testing.assert_close(h.values[h.decoded], dense[h.decoded], rtol=0, atol=1e-6)
    assert sum(h.queries) < dense.numel()                                           # it is sparse
    # every crossing cell of the dense field lies in an active brick (sparse MC's contract) ...
    crossing = _crossing_cells(dense.numpy())
    b = cfg.brick
    covered = h.brick_mask.repeat_interleave(b, 0).repeat_interleave(b, 1).repeat_interleave(b, 2)
    assert crossing.any() and not (crossing & ~covered.numpy()).any()
    # ... and has all 8 corners decoded, so the hierarchical field meshes exactly like the dense one.
    corners_decoded = -torch.nn.functional.max_pool3d(-h.decoded.float()[None, None], 2, stride=1)[0, 0]
    assert (corners_decoded.numpy()[crossing] == 1).all()
    vd, fd = marching_cubes_ref(dense.numpy())
    vh, fh = marching_cubes_ref(h.values.numpy())
    assert np.array_equal(fd, fh)
    np.testing.assert_allclose(vh, vd, rtol=0, atol=1e-4)
    verts, faces = h.mesh()
    assert faces.shape[0] == fd.shape[0] and float(verts.abs().max()) <= cfg.bound
    return h


@pytest.mark.parametrize("fld", [SphereField(0.6, (0.05, -0.02, 0.1)), TorusField()])
def test_hierarchical_equals_dense_analytic(fld):
    cfg = HierarchyConfig(final_res=64, coarse_res=16, band_voxels=2.0, brick=4)
    h = _assert_hierarchy_matches_dense(fld, cfg)
    assert len(h.queries) == 3 and h.brick_mask.shape == (16, 16, 16)


def test_hierarchical_equals_dense_smooth_tiny_vae():
    model = _tiny(3, num_freqs=1)
    fld = VaeField(model, model.decode_latents(_latents(model.cfg)), chunk=256)
    coarse = dense_decode(fld, 8)
    with torch.no_grad():
        model.geo_decoder.output_proj.bias.fill_(-float(coarse.median()))                # a surface inside
    dense = dense_decode(fld, 32)
    lipschitz = float(torch.stack(torch.gradient(dense, spacing=2.02 / 32), -1).norm(dim=-1).max())
    cfg = HierarchyConfig(final_res=32, coarse_res=8, band_voxels=2.0 * lipschitz, brick=4)
    h = _assert_hierarchy_matches_dense(fld, cfg, exact=False)
    topk = VaeField(model, fld.kv, topk=model.cfg.num_latents, chunk=64)                # k = N: exact
    torch.testing.assert_close(hierarchical_decode(topk, cfg).values, h.values, rtol=0, atol=1e-6)


def test_sign_change_cells_survive_a_narrow_band():
    """A step field (|v| = 1 everywhere, band 0.1) is refined only through the sign-change rule."""

    def step(points: torch.Tensor) -> torch.Tensor:
        return torch.where(points[:, 0] + 0.3 * points[:, 1] < 0.137, -1.0, 1.0)

    cfg = HierarchyConfig(final_res=32, coarse_res=8, band=0.1, dilate=0, brick=4)
    h = hierarchical_decode(step, cfg)
    crossing = _crossing_cells(dense_decode(step, 32).numpy())
    assert torch.equal(h.values[h.decoded], dense_decode(step, 32)[h.decoded])
    corners_decoded = -torch.nn.functional.max_pool3d(-h.decoded.float()[None, None], 2, stride=1)[0, 0]
    assert crossing.any() and (corners_decoded.numpy()[crossing] == 1).all()
    assert not active_cells(torch.ones(5, 5, 5), 0.5).any()


def test_grid_field_is_exact_at_nodes_and_trilinear_between():
    values = dense_decode(TorusField(), 16)
    fld = GridField(values)
    torch.testing.assert_close(dense_decode(fld, 16), values, rtol=0, atol=1e-6)
    mid = torch.tensor([[-1.01 + 1.5 * 2.02 / 16, -1.01 + 3 * 2.02 / 16, -1.01 + 7 * 2.02 / 16]])
    torch.testing.assert_close(fld(mid), (values[1, 3, 7] + values[2, 3, 7])[None] / 2, rtol=0, atol=1e-6)


def test_hierarchy_config_validation_and_flops():
    with pytest.raises(ConfigError):
        HierarchyConfig(final_res=96, coarse_res=64)
    with pytest.raises(ConfigError):
        HierarchyConfig(final_res=64, coarse_res=16, brick=3)
    assert HierarchyConfig().resolutions == [64, 128, 256, 512]
    cfg = ShapeVaeConfig.hunyuan_v2_0()
    assert query_flops(cfg, 4096, topk=1024) < query_flops(cfg, 4096)


def test_benchmark_cpu_tiny(tmp_path):
    from benchmarks.models.shape_vae import main

    out, csv = tmp_path / "t.md", tmp_path / "t.csv"
    main(["--device", "cpu", "--preset", "tiny", "--repeats", "1", "--out", str(out), "--csv", str(csv)])
    text = out.read_text()
    assert "| full | total |" in text and "| topk16 | r32 |" in text
    assert len(csv.read_text().splitlines()) == 1 + 2 * 9
