"""T5 and CLIP text encoders: buckets, maths against a naive reference, causality, keys, strict loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from engine.errors import WeightsError
from engine.models.checkpoints import init_random, load_state_dict, load_strict
from engine.models.text_encoders import (
    ClipTextConfig,
    ClipTextEncoder,
    T5Encoder,
    T5EncoderConfig,
    clip_flops,
    clip_hf_state_dict,
    relative_position_bucket,
    t5_flops,
    t5_hf_state_dict,
)


def _t5(seed: int = 0) -> T5Encoder:
    return init_random(T5Encoder(T5EncoderConfig.tiny()), seed, std=0.2).eval()


def _clip(seed: int = 0) -> ClipTextEncoder:
    return init_random(ClipTextEncoder(ClipTextConfig.tiny()), seed, std=0.2).eval()


def test_relative_buckets_closed_form():
    rel = torch.tensor([0, 1, -1, -7, -8, -16, -128, -1000, 20, 1000])
    got = relative_position_bucket(rel, 32, 128).tolist()
    # 16 buckets per direction, 8 exact; log-spaced: 8 + floor(log(d/8)/log(16) * 8), capped at 15
    assert got == [0, 17, 1, 7, 8, 10, 15, 15, 26, 31]


def _t5_naive(model: T5Encoder, ids: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    x = model.shared(ids)
    n = ids.shape[1]
    pos = torch.arange(n)
    buckets = relative_position_bucket(pos[None] - pos[:, None], cfg.num_buckets, cfg.max_distance)
    table = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    bias = table[buckets].permute(2, 0, 1)  # [H, N, N]

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + cfg.layer_norm_eps) * w

    for block in model.encoder.block:
        sa, ff = block.layer
        h = rms(x, sa.layer_norm.weight)
        a = sa.SelfAttention
        q, k, v = (t.view(1, n, cfg.num_heads, cfg.d_kv).transpose(1, 2) for t in (a.q(h), a.k(h), a.v(h)))
        probs = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)  # unscaled, as T5
        x = x + a.o((probs @ v).transpose(1, 2).reshape(1, n, -1))
        h = rms(x, ff.layer_norm.weight)
        d = ff.DenseReluDense
        x = x + d.wo(F.gelu(d.wi_0(h), approximate="tanh") * d.wi_1(h))
    return rms(x, model.encoder.final_layer_norm.weight)


def test_t5_matches_naive_reference_and_is_deterministic():
    ids = torch.randint(0, 100, (1, 11))
    with torch.no_grad():
        out = _t5(0)(ids)
        ref = _t5_naive(_t5(0), ids)
        other = _t5(1)(ids)
    assert out.shape == (1, 11, 32)
    assert torch.allclose(out, ref, atol=1e-4)
    assert not torch.allclose(out, other)


def test_t5_padding_mask_isolates_padded_tokens():
    model = _t5()
    ids = torch.randint(0, 100, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    ids2 = ids.clone()
    ids2[1, 6:] = 0  # change only padded tokens
    with torch.inference_mode():
        a, b = model(ids, mask), model(ids2, mask)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6) and torch.equal(a[0], b[0])


def test_t5_hf_keys_and_strict_load(tmp_path):
    cfg = T5EncoderConfig.tiny()
    keys = set(T5Encoder(cfg).state_dict())
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in keys
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in keys
    for k in ("shared.weight", "encoder.final_layer_norm.weight",
              "encoder.block.1.layer.0.SelfAttention.o.weight",
              "encoder.block.1.layer.1.DenseReluDense.wi_1.weight",
              "encoder.block.1.layer.1.layer_norm.weight"):
        assert k in keys
    src = _t5(3)
    state = dict(src.state_dict())
    state["encoder.embed_tokens.weight"] = state["shared.weight"].clone()  # the tied copy HF files carry
    save_file(state, str(tmp_path / "t5.safetensors"))
    loaded = load_state_dict(tmp_path / "t5.safetensors")
    with pytest.raises(WeightsError, match="unexpected: encoder.embed_tokens.weight"):
        load_strict(T5Encoder(cfg), loaded, "T5")
    dst = load_strict(T5Encoder(cfg), t5_hf_state_dict(loaded), "T5").eval()
    ids = torch.randint(0, 100, (1, 5))
    with torch.inference_mode():
        assert torch.equal(dst(ids), src(ids))


def test_clip_is_causal_pools_at_eos_and_projects():
    model = _clip()
    ids = torch.randint(0, 100, (2, 10))
    ids[:, 6] = 119  # EOS
    changed = ids.clone()
    changed[:, 8:] = 3
    with torch.inference_mode():
        hidden, pooled = model(ids)
        hidden2, pooled2 = model(changed)
        projected = model.text_projection(hidden[:, 6])
    assert hidden.shape == (2, 10, 32) and pooled.shape == (2, 16)
    assert torch.allclose(hidden[:, :8], hidden2[:, :8], atol=1e-6)  # later tokens never seen earlier
    assert torch.allclose(pooled, pooled2, atol=1e-6)
    assert torch.allclose(pooled, projected, atol=1e-6)


def test_clip_hf_keys_strict_load_and_determinism(tmp_path):
    cfg = ClipTextConfig.tiny()
    keys = set(ClipTextEncoder(cfg).state_dict())
    for k in ("text_model.embeddings.token_embedding.weight",
              "text_model.embeddings.position_embedding.weight",
              "text_model.encoder.layers.1.self_attn.q_proj.bias",
              "text_model.encoder.layers.1.layer_norm2.weight",
              "text_model.encoder.layers.0.mlp.fc2.weight", "text_model.final_layer_norm.bias",
              "text_projection.weight"):
        assert k in keys
    assert len(keys) == 2 + 2 * 16 + 2 + 1
    state = dict(_clip(5).state_dict())
    state["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(state, str(tmp_path / "clip.safetensors"))
    loaded = clip_hf_state_dict(load_state_dict(tmp_path / "clip.safetensors"))
    dst = load_strict(ClipTextEncoder(cfg), loaded, "CLIP text")
    ids = torch.randint(0, 119, (1, 16))
    with torch.inference_mode():
        assert torch.equal(dst.eval()(ids)[0], _clip(5)(ids)[0])
        assert not torch.allclose(_clip(6)(ids)[0], _clip(5)(ids)[0])


def test_full_sizes_on_meta_device():
    with torch.device("meta"):
        t5 = T5Encoder(T5EncoderConfig.xxl())
        clip = ClipTextEncoder(ClipTextConfig.vit_l14())
    assert 4.7e9 < t5.param_count() < 4.8e9          # T5 v1.1 XXL encoder: ~4.76B
    assert 1.22e8 < clip.param_count() < 1.24e8      # CLIP ViT-L/14 text tower: ~123M
    assert t5_flops(T5EncoderConfig.xxl(), 256) > 2 * 256 * 4.6e9
    assert clip_flops(ClipTextConfig.vit_l14()) > 2 * 77 * 8.5e7
