"""Per-view super-resolution (engine/models/super_resolution.py): shapes per scale, seeded determinism,
view chunking and exact tiling against one pass, the Real-ESRGAN key layout, strict loading."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine.errors import ConfigError, WeightsError
from engine.models.checkpoints import init_random, load_state_dict, load_strict
from engine.models.image_vae import prepare
from engine.models.super_resolution import SuperResolution, SuperResolutionConfig, flops_upscale


def tiny_model(seed: int = 0, **overrides) -> SuperResolution:
    cfg = replace(SuperResolutionConfig.tiny(), **overrides)
    return init_random(prepare(SuperResolution(cfg), "cpu"), seed, std=0.15)  # outputs O(1), not ~0


@pytest.mark.parametrize("scale,size", [(2, (24, 40)), (4, (15, 9)), (1, (16, 20))])
def test_shapes_per_scale(scale, size):
    m = tiny_model(scale=scale)
    x = torch.rand(3, 3, *size)
    with torch.inference_mode():
        y = m.upscale(x)
    assert y.shape == (3, 3, size[0] * scale, size[1] * scale)
    assert y.min() >= 0 and y.max() <= 1 and y.std() > 1e-2


def test_seed_determinism():
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        a, b, c = (tiny_model(s)(x) for s in (5, 5, 6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_view_chunks_equal_one_pass():
    m, one = tiny_model(1), tiny_model(1, max_batch=16)
    x = torch.rand(5, 3, 16, 24)
    with torch.inference_mode():
        torch.testing.assert_close(m.upscale(x), one.upscale(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [8, 18, 32])
def test_tiles_with_receptive_pad_equal_untiled(tile):
    m = tiny_model(2)
    x = torch.rand(2, 3, 96, 80)  # wider than one tile plus the 68 px receptive radius
    with torch.inference_mode():
        full = m(x)
        tiled = m.upscale(x, tile=tile)
    torch.testing.assert_close(tiled, full.clamp(0, 1), rtol=0, atol=2e-5)


def test_short_pad_is_approximate():
    m = tiny_model(2)
    x = torch.rand(1, 3, 96, 96)
    with torch.inference_mode():
        full = m(x)
        rough = m.upscale(x, tile=16, tile_pad=4)
    assert (rough - full.clamp(0, 1)).abs().max() > 1e-3


def test_real_esrgan_key_layout():
    with torch.device("meta"):
        m = SuperResolution(SuperResolutionConfig.paper())
    keys = set(m.state_dict())
    for key in ("conv_first.weight", "body.22.rdb3.conv5.bias", "conv_body.weight", "conv_up1.weight",
                "conv_up2.weight", "conv_hr.weight", "conv_last.bias"):
        assert key in keys
    assert tuple(m.state_dict()["conv_first.weight"].shape) == (64, 12, 3, 3)  # x2: unshuffled input
    assert tuple(m.state_dict()["body.0.rdb1.conv5.weight"].shape) == (64, 192, 3, 3)
    assert 16e6 < m.param_count < 17.5e6
    assert m.receptive_radius() == 698


def test_strict_load_round_trip(tmp_path):
    from safetensors.torch import save_file

    src, dst = tiny_model(3), tiny_model(4)
    path = tmp_path / "sr.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    load_strict(dst, load_state_dict(path))
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(src(x), dst(x))
    with pytest.raises(WeightsError, match="wrong shape"):
        load_strict(tiny_model(scale=4), load_state_dict(path))  # x4 has 3 input channels, x2 has 12


def test_flops_of_one_dense_block():
    cfg = SuperResolutionConfig(name="t", scale=4, features=4, growth=2, blocks=1)
    h = 3
    px, px2, px4 = h * h, 4 * h * h, 16 * h * h
    conv = 2 * 9
    rdb = conv * px * (4 * 2 + 6 * 2 + 8 * 2 + 10 * 2 + 12 * 4)
    expect = (conv * px * 3 * 4 + 3 * rdb + conv * px * 16 + conv * px2 * 16 + conv * px4 * 16 * 2
              + conv * px4 * 4 * 3)
    assert flops_upscale(cfg, 1, h) == expect


def test_bad_inputs():
    m = tiny_model()
    with pytest.raises(ConfigError, match="multiples of 2"):
        m.upscale(torch.rand(1, 3, 9, 8))
    with pytest.raises(ConfigError):
        SuperResolutionConfig(name="x3", scale=3)
    with pytest.raises(ConfigError):
        m.upscale(torch.rand(1, 3, 8, 8), tile=3)
