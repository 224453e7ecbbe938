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


# ---- snapshot loading in the published layout -------------------------------------------------------------

TINY_CONFIG_YAML = """\
model:
  target: hy3dgen.shapegen.models.Hunyuan3DDiT
  params:
    in_channels: 8
    context_in_dim: 64
    hidden_size: 64
    mlp_ratio: 4.0
    num_heads: 4
    depth: 2
    depth_single_blocks: 2
    axes_dim: [16]
    theta: 10000
    qkv_bias: true
    guidance_embed: {guidance}
vae:
  target: hy3dgen.shapegen.models.ShapeVAE
  params:
    num_latents: 64
    embed_dim: 8
    num_freqs: 2
    include_pi: false
    heads: 4
    width: 64
    num_decoder_layers: 2
    qkv_bias: false
    qk_norm: true
    scale_factor: 1.0
conditioner:
  target: hy3dgen.shapegen.models.conditioner.SingleImageEncoder
  params:
    main_image_encoder:
      type: DinoImageEncoder
      kwargs:
        config:
          attention_probs_dropout_prob: 0.0
          hidden_act: gelu
          hidden_size: 64
          image_size: 56
          layer_norm_eps: 1.0e-06
          layerscale_value: 1.0
          mlp_ratio: 4
          num_attention_heads: 4
          num_channels: 3
          num_hidden_layers: 2
          patch_size: 14
          qkv_bias: true
          use_swiglu_ffn: true
        image_size: 56
        use_cls_token: true
scheduler:
  target: hy3dgen.shapegen.schedulers.{scheduler}
  params:
    num_train_timesteps: 1000
{scheduler_params}
image_processor:
  target: hy3dgen.shapegen.preprocessors.ImageProcessorV2
  params:
    size: 512
    border_ratio: 0.15
"""


def _write_snapshot(folder, guidance_embed=False, turbo=False, drop=(), extra=None):
    """A tiny Hunyuan3D-2 snapshot: config.yaml with their param names + one fp16 safetensors file with the
    model./vae./conditioner. groups. Returns the written (prefixed) fp16 state dict."""
    from safetensors.torch import save_file

    from engine.models.dinov2 import Dinov2Config, Dinov2Model
    from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder
    from engine.models.shape_vae import init_random as vae_random

    folder.mkdir(parents=True)
    sched = "ConsistencyFlowMatchEulerDiscreteScheduler" if turbo else "FlowMatchEulerDiscreteScheduler"
    text = TINY_CONFIG_YAML.format(guidance=str(guidance_embed).lower(), scheduler=sched,
                                   scheduler_params="    pcm_timesteps: 100" if turbo else "")
    (folder / "config.yaml").write_text(text)
    cfg = Hunyuan3DDiTConfig.from_yaml_params({**Hunyuan3DDiTConfig.tiny().__dict__, "context_in_dim": 64,
                                               "guidance_embed": guidance_embed})
    vae_cfg = ShapeVaeConfig.tiny().with_(num_latents=64, embed_dim=8)
    dino = Dinov2Config(hidden_size=64, num_layers=2, num_heads=4, image_size=56, num_register_tokens=0)
    parts = {"model.": init_random(Hunyuan3DDiT(cfg), 1), "vae.": vae_random(ShapeVaeDecoder(vae_cfg), 2),
             "conditioner.main_image_encoder.model.": init_random(Dinov2Model(dino), 3)}
    state = {p + k: v.detach().to(torch.float16).contiguous() for p, m in parts.items()
             for k, v in m.state_dict().items()}
    for key in drop:
        del state[key]
    state.update(extra or {})
    save_file(state, str(folder / "model.fp16.safetensors"))
    return state


