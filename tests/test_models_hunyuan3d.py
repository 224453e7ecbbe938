"""Hunyuan3D-2 shape DiT: published key names, an independent functional reference of the published forward,
determinism; snapshot loading in the published layout (config.yaml + model.fp16.safetensors)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.models.checkpoints import init_random
from engine.models.hunyuan3d_dit import Hunyuan3DDiT, Hunyuan3DDiTConfig, flops_per_forward, param_count


def _tiny(guidance_embed: bool = False, seed: int = 0) -> Hunyuan3DDiT:
    cfg = Hunyuan3DDiTConfig.tiny()
    if guidance_embed:
        cfg = Hunyuan3DDiTConfig.from_yaml_params({**cfg.__dict__, "guidance_embed": True})
    return init_random(Hunyuan3DDiT(cfg), seed).eval()


def _published_keys(depth: int, single: int, guidance: bool, qkv_bias: bool = True) -> set[str]:
    wb = ("weight", "bias")
    top = ("latent_in", "cond_in", "final_layer.linear", "final_layer.adaLN_modulation.1", "time_in.in_layer",
           "time_in.out_layer")
    keys = {f"{m}.{p}" for m in top for p in wb}
    if guidance:
        keys |= {f"guidance_in.{m}.{p}" for m in ("in_layer", "out_layer") for p in wb}
    for i in range(depth):
        for s in ("img", "txt"):
            b = f"double_blocks.{i}.{s}"
            keys |= {f"{b}_mod.lin.{p}" for p in wb} | {f"{b}_attn.proj.{p}" for p in wb}
            keys |= {f"{b}_attn.qkv.{p}" for p in (wb if qkv_bias else ("weight",))}
            keys |= {f"{b}_attn.norm.{n}_norm.scale" for n in ("query", "key")}
            keys |= {f"{b}_mlp.{j}.{p}" for j in (0, 2) for p in wb}
    for i in range(single):
        b = f"single_blocks.{i}"
        keys |= {f"{b}.{m}.{p}" for m in ("linear1", "linear2", "modulation.lin") for p in wb}
        keys |= {f"{b}.norm.{n}_norm.scale" for n in ("query", "key")}
    return keys


@pytest.mark.parametrize("name", ["v2_0", "v2_0_fast", "mini"])
def test_published_key_names_and_sizes(name):
    cfg = Hunyuan3DDiTConfig.from_name(name)
    with torch.device("meta"):
        model = Hunyuan3DDiT(cfg)
    assert set(model.state_dict()) == _published_keys(cfg.depth, cfg.depth_single_blocks, cfg.guidance_embed)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    sd = model.state_dict()
    assert tuple(sd["single_blocks.0.linear1.weight"].shape) == (3 * 1024 + 4096, 1024)
    assert tuple(sd["double_blocks.0.img_attn.norm.query_norm.scale"].shape) == (64,)
    assert tuple(sd["cond_in.weight"].shape) == (1024, 1536)


def test_flops_split():
    f = flops_per_forward(Hunyuan3DDiTConfig.v2_0(), 3072, 1370, batch=2)
    n = 3072 + 1370
    assert f["attention"] == 2 * 48 * 4 * 16 * n * n * 64
    assert f["total"] == f["gemm"] + f["attention"]
    assert 0.95 < f["gemm"] / (2 * 2 * n * 48 * 12 * 1024 ** 2) < 1.05  # ~12 W^2 weights per token per block


def _reference_forward(sd: dict, cfg: Hunyuan3DDiTConfig, x, t, cond, guidance=None):
    """Straight transcription of the published Hunyuan3DDiT forward, written from the state dict alone."""
    def lin(name, v):
        return F.linear(v, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    def emb(v):  # timestep_embedding(v, 256, max_period=time_factor) with time_factor 1000
        half = 128
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
        a = 1000.0 * v[:, None].float() * freqs[None]
        return torch.cat([torch.cos(a), torch.sin(a)], dim=-1)

    def rms(v, name):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6) * sd[name]

    def ln(v):
        return F.layer_norm(v, (v.shape[-1],), eps=1e-6)

    def heads(qkv, prefix):
        b, n, _ = qkv.shape
        q, k, v = qkv.reshape(b, n, 3, cfg.num_heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
        return rms(q, f"{prefix}.query_norm.scale"), rms(k, f"{prefix}.key_norm.scale"), v

    def attend(q, k, v):
        o = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim), dim=-1) @ v
        return o.permute(0, 2, 1, 3).flatten(2)

    def mods(name, vec, n):
        return lin(name, F.silu(vec))[:, None].chunk(n, dim=-1)

    img, txt = lin("latent_in", x), lin("cond_in", cond)
    vec = lin("time_in.out_layer", F.silu(lin("time_in.in_layer", emb(t))))
    if guidance is not None:
        vec = vec + lin("guidance_in.out_layer", F.silu(lin("guidance_in.in_layer", emb(guidance))))
    gelu = lambda v: F.gelu(v, approximate="tanh")  # noqa: E731
    for i in range(cfg.depth):
        p = f"double_blocks.{i}"
        im, tm = mods(f"{p}.img_mod.lin", vec, 6), mods(f"{p}.txt_mod.lin", vec, 6)
        iq, ik, iv = heads(lin(f"{p}.img_attn.qkv", (1 + im[1]) * ln(img) + im[0]), f"{p}.img_attn.norm")
        tq, tk, tv = heads(lin(f"{p}.txt_attn.qkv", (1 + tm[1]) * ln(txt) + tm[0]), f"{p}.txt_attn.norm")
        o = attend(torch.cat([tq, iq], 2), torch.cat([tk, ik], 2), torch.cat([tv, iv], 2))
        ta, ia = o[:, :txt.shape[1]], o[:, txt.shape[1]:]
        img = img + im[2] * lin(f"{p}.img_attn.proj", ia)
        img = img + im[5] * lin(f"{p}.img_mlp.2", gelu(lin(f"{p}.img_mlp.0", (1 + im[4]) * ln(img) + im[3])))
        txt = txt + tm[2] * lin(f"{p}.txt_attn.proj", ta)
        txt = txt + tm[5] * lin(f"{p}.txt_mlp.2", gelu(lin(f"{p}.txt_mlp.0", (1 + tm[4]) * ln(txt) + tm[3])))
    h = torch.cat([txt, img], 1)
    w, mh = cfg.hidden_size, cfg.mlp_hidden
    for i in range(cfg.depth_single_blocks):
        p = f"single_blocks.{i}"
        sh, sc, g = mods(f"{p}.modulation.lin", vec, 3)
        qkv, mlp = lin(f"{p}.linear1", (1 + sc) * ln(h) + sh).split([3 * w, mh], -1)
        a = attend(*heads(qkv, f"{p}.norm"))
        h = h + g * lin(f"{p}.linear2", torch.cat([a, gelu(mlp)], -1))
    h = h[:, txt.shape[1]:]
    shift, scale = lin("final_layer.adaLN_modulation.1", F.silu(vec)).chunk(2, dim=1)
    return lin("final_layer.linear", (1 + scale[:, None]) * ln(h) + shift[:, None])


def _inputs(cfg, b=2, n=12, l_=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, cfg.in_channels, generator=g), torch.rand(b, generator=g),
            torch.randn(b, l_, cfg.context_in_dim, generator=g))


@pytest.mark.parametrize("guidance_embed", [False, True])
def test_forward_matches_published_reference(guidance_embed):
    model = _tiny(guidance_embed)
    # larger random weights than init_random's 0.02 so every path (gates, norms, attention) matters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.2)
    x, t, cond = _inputs(model.cfg)
    g = torch.tensor([5.0, 2.0]) if guidance_embed else None
    with torch.inference_mode():
        out = model(x, t, cond, g)
        ref = _reference_forward(model.state_dict(), model.cfg, x, t, cond, g)
    assert out.shape == x.shape
    assert ref.abs().mean() > 1e-3
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_deterministic_for_a_seed_and_guidance_required():
    x, t, cond = _inputs(Hunyuan3DDiTConfig.tiny())
    with torch.inference_mode():
        a, b, c = (_tiny(seed=s)(x, t, cond) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="guidance"):
        _tiny(guidance_embed=True)(x, t, cond)
