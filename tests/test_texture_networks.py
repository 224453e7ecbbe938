"""TextureGen stage networks (engine/stages/texture_networks.py): tiny random networks on a real asset
mesh; view size, guidance branches, super-resolution and the once-per-engine text context follow the
typed TextureConfig; engine-format loading equals the random bundle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import IMAGES, asset_path

from engine.config import TextureConfig, TextureGuidance
from engine.errors import ConfigError, WeightsError
from engine.io.image_input import prepare_image
from engine.stages import texture_networks as tn

VIEW, ATLAS = 64, 64
CFG = TextureConfig(view_resolution=VIEW, atlas_size=ATLAS, super_resolution=False, steps=2)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def low_mesh():
    from engine.geometry.simplify import simplify_qem
    from engine.geometry.uv_unwrap import unwrap_uv
    from engine.io.asset_load import load_mesh

    return unwrap_uv(simplify_qem(load_mesh(asset_path("spot")), 300)[0], ATLAS)[0]


@pytest.fixture(scope="module")
def rgba():
    return prepare_image(IMAGES / "typical_misc_crate.png").rgba


@pytest.fixture(scope="module")
def nets():
    return tn.random_texturegen("tiny", "cpu", torch.float32, seed=0, text=True, super_resolution=True)


def _rows(module, record):
    return module.register_forward_hook(lambda m, args, out: record.append(args[0].shape[0]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [64, 80])
def test_views_follow_view_resolution_and_fuse(low_mesh, rgba, device, size):
    from engine.texture.fusion_gpu import fuse_views_device
    from engine.texture.views import camera_rig

    nets = tn.random_texturegen("tiny", device, torch.float32, seed=0, text=False, super_resolution=False)
    views, masks, rig, note = tn.texturegen_views(nets, low_mesh, rgba, replace(CFG, view_resolution=size),
                                                  device, seed=1)
    assert views.shape == (10, size, size, 3) and views.dtype == np.uint8
    assert masks.shape == (10, size, size) and masks.dtype == bool and masks.any()
    assert np.linalg.norm(rig.vertices, axis=1).max() <= 1.0 + 1e-5        # in the rig sphere
    assert f"10 views at {size} px" in note and "zero text context" in note
    if size == VIEW:  # the views fuse onto the atlas (fusion itself is tested in test_texture*.py)
        atlas, stats = fuse_views_device(rig, camera_rig(), views, ATLAS, device=device, masks=masks)
        assert atlas.shape == (ATLAS, ATLAS, 3) and stats.get("inpaint_unfilled", 0) == 0


@pytest.mark.parametrize("guidance,branches", [(TextureGuidance.CFG, 2), (TextureGuidance.DISTILLED, 1)])
def test_guidance_sets_branch_count_and_steps(nets, low_mesh, rgba, guidance, branches):
    rows: list[int] = []
    hook = _rows(nets.dit, rows)
    _, _, _, note = tn.texturegen_views(nets, low_mesh, rgba, replace(CFG, guidance=guidance, steps=3), "cpu")
    hook.remove()
    assert rows == [branches] * 3                                           # steps DiT calls of B' rows
    assert ("CFG (2 branches)" in note) == (branches == 2)


def test_super_resolution_doubles_the_views(nets, low_mesh, rgba):
    cfg = replace(CFG, super_resolution=True)
    assert nets.upscale(cfg) == 2 and nets.upscale(CFG) == 1
    views, masks, _, note = tn.texturegen_views(nets, low_mesh, rgba, cfg, "cpu", seed=1)
    assert views.shape == (10, 2 * VIEW, 2 * VIEW, 3) and masks.shape == (10, 2 * VIEW, 2 * VIEW)
    assert "super-resolved x2" in note and views.std() > 0
    plain = tn.random_texturegen("tiny", "cpu", torch.float32, seed=0, text=False, super_resolution=False)
    views, _, _, note = tn.texturegen_views(plain, low_mesh, rgba, cfg, "cpu", seed=1)
    assert views.shape == (10, VIEW, VIEW, 3) and "no SR network is loaded" in note


def test_text_context_is_computed_once_at_load(nets, low_mesh, rgba):
    t5_calls, clip_calls = [], []
    hooks = [_rows(nets.t5, t5_calls), _rows(nets.clip, clip_calls)]
    context = nets.text_context
    first, _, _, note = tn.texturegen_views(nets, low_mesh, rgba, CFG, "cpu", seed=4)
    runners = dict(nets.runners)
    again, _, _, _ = tn.texturegen_views(nets, low_mesh, rgba, CFG, "cpu", seed=4)
    for h in hooks:
        h.remove()
    assert t5_calls == [] and clip_calls == []                 # requests never run the text encoders
    assert nets.text_context is context and "T5 + CLIP" in note
    with torch.inference_mode():
        (t5, clip), _ = tn.empty_prompt_context(nets.t5, nets.clip, nets.dit_cfg, nets.device, nets.dtype)
    assert torch.equal(context[0], t5) and torch.equal(context[1], clip)
    assert context[0].shape == (1, 1, nets.dit_cfg.t5_dim)                  # [</s>]
    assert context[1].shape == (1, 2, nets.dit_cfg.clip_dim)                # [<bos>, <eos>]
    assert np.array_equal(first, again)                                   # deterministic for a seed
    assert all(nets.runners[k] is v for k, v in runners.items())          # runners reused


def test_load_texturegen_equals_random_texturegen(nets, low_mesh, rgba, tmp_path):
    from engine.models.checkpoints import save_engine_checkpoint

    for name, module, cfg, file in (
            ("texturegen", nets.dit, nets.dit_cfg, "texturegen.safetensors"),
            ("image_vae", nets.vae, nets.vae.cfg, "image_vae.safetensors"),
            ("t5_encoder", nets.t5, nets.t5.cfg, "t5_xxl.safetensors"),
            ("clip_text", nets.clip, nets.clip.cfg, "clip_l.safetensors"),
            ("super_resolution", nets.sr, nets.sr.cfg, "super_resolution.safetensors")):
        save_engine_checkpoint(tmp_path / file, module, cfg, name)
    loaded = tn.load_texturegen(tmp_path, "cpu", torch.float32)
    assert loaded.network_names() == nets.network_names() and loaded.text_note == nets.text_note
    cfg = replace(CFG, super_resolution=True)
    want, _, _, _ = tn.texturegen_views(nets, low_mesh, rgba, cfg, "cpu", seed=2)
    got, _, _, _ = tn.texturegen_views(loaded, low_mesh, rgba, cfg, "cpu", seed=2)
    assert np.array_equal(got, want)


def test_missing_files_and_bad_sizes_are_named(nets, low_mesh, rgba, tmp_path):
    assert not tn.has_texturegen(str(tmp_path))
    with pytest.raises(WeightsError, match="texturegen.safetensors"):
        tn.load_texturegen(tmp_path, "cpu", torch.float32)
    with pytest.raises(ConfigError, match="not a multiple of 16"):
        tn.texturegen_views(nets, low_mesh, rgba, replace(CFG, view_resolution=72), "cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_early_condition_encoding_gives_the_same_views(low_mesh, rgba, device):
    """The reference and position latents encoded from the mesh before its UVs (a copy without UVs, with
    an unused vertex: the rig frame comes from the used ones) give the views of encoding them all at once;
    an encoding of another mesh is noticed (its position renders differ) and not used."""
    from engine.geometry.mesh import TriMesh

    nets = tn.random_texturegen("tiny", device, torch.float32, seed=0, text=False, super_resolution=False)
    want, _, _, plain = tn.texturegen_views(nets, low_mesh, rgba, CFG, device, seed=5)
    geometry = TriMesh(np.concatenate([low_mesh.vertices, [[9.0, 9.0, 9.0]]]).astype(np.float32),
                       low_mesh.faces)                             # no UVs, one unused far vertex
    early = tn.encode_conditions(nets, geometry, rgba, CFG, device)
    got, _, _, note = tn.texturegen_views(nets, low_mesh, rgba, CFG, device, seed=5, early=early)
    assert "encoded while the UVs were made" in note and "encoded" not in plain
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    other = TriMesh(low_mesh.vertices * np.float32([1.0, 0.5, 1.0]), low_mesh.faces)
    stale = tn.encode_conditions(nets, other, rgba, CFG, device)
    again, _, _, note = tn.texturegen_views(nets, low_mesh, rgba, CFG, device, seed=5, early=stale)
    assert "differed" in note and np.abs(again.astype(int) - want.astype(int)).max() <= 1