def test_snapshot_loads_strictly_and_samples(tmp_path):
    from engine.models.hunyuan3d import load_hunyuan3d_snapshot
    from engine.sampling.flow_euler import FlowEulerSampler, GuidanceMode

    state = _write_snapshot(tmp_path / "hunyuan3d-dit-v2-0")
    model = load_hunyuan3d_snapshot(tmp_path, dtype=torch.float32)  # repo root: finds the subfolder
    assert model.spec.name == "hunyuan3d-dit-v2-0" and model.spec.default_steps == 50
    for key, value in model.dit.state_dict().items():
        assert torch.equal(value, state["model." + key].float()), key
    tokens = model.encode_image(torch.rand(1, 3, 56, 56))
    assert tokens.shape == (1, 1 + 16, 64)  # CLS kept, 4x4 patches
    lat = model.sample_latents(tokens, steps=3, guidance=5.0, seed=7)  # 2 evaluated Euler steps, CFG
    assert lat.shape == (1, 64, 8) and torch.isfinite(lat).all()
    assert torch.equal(lat, model.sample_latents(tokens, steps=3, guidance=5.0, seed=7))
    # the same integration spelled out: noise from the seed, CFG against the zero embedding
    noise = torch.randn((1, 64, 8), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        want = FlowEulerSampler(3).sample(model.dit, noise, tokens, torch.zeros_like(tokens), 5.0,
                                          GuidanceMode.CFG)
    torch.testing.assert_close(lat, want)
    kv = model.vae.decode_latents(lat)
    assert kv.k.shape[2] == 64


def test_turbo_snapshot_uses_consistency_grid_and_guidance_embedding(tmp_path):
    from engine.models.hunyuan3d import load_hunyuan3d_snapshot
    from engine.sampling.flow_euler import FlowScheduleKind

    _write_snapshot(tmp_path / "turbo", guidance_embed=True, turbo=True)
    model = load_hunyuan3d_snapshot(tmp_path / "turbo", dtype=torch.float32, load_conditioner=False)
    assert model.spec.schedule.kind is FlowScheduleKind.CONSISTENCY and model.spec.default_steps == 5
    assert model.dit.guidance_in is not None and model.conditioner is None
    lat = model.sample_latents(torch.randn(2, 5, 64), steps=2, guidance=5.0)
    assert lat.shape == (2, 64, 8) and torch.isfinite(lat).all()


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    from engine.errors import WeightsError
    from engine.models.hunyuan3d import load_hunyuan3d_snapshot

    gone = "model.double_blocks.1.txt_attn.norm.key_norm.scale"
    _write_snapshot(tmp_path / "a", drop=[gone], extra={"model.pos_embed": torch.zeros(3)})
    with pytest.raises(WeightsError) as err:
        load_hunyuan3d_snapshot(tmp_path / "a", dtype=torch.float32)
    assert "double_blocks.1.txt_attn.norm.key_norm.scale" in str(err.value) and "pos_embed" in str(err.value)
    _write_snapshot(tmp_path / "b", extra={"ema.latent_in.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match="unexpected: ema"):
        load_hunyuan3d_snapshot(tmp_path / "b")


def test_missing_folder_file_and_unsupported_config(tmp_path):
    from engine.errors import WeightsError
    from engine.models.hunyuan3d import load_hunyuan3d_snapshot

    with pytest.raises(WeightsError, match="does not exist"):
        load_hunyuan3d_snapshot(tmp_path / "nowhere")
    with pytest.raises(WeightsError, match="holds no config.yaml"):
        load_hunyuan3d_snapshot(tmp_path)
    snap = tmp_path / "hunyuan3d-dit-v2-mini"
    snap.mkdir()
    (snap / "config.yaml").write_text(TINY_CONFIG_YAML.format(guidance="false", scheduler="X",
                                                              scheduler_params=""))
    (snap / "model.ckpt").write_bytes(b"")
    with pytest.raises(WeightsError, match="pickled"):
        load_hunyuan3d_snapshot(tmp_path)
    (snap / "model.fp16.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="unsupported scheduler"):
        load_hunyuan3d_snapshot(snap)
    (snap / "config.yaml").write_text("model:\n  target: hy3dshape.models.denoisers.HunYuanDiTPlain\n")
    with pytest.raises(WeightsError, match="HunYuanDiTPlain"):
        load_hunyuan3d_snapshot(snap)


def test_benchmark_cpu_tiny_runs(tmp_path):
    import subprocess
    import sys

    out, csv = tmp_path / "h3d.md", tmp_path / "r.csv"
    res = subprocess.run([sys.executable, "-m", "benchmarks.models.hunyuan3d", "--device", "cpu", "--preset",
                          "tiny", "--repeats", "1", "--out", str(out), "--csv", str(csv)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    for case in ("h3d_dit_step_tiny", "h3d_dit_step_cfg_tiny", "h3d_turbo_5step_tiny", "h3d_cfg_6step_tiny"):
        assert case in text
    assert "evaluations=5" in text and len(csv.read_text().splitlines()) == 1 + 4 * 5
