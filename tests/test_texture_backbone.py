"""TextureGen wired into generate: tiny engine-format checkpoints, real asset mesh, views fused
onto its atlas."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import IMAGES, asset_path

from engine.errors import WeightsError
from engine.io.image_input import prepare_image
from engine.models import texture_backbone

VIEW, ATLAS = 32, 64


def _weights(folder, text: bool):
    from engine.models.checkpoints import init_random, save_engine_checkpoint
    from engine.models.image_vae import ImageVAE, ImageVAEConfig
    from engine.models.text_encoders import ClipTextConfig, ClipTextEncoder, T5Encoder, T5EncoderConfig
    from engine.models.texturegen_dit import TextureGenConfig, TextureGenDiT

    folder.mkdir()
    tcfg = replace(TextureGenConfig.tiny(), t5_dim=32, clip_dim=32)
    parts = [("texturegen", TextureGenDiT(tcfg), tcfg, texture_backbone.REQUIRED["texturegen"]),
             ("image_vae", ImageVAE(ImageVAEConfig.tiny()), ImageVAEConfig.tiny(), "image_vae.safetensors")]
    if text:
        t5 = T5EncoderConfig.tiny()
        parts += [("t5_encoder", T5Encoder(t5), t5, "t5_xxl.safetensors"),
                  ("clip_text", ClipTextEncoder(ClipTextConfig.tiny()), ClipTextConfig.tiny(),
                   "clip_l.safetensors")]
    for i, (name, module, cfg, file) in enumerate(parts):
        init_random(module, seed=i)
        save_engine_checkpoint(folder / file, module, cfg, name)


@pytest.fixture(scope="module")
def low_mesh():
    from engine.geometry.simplify import simplify_qem
    from engine.geometry.uv_unwrap import unwrap_uv
    from engine.io.asset_load import load_mesh

    return unwrap_uv(simplify_qem(load_mesh(asset_path("spot")), 300)[0], ATLAS)[0]


@pytest.mark.parametrize("preset,text", [("flash", False), ("default", True)])
def test_texturegen_views_and_atlas(tmp_path, low_mesh, preset, text):
    _weights(tmp_path / "w", text)
    rgba = prepare_image(IMAGES / "typical_misc_crate.png").rgba
    views, masks, rig, note = texture_backbone.texturegen_views(low_mesh, rgba, str(tmp_path / "w"), preset,
                                                                "cpu", seed=1, view_size=VIEW)
    again, _, _, _ = texture_backbone.texturegen_views(low_mesh, rgba, str(tmp_path / "w"), preset, "cpu",
                                                       seed=1, view_size=VIEW)
    assert views.shape == (10, VIEW, VIEW, 3) and views.dtype == np.uint8 and masks.shape == (10, VIEW, VIEW)
    assert np.array_equal(views, again)                                   # deterministic for a seed
    assert np.linalg.norm(rig.vertices, axis=1).max() <= 1.0 + 1e-5        # in the rig sphere
    assert ("T5 + CLIP" in note) == text and ("zero text context" in note) == (not text)
    atlas, note = texture_backbone.texturegen_atlas(low_mesh, rgba, str(tmp_path / "w"), preset, "cpu", ATLAS,
                                                    seed=1, view_size=VIEW)
    assert atlas.shape == (ATLAS, ATLAS, 3) and "0 unfilled" in note


def test_missing_texturegen_files_are_named(tmp_path, low_mesh):
    (tmp_path / "e").mkdir()
    assert not texture_backbone.has_texturegen(str(tmp_path / "e"))
    with pytest.raises(WeightsError, match="texturegen.safetensors"):
        texture_backbone.texturegen_views(low_mesh, np.zeros((8, 8, 4), np.uint8), str(tmp_path / "e"),
                                          "flash", "cpu")


def test_generate_graph_picks_the_backbones_the_folder_holds(tmp_path):
    from engine.config import PipelineConfig
    from engine.pipeline import _check_weights, generate_graph

    _weights(tmp_path / "w", text=False)
    cfg = PipelineConfig.from_name("flash").with_overrides(weights=str(tmp_path / "w"))
    names = [s.name for s in generate_graph(cfg).stages]
    assert "texture (TextureGen)" in names and "shape (silhouette prior)" in names   # no MeshGen files
    _check_weights(str(tmp_path / "w"))
    (tmp_path / "none").mkdir()
    with pytest.raises(WeightsError, match="neither MeshGen nor TextureGen"):
        _check_weights(str(tmp_path / "none"))
    plain = [s.name for s in generate_graph(PipelineConfig.from_name("flash")).stages]
    assert "texture (reference projection)" in plain
