"""Shape stage networks (engine/stages/shape_networks.py): MeshGen coarse and coarse + refine end to end on
a real picture with tiny random networks, typed config fields, runners kept across requests, engine-format
loading, and a Hunyuan3D-2 snapshot (real weights do not exist here)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import IMAGES

from engine.config import ShapeConfig
from engine.errors import ConfigError, WeightsError
from engine.io.image_input import prepare_image
from engine.models.shape_decoding import VaeField, dense_decode
from engine.stages import shape_networks as sn

CFG = ShapeConfig(coarse_steps=2, refine_tokens=64, refine_steps=2, dino_resolution_refine=112,
                  grid_resolution=32)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def crate_rgba():
    return prepare_image(IMAGES / "typical_misc_crate.png").rgba


@pytest.fixture(scope="module")
def nets():
    return sn.random_meshgen("tiny", "cpu", torch.float32, seed=0, refine=True)


def _calls(module, record):
    """Forward hook appending the first input's shape of every call of ``module`` to ``record``."""
    return module.register_forward_hook(lambda m, args, out: record.append(tuple(args[0].shape)))


def _check_mesh(result, bounds):
    assert result.faces.shape[0] > 0 and result.faces.dtype == torch.int32
    assert result.verts.dtype == torch.float32 and result.verts.abs().max() <= bounds + 1e-5
    assert int(result.faces.max()) < result.verts.shape[0] and result.queries > 0


@pytest.mark.parametrize("device", DEVICES)
def test_coarse_and_refine_end_to_end(crate_rgba, device):
    """Coarse only, then coarse + refine at the paper's DINOv2 sizes (518 / 1022 px: the position table
    is interpolated to 73 x 73): both give a mesh, refine changes it and says so."""
    nets = sn.random_meshgen("tiny", device, torch.float32, seed=0, refine=True)
    cfg = replace(CFG, dino_resolution_refine=1022)
    dino_out: list = []
    hook = nets.dino.register_forward_hook(lambda m, a, out: dino_out.append(tuple(out.shape)))
    coarse = sn.meshgen_shape(nets, crate_rgba, replace(cfg, refine=False), device, seed=1)
    refined = sn.meshgen_shape(nets, crate_rgba, cfg, device, seed=1)
    hook.remove()
    _check_mesh(coarse, cfg.bounds)
    _check_mesh(refined, cfg.bounds)
    assert dino_out == [(1, 1 + 4 + 37 ** 2, 64), (1, 1 + 4 + 37 ** 2, 64), (1, 1 + 4 + 73 ** 2, 64)]
    assert "refine off in the config" in coarse.source
    assert "refine 64 anchored tokens, 2 steps, DINOv2 1022 px" in refined.source
    assert refined.queries > coarse.queries
    assert coarse.verts.shape != refined.verts.shape or not torch.equal(coarse.verts, refined.verts)


def test_typed_config_fields_are_honoured(nets, crate_rgba):
    coarse_x, refine_x, pixels = [], [], []
    hooks = [_calls(nets.coarse, coarse_x), _calls(nets.refine, refine_x), _calls(nets.dino, pixels)]
    cfg = replace(CFG, coarse_steps=2, refine_steps=3, refine_tokens=48, dino_resolution_coarse=84,
                  bounds=0.8)
    result = sn.meshgen_shape(nets, crate_rgba, cfg, "cpu", seed=0)
    for h in hooks:
        h.remove()
    assert coarse_x == [(1, 32, 8)] * 2                    # coarse_steps DiT calls on the network's N, D
    assert refine_x == [(1, 48, 8)] * 3                    # refine_steps calls on refine_tokens anchors
    assert pixels == [(1, 3, 84, 84), (1, 3, 112, 112)]    # dino_resolution_coarse / _refine
    _check_mesh(result, 0.8)
    with pytest.raises(ConfigError, match="multiple of the 14 px patch"):
        sn.meshgen_shape(nets, crate_rgba, replace(cfg, dino_resolution_coarse=500), "cpu")


def test_runners_are_kept_across_requests(nets, crate_rgba):
    first = sn.meshgen_shape(nets, crate_rgba, CFG, "cpu", seed=5)
    runners = dict(nets.runners)
    assert {key[0] for key in runners} >= {"coarse", "refine"}
    again = sn.meshgen_shape(nets, crate_rgba, CFG, "cpu", seed=5)
    assert nets.runners.keys() == runners.keys()
    assert all(nets.runners[k] is runners[k] for k in runners)       # reused, not rebuilt
    assert torch.equal(first.verts, again.verts) and torch.equal(first.faces, again.faces)
    other = sn.meshgen_shape(nets, crate_rgba, CFG, "cpu", seed=6)
    assert other.verts.shape != first.verts.shape or not torch.equal(other.verts, first.verts)


def test_refine_requested_without_refine_networks_uses_the_coarse_mesh(nets, crate_rgba):
    coarse_only = sn.random_meshgen("tiny", "cpu", torch.float32, seed=0, refine=False)
    assert not coarse_only.has_refine and "meshgen_refine" not in coarse_only.network_names()
    result = sn.meshgen_shape(coarse_only, crate_rgba, CFG, "cpu", seed=2)
    assert "refine requested but no refine networks are loaded" in result.source
    same = sn.meshgen_shape(nets, crate_rgba, replace(CFG, refine=False), "cpu", seed=2)
    assert torch.equal(result.verts, same.verts)          # same seeds -> same coarse networks


