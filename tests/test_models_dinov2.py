"""DINOv2: Hugging Face key layout, strict loading, position interpolation, determinism, sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from engine.errors import WeightsError
from engine.models.checkpoints import init_random, load_state_dict, load_strict
from engine.models.dinov2 import (
    ConditionTokens,
    Dinov2Config,
    Dinov2Model,
    condition_tokens,
    flops_per_forward,
    prepare_pixels,
)

# Key names of transformers' Dinov2WithRegistersModel (SwiGLU variant), checked against
# modeling_dinov2_with_registers.py / modeling_dinov2.py.
HF_TOP = {"embeddings.cls_token", "embeddings.mask_token", "embeddings.register_tokens",
          "embeddings.position_embeddings", "embeddings.patch_embeddings.projection.weight",
          "embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias"}
HF_LAYER = {"norm1.weight", "norm1.bias", "attention.attention.query.weight",
            "attention.attention.query.bias", "attention.attention.key.weight",
            "attention.attention.key.bias",
            "attention.attention.value.weight", "attention.attention.value.bias",
            "attention.output.dense.weight", "attention.output.dense.bias", "layer_scale1.lambda1",
            "norm2.weight", "norm2.bias", "mlp.weights_in.weight", "mlp.weights_in.bias",
            "mlp.weights_out.weight", "mlp.weights_out.bias", "layer_scale2.lambda1"}


def _tiny(seed: int = 0) -> Dinov2Model:
    return init_random(Dinov2Model(Dinov2Config.tiny()), seed).eval()


def test_keys_match_the_hugging_face_layout():
    cfg = Dinov2Config.tiny()
    expected = HF_TOP | {f"encoder.layer.{i}.{k}" for i in range(cfg.num_layers) for k in HF_LAYER}
    assert set(Dinov2Model(cfg).state_dict()) == expected
    plain = set(Dinov2Model(Dinov2Config(hidden_size=64, num_layers=1, num_heads=4, image_size=56,
                                         num_register_tokens=0, swiglu=False)).state_dict())
    assert "embeddings.register_tokens" not in plain and "encoder.layer.0.mlp.fc1.weight" in plain


def test_strict_load_from_a_prefixed_combined_file(tmp_path):
    src = _tiny(1)
    combined = {f"conditioner.main_image_encoder.model.{k}": v for k, v in src.state_dict().items()}
    combined["model.latent_in.weight"] = torch.zeros(2, 2)
    save_file(combined, str(tmp_path / "model.fp16.safetensors"))
    sd = load_state_dict(tmp_path, prefix="conditioner.main_image_encoder.model.", dtype=torch.float16)
    dst = load_strict(Dinov2Model(Dinov2Config.tiny()), sd, "DINOv2").eval()
    x = torch.randn(1, 3, 56, 56)
    ref = src.half().float()
    with torch.inference_mode():
        assert torch.allclose(dst(x), ref(x), atol=1e-5)
    sd.pop("embeddings.register_tokens")
    with pytest.raises(WeightsError, match="1 missing: embeddings.register_tokens"):
        load_strict(Dinov2Model(Dinov2Config.tiny()), sd, "DINOv2")


def test_output_layout_and_interpolation_at_two_sizes():
    model = _tiny()
    with torch.inference_mode():
        out56 = model(torch.randn(2, 3, 56, 56))
        out98 = model(torch.randn(1, 3, 98, 98))
    assert out56.shape == (2, 1 + 4 + 16, 64) and out98.shape == (1, 1 + 4 + 49, 64)
    emb = model.embeddings
    table = emb.position_embeddings
    assert torch.equal(emb.position_table(4, 4, torch.float32), table)  # trained size: no resize
    big = emb.position_table(7, 7, torch.float32)
    grid = table[:, 1:].detach().reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(7, 7), mode="bicubic", align_corners=False, antialias=True)
    assert torch.allclose(big[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 49, 64), atol=1e-6)
    assert torch.equal(big[:, :1], table[:, :1])
    assert emb.position_table(7, 7, torch.float32) is big  # cached
    with torch.no_grad():
        table.add_(1.0)  # new weights invalidate the cache
    assert not torch.equal(emb.position_table(7, 7, torch.float32), big)


def test_registers_follow_cls_without_position_embedding():
    model = _tiny()
    with torch.inference_mode():
        tokens = model.embeddings(torch.randn(1, 3, 56, 56))
    assert torch.equal(tokens[0, 1:5], model.embeddings.register_tokens[0])


def test_determinism_fused_qkv_and_condition_tokens():
    x = torch.randn(1, 3, 56, 56)
    with torch.inference_mode():
        a, b, c = _tiny(0)(x), _tiny(0)(x), _tiny(1)(x)
        fused = _tiny(0).fuse_qkv_()(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(fused, a, atol=1e-5)
    cfg = Dinov2Config.tiny()
    assert condition_tokens(a, cfg).shape[1] == 21
    assert condition_tokens(a, cfg, ConditionTokens.PATCHES).shape[1] == 16
    no_reg = condition_tokens(a, cfg, ConditionTokens.NO_REGISTERS)
    assert no_reg.shape[1] == 17 and torch.equal(no_reg[:, 1:], a[:, 5:])


def test_prepare_pixels_layouts():
    img = torch.randint(0, 256, (20, 30, 3), dtype=torch.uint8)
    px = prepare_pixels(img, size=28)
    assert px.shape == (1, 3, 28, 28)
    same = prepare_pixels(img.permute(2, 0, 1)[None].float() / 255.0, size=28)
    assert torch.allclose(px, same, atol=1e-6)
    white = prepare_pixels(torch.full((1, 14, 14, 3), 255, dtype=torch.uint8), size=14)
    assert torch.allclose(white[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                           (1 - 0.406) / 0.225]), atol=1e-5)


def test_giant_sizes_on_meta_device():
    with torch.device("meta"):
        reg, plain = Dinov2Model(Dinov2Config.giant_registers()), Dinov2Model(Dinov2Config.giant())
    # ViT-g/14: ~1.1B parameters; SwiGLU inner width 4096 (weights_in 8192 x 1536)
    assert 1.10e9 < plain.param_count() < 1.16e9
    assert reg.param_count() - plain.param_count() == 4 * 1536
    assert tuple(reg.encoder.layer[0].mlp.weights_in.weight.shape) == (8192, 1536)
    assert reg.embeddings.position_embeddings.shape == (1, 1 + 37 * 37, 1536)
    f518 = flops_per_forward(Dinov2Config.giant_registers(), 518)
    linear = 40 * (4 * 1536 ** 2 + 3 * 1536 * 4096)  # qkv + out + SwiGLU weights per layer
    expected = 2 * 1374 * linear + 40 * 4 * 1374 ** 2 * 1536 + 2 * 1369 * 3 * 14 * 14 * 1536
    assert f518 == expected and 3.5e12 < f518 < 3.7e12


def test_benchmark_cpu_tiny_runs(tmp_path):
    out = tmp_path / "dino.md"
    res = subprocess.run([sys.executable, "-m", "benchmarks.models.dinov2", "--device", "cpu",
                          "--preset", "tiny", "--repeats", "1", "--out", str(out),
                          "--csv", str(tmp_path / "r.csv")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "DINOv2" in text and "T5" in text and "CLIP" in text
    assert len((tmp_path / "r.csv").read_text().splitlines()) >= 5


def test_engine_format_round_trip(tmp_path):
    from engine.models.checkpoints import load_engine_checkpoint, save_engine_checkpoint

    src = _tiny(4)
    path = save_engine_checkpoint(tmp_path / "dinov2_tiny.safetensors", src, src.cfg, "dinov2")
    dst, cfg = load_engine_checkpoint(path, Dinov2Model, Dinov2Config, model_name="dinov2")
    x = torch.randn(1, 3, 56, 56)
    with torch.inference_mode():
        assert cfg == src.cfg and torch.equal(dst(x), src(x))
