"""Learned shape backbones wired into generate: AssetGen MeshGen from engine-format checkpoints and a
Hunyuan3D-2 snapshot, at tiny sizes with random weights (real weights do not exist here)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import IMAGES

from engine.errors import ConfigError, WeightsError
from engine.io.image_input import prepare_image
from engine.models import shape_backbone
from engine.models.shape_decoding import VaeField, dense_decode


def _tiny_weights(folder):
    from engine.models.checkpoints import init_random, save_engine_checkpoint
    from engine.models.dinov2 import Dinov2Config, Dinov2Model
    from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT
    from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder

    folder.mkdir()
    dino_cfg = Dinov2Config.tiny()
    dit_cfg = replace(MeshGenConfig.tiny(), context_dim=dino_cfg.hidden_size)
    vae_cfg = ShapeVaeConfig.tiny().with_(embed_dim=dit_cfg.latent_dim)
    for name, module, cfg, file in (("dinov2", Dinov2Model(dino_cfg), dino_cfg, "dinov2"),
                                    ("meshgen_dit", MeshGenDiT(dit_cfg), dit_cfg, "meshgen"),
                                    ("shape_vae", ShapeVaeDecoder(vae_cfg), vae_cfg, "vae")):
        init_random(module, seed=len(name))
        save_engine_checkpoint(folder / shape_backbone.MESHGEN_FILES[file], module, cfg, name)


def _centre_field(vae, latents, res=16):
    """Shift the decoder's output bias by the median of its field, so the random field has a surface."""
    with torch.inference_mode():
        values = dense_decode(VaeField(vae, vae.decode_latents(latents)), res, 1.01)
        vae.geo_decoder.output_proj.bias.sub_(values.median())


@pytest.fixture(scope="module")
def crate_rgba():
    return prepare_image(IMAGES / "typical_misc_crate.png").rgba


def test_meshgen_backbone_runs_from_engine_checkpoints(tmp_path, crate_rgba):
    _tiny_weights(tmp_path / "w")
    a, vae, source = shape_backbone.meshgen_latents(crate_rgba, str(tmp_path / "w"), "cpu", seed=3, steps=4)
    b, _, _ = shape_backbone.meshgen_latents(crate_rgba, str(tmp_path / "w"), "cpu", seed=3, steps=4)
    c, _, _ = shape_backbone.meshgen_latents(crate_rgba, str(tmp_path / "w"), "cpu", seed=4, steps=4)
    assert a.shape == (1, 32, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)          # deterministic for a seed
    assert "MeshGen coarse" in source and "refine stage not run" in source
    _centre_field(vae, a)
    with torch.inference_mode():
        verts, faces, queries = shape_backbone._decode(vae, a, 32, 1.01)
    assert faces.shape[0] > 0 and queries > 0
    assert verts.abs().max() <= 1.01 + 1e-5 and int(faces.max()) < verts.shape[0]


def test_meshgen_backbone_names_missing_files(tmp_path, crate_rgba):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="meshgen_coarse.safetensors"):
        shape_backbone.meshgen_shape(crate_rgba, str(tmp_path / "empty"), 32, 1.01, "cpu")


def test_hunyuan_backbone_runs_a_snapshot(tmp_path, crate_rgba):
    from test_models_hunyuan3d import _write_snapshot

    _write_snapshot(tmp_path / "hunyuan3d-dit-v2-0")
    lat, vae, source = shape_backbone.hunyuan3d_latents(crate_rgba, str(tmp_path), "cpu", seed=1, steps=3)
    assert lat.shape == (1, 64, 8) and torch.isfinite(lat).all()
    assert "hunyuan3d-dit-v2-0" in source
    _centre_field(vae, lat)
    with torch.inference_mode():
        verts, faces, _ = shape_backbone._decode(vae, lat, 32, 1.01)
    assert faces.shape[0] > 0


def test_picture_on_white_and_flags():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    out = shape_backbone.picture_on_white(rgba).numpy()
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (255, 255, 255)
    from engine.config import PipelineConfig

    cfg = PipelineConfig.from_name("default").with_overrides(shape_model="/x")
    assert cfg.shape.shape_model == "/x"
    with pytest.raises(ConfigError, match="choose one shape backbone"):
        PipelineConfig.from_name("default").with_overrides(shape_model="/x", weights="/y")


def test_generate_runs_a_hunyuan_snapshot_end_to_end(tmp_path, capsys):
    """`assetgen generate --shape-model` through the whole pipeline on a tiny snapshot in the published
    layout. Its random decoder is made smooth (the query block's attention and MLP outputs zeroed, so the
    field is the Fourier-embedded point through query_proj / ln_post / output_proj) and centred on its
    median, so that it has a surface."""
    from safetensors.torch import load_file, save_file
    from test_models_hunyuan3d import _write_snapshot

    from engine.cli import main
    from engine.models.checkpoints import load_strict
    from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder, hunyuan_decoder_state

    snap = tmp_path / "hunyuan3d-dit-v2-0"
    _write_snapshot(snap)
    state = load_file(str(snap / "model.fp16.safetensors"))
    for part in ("attn.c_proj", "mlp.c_proj"):
        for leaf in ("weight", "bias"):
            key = f"vae.geo_decoder.cross_attn_decoder.{part}.{leaf}"
            state[key] = torch.zeros_like(state[key])
    vae = ShapeVaeDecoder(ShapeVaeConfig.tiny().with_(num_latents=64, embed_dim=8))
    vae_part = {k: v.float() for k, v in state.items() if k.startswith("vae.")}
    load_strict(vae, hunyuan_decoder_state(vae_part), "vae")
    with torch.inference_mode():
        kv = vae.decode_latents(torch.zeros(1, 64, 8))
        median = dense_decode(VaeField(vae, kv), 24, 1.01).median()
    state["vae.geo_decoder.output_proj.bias"] = (state["vae.geo_decoder.output_proj.bias"].float()
                                                 - median).half()
    save_file(state, str(snap / "model.fp16.safetensors"))
    out = tmp_path / "h.glb"
    code = main(["generate", str(IMAGES / "typical_misc_crate.png"), "-o", str(out), "--shape-model",
                 str(tmp_path), "--faces", "400", "--texture-size", "256", "--normal-map-size", "256"])
    printed = capsys.readouterr()
    assert code == 0 and out.is_file() and out.stat().st_size > 1000, printed.err[-2000:]
    assert "shape source: Hunyuan3D-2 snapshot hunyuan3d-dit-v2-0" in printed.out + printed.err