def _save_bundle(nets, folder, refine: bool):
    from engine.models.checkpoints import save_engine_checkpoint

    parts = [("dinov2", nets.dino, nets.dino_cfg, "dinov2.safetensors"),
             ("meshgen_dit", nets.coarse, nets.coarse_cfg, "meshgen_coarse.safetensors"),
             ("shape_vae", nets.coarse_vae, nets.coarse_vae.cfg, "shape_vae.safetensors")]
    if refine:
        parts += [("meshgen_dit", nets.refine, nets.refine_cfg, "meshgen_refine.safetensors"),
                  ("shape_vae", nets.refine_vae, nets.refine_vae.cfg, "shape_vae_refine.safetensors")]
    for name, module, cfg, file in parts:
        save_engine_checkpoint(folder / file, module, cfg, name)


def test_load_meshgen_equals_random_meshgen(nets, crate_rgba, tmp_path):
    _save_bundle(nets, tmp_path, refine=True)
    loaded = sn.load_meshgen(tmp_path, "cpu", torch.float32)
    assert loaded.has_refine and loaded.network_names() == nets.network_names()
    want = sn.meshgen_shape(nets, crate_rgba, CFG, "cpu", seed=3)
    got = sn.meshgen_shape(loaded, crate_rgba, CFG, "cpu", seed=3)
    assert torch.equal(got.verts, want.verts) and torch.equal(got.faces, want.faces)
    (tmp_path / "shape_vae_refine.safetensors").unlink()          # refine needs both files
    assert not sn.load_meshgen(tmp_path, "cpu", torch.float32).has_refine


def test_missing_meshgen_files_are_named(tmp_path):
    assert not sn.has_meshgen(str(tmp_path))
    with pytest.raises(WeightsError, match="meshgen_coarse.safetensors"):
        sn.load_meshgen(tmp_path, "cpu", torch.float32)


def test_hunyuan_snapshot_runs(tmp_path, crate_rgba):
    from test_models_hunyuan3d import _write_snapshot

    _write_snapshot(tmp_path / "hunyuan3d-dit-v2-0")
    nets = sn.load_hunyuan(tmp_path, "cpu", torch.float32)
    assert nets.kind == "Hunyuan3D-2" and nets.network_names() == ["hunyuan3d"]
    with torch.inference_mode():
        sn.centre_field(nets.model.vae, 64, seed=0)                # random decoder -> a zero level set
    result = sn.run_shape(nets, crate_rgba, CFG, "cpu", seed=1)
    _check_mesh(result, CFG.bounds)
    assert "hunyuan3d-dit-v2-0" in result.source


def test_picture_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgba[2, 2] = (0, 0, 0, 128)
    out = sn.picture_on_white(rgba).numpy()
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (255, 255, 255)
    assert tuple(out[2, 2]) == (127, 127, 127)


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
                 str(tmp_path), "--faces", "2000", "--texture-size", "256", "--normal-map-size", "256"])
    printed = capsys.readouterr()
    assert code == 0 and out.is_file() and out.stat().st_size > 1000, printed.err[-2000:]
    assert "shape source: Hunyuan3D-2 snapshot hunyuan3d-dit-v2-0" in printed.out + printed.err


def test_smooth_field_is_one_closed_surface_at_its_radius():
    """Paper-size latency runs decode ``smooth_field``'s surface: one sign change per crossing of a line
    through the centre, at SMOOTH_RADIUS (the paper-size decoder in bf16, as the benchmark builds it: a
    random MLP of the radial coordinate is monotone at this width and seed, not at the tiny size)."""
    import math

    import numpy as np
    import torch

    from engine.models.dit_layers import build_on
    from engine.models.shape_decoding import VaeField
    from engine.models.shape_vae import ShapeVaeDecoder
    from engine.models.shape_vae import init_random as vae_init
    from engine.stages.shape_networks import SMOOTH_RADIUS, centre_field, meshgen_configs

    cfgs = meshgen_configs("paper")
    # the seeds random_meshgen gives the coarse and the refine decoder; 16 latents suffice (the field no
    # longer reads them) and keep the paper-size latent transformer cheap on CPU
    for name, build_seed, seed in (("vae", 2, 0), ("vae_refine", 4, 1)):
        vae = centre_field(build_on("cpu", torch.bfloat16, ShapeVaeDecoder, cfgs[name], seed=build_seed,
                                    init=vae_init), 16, seed, smooth=True)
        z = torch.randn((1, 16, vae.cfg.embed_dim), generator=torch.Generator().manual_seed(3))
        field = VaeField(vae, vae.decode_latents(z))
        xs = torch.linspace(-1.01, 1.01, 513)
        for direction in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1 / math.sqrt(3),) * 3):
            pts = xs[:, None] * torch.tensor(direction)[None]
            with torch.inference_mode():
                v = field(pts).float().flatten().numpy()
            crossings = xs[np.nonzero(np.diff(np.sign(v)))[0]].numpy()
            assert len(crossings) == 2, (name, direction, crossings)
            assert np.allclose(np.abs(crossings), SMOOTH_RADIUS, atol=0.03), crossings
