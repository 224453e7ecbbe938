"""Image VAE (engine/models/image_vae.py): shapes, seeded determinism, exact tiled decoding, strict
loading round trips, FLOP counts against a hand count, and the benchmark's CPU path."""

from __future__ import annotations

import pytest
import torch

from engine.errors import ConfigError, WeightsError
from engine.models.checkpoints import (
    init_random,
    load_engine_checkpoint,
    load_state_dict,
    load_strict,
    save_engine_checkpoint,
)
from engine.models.image_vae import ImageVAE, ImageVAEConfig, flops_decode, prepare, tiled_map


def tiny_model(seed: int = 0) -> ImageVAE:
    return init_random(prepare(ImageVAE(ImageVAEConfig.tiny()), "cpu"), seed)


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (16, 80)])
def test_round_trip_shapes(size):
    m = tiny_model()
    x = torch.rand(3, 3, *size) * 2 - 1
    with torch.inference_mode():
        z = m.encode(x)
        y = m.decode(z)
    assert z.shape == (3, 4, size[0] // 16, size[1] // 16)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all() and y.abs().max() <= 1.0


def test_paper_config_is_f16c32():
    cfg = ImageVAEConfig.from_name("paper")
    assert cfg.downsample == 16 and cfg.latent_channels == 32
    with torch.device("meta"):
        m = ImageVAE(cfg)
    assert 80e6 < m.param_count < 150e6
    assert m.decoder_halo() == 13


def test_seed_determinism():
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        a, b, c = (tiny_model(s).encode(x) for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_chunked_batches_equal_one_pass():
    from dataclasses import replace

    m = tiny_model()
    one = init_random(prepare(ImageVAE(replace(ImageVAEConfig.tiny(), max_batch=8)), "cpu"), 0)
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(m.encode(x), one.encode(x), rtol=1e-5, atol=1e-5)
        z = one.encode(x)
        torch.testing.assert_close(m.decode(z), one.decode(z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [1, 3, 5])
def test_tiled_decode_equals_untiled(tile):
    m = tiny_model(3)
    z = torch.randn(2, 4, 10, 12)
    with torch.inference_mode():
        full = m.decode(z)
        tiled = m.decode(z, tile=tile)
    torch.testing.assert_close(tiled, full, rtol=0, atol=2e-5)


def test_halo_is_needed():
    """One pixel less context than decoder_halo() changes the result: the halo is tight, and the
    equality test above cannot pass by accident."""
    m = tiny_model(3)
    z = torch.randn(1, 4, 16, 16)
    with torch.inference_mode():
        h = m.decoder.head(z)
        full = m.decoder.tail(h)
        short = tiled_map(m.decoder.tail, h, 4, m.decoder_halo() - 1, 16)
    assert (short - full).abs().max() > 1e-4


def test_strict_load_round_trip(tmp_path):
    from safetensors.torch import save_file

    src, dst = tiny_model(1), tiny_model(2)
    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    load_strict(dst, load_state_dict(path))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(src(x), dst(x))
    state = load_state_dict(path)
    state.pop("decoder.conv_out.bias")
    state["encoder.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="decoder.conv_out.bias"):
        load_strict(dst, state)


def test_engine_checkpoint_round_trip(tmp_path):
    src = tiny_model(4)
    path = save_engine_checkpoint(tmp_path / "vae_engine.safetensors", src, src.cfg, "image_vae")
    loaded, cfg = load_engine_checkpoint(path, ImageVAE, ImageVAEConfig, model_name="image_vae")
    assert cfg == src.cfg
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(prepare(loaded, "cpu")(x), src(x))


def test_bad_inputs_raise_config_errors():
    m = tiny_model()
    with pytest.raises(ConfigError, match="multiples of 16"):
        m.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ConfigError, match="latents"):
        m.decode(torch.zeros(1, 5, 2, 2))
    with pytest.raises(ConfigError):
        ImageVAEConfig(name="bad", block_channels=(8, 24))
    with pytest.raises(ConfigError):
        ImageVAEConfig.from_name("huge")


def test_flops_match_hand_count():
    """A two-level config small enough to count by hand: decoder convs + mid attention."""
    cfg = ImageVAEConfig(name="t", latent_channels=2, block_channels=(4, 8), decoder_blocks=1,
                         attention_head_dim=8)
    h = w = 3  # latent pixels
    px, px2 = h * w, 4 * h * w
    conv = 2 * 9  # multiply-add of a 3x3 tap
    expect = (conv * 2 * 8 * px  # conv_in
              + 2 * 2 * conv * 8 * 8 * px  # mid: two ResBlocks of two convs
              + 2 * px * 8 * 24 + 4 * px * px * 8 + 2 * px * 8 * 8  # qkv, attention, proj
              + 2 * conv * 8 * 8 * px  # coarse level ResBlock
              + conv * 8 * 4 * px2  # upsampler conv at 2x
              + 2 * conv * 4 * 4 * px2  # fine level ResBlock
              + conv * 4 * 3 * px2)  # conv_out
    assert flops_decode(cfg, 1, 2 * h) == expect


def test_benchmark_cpu_tiny(tmp_path):
    from benchmarks.models.image_vae import bench

    rows = bench(device="cpu", preset="tiny", repeats=1)
    names = {(r["name"], r["variant"]) for r in rows}
    assert ("image_vae", "decode_views_64px") in names and ("super_resolution", "sr_views") in names
    assert all(r["p50"] > 0 for r in rows)
