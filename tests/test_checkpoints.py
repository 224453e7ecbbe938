"""Checkpoint loading: shards and indexes, prefixes, dtype casts, strict errors, the engine format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from engine.errors import WeightsError
from engine.models.checkpoints import (
    config_from_dict,
    config_to_json,
    init_random,
    load_engine_checkpoint,
    load_state_dict,
    load_strict,
    read_engine_metadata,
    save_engine_checkpoint,
)


@dataclass(frozen=True)
class _Inner:
    sizes: tuple[int, ...] = (2, 3)


@dataclass(frozen=True)
class _Cfg:
    width: int = 8
    depth: int = 2
    inner: _Inner = field(default_factory=_Inner)
    eps: float | None = None


class _Net(nn.Module):
    def __init__(self, cfg: _Cfg) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.register_buffer("steps", torch.arange(4))


def _net(seed: int = 0) -> _Net:
    return init_random(_Net(_Cfg()), seed)


def _shard(tmp_path, state: dict[str, torch.Tensor]) -> None:
    keys = sorted(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: state[k].contiguous() for k in part}, str(tmp_path / name))
        weight_map.update({k: name for k in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_sharded_round_trip_by_index_and_folder(tmp_path):
    net = _net()
    state = net.state_dict()
    _shard(tmp_path, state)
    for source in (tmp_path, tmp_path / "model.safetensors.index.json",
                   sorted(tmp_path.glob("*.safetensors"))):
        loaded = load_state_dict(source)
        assert sorted(loaded) == sorted(state)
        for k in state:
            assert torch.equal(loaded[k], state[k])
    other = load_strict(_Net(_Cfg()), load_state_dict(tmp_path), "net")
    assert torch.equal(other.layers[1].weight, net.layers[1].weight)


def test_prefix_selection_and_dtype_cast(tmp_path):
    net = _net()
    combined = {f"model.{k}": v for k, v in net.state_dict().items()}
    combined["vae.post_kl.weight"] = torch.ones(3, 3)
    save_file(combined, str(tmp_path / "all.safetensors"))
    sub = load_state_dict(tmp_path / "all.safetensors", prefix="model.", dtype=torch.bfloat16)
    assert sorted(sub) == sorted(net.state_dict())
    assert sub["layers.0.weight"].dtype == torch.bfloat16
    assert sub["steps"].dtype == torch.int64  # integer tensors keep their dtype
    kept = load_state_dict(tmp_path / "all.safetensors", prefix="vae.", strip_prefix=False)
    assert list(kept) == ["vae.post_kl.weight"]
    with pytest.raises(WeightsError, match="conditioner.*groups found: model., vae."):
        load_state_dict(tmp_path / "all.safetensors", prefix="conditioner.")


def test_missing_paths_name_the_path(tmp_path):
    with pytest.raises(WeightsError, match="nowhere.safetensors"):
        load_state_dict(tmp_path / "nowhere.safetensors")
    with pytest.raises(WeightsError, match="no .safetensors file"):
        load_state_dict(tmp_path)
    (tmp_path / "x.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(WeightsError, match="gone.safetensors"):
        load_state_dict(tmp_path)


def test_strict_errors_list_missing_unexpected_and_shapes():
    state = dict(_net().state_dict())
    del state["norm.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["layers.0.weight"] = torch.zeros(8, 9)
    with pytest.raises(WeightsError) as err:
        load_strict(_Net(_Cfg()), state, "tiny net")
    msg = str(err.value)
    assert "tiny net" in msg and "1 missing: norm.bias" in msg and "1 unexpected: extra.weight" in msg
    assert "layers.0.weight (checkpoint [8, 9] vs model [8, 8])" in msg and "fix:" in msg


def test_strict_error_lists_at_most_ten_with_count():
    state = {f"junk.{i}": torch.zeros(1) for i in range(25)}
    state.update(_net().state_dict())
    with pytest.raises(WeightsError, match=r"25 unexpected: .*\(\+15 more\)"):
        load_strict(_Net(_Cfg()), state)


def test_engine_format_round_trip(tmp_path):
    cfg = _Cfg(width=8, depth=3, inner=_Inner((4, 5)), eps=1e-6)
    net = init_random(_Net(cfg), 3).to(torch.bfloat16)
    path = save_engine_checkpoint(tmp_path / "sub" / "net.safetensors", net, cfg, "test-net")
    assert not list((tmp_path / "sub").glob("*.tmp"))
    meta = read_engine_metadata(path)
    assert meta["model"] == "test-net" and meta["dtype"] == "bfloat16" and meta["assetgen_format"] == "1"
    loaded, cfg2 = load_engine_checkpoint(path, _Net, _Cfg, model_name="test-net")
    assert cfg2 == cfg and isinstance(cfg2.inner.sizes, tuple)
    assert torch.equal(loaded.layers[2].weight.to(torch.bfloat16), net.layers[2].weight)
    with pytest.raises(WeightsError, match="holds model 'test-net'"):
        load_engine_checkpoint(path, _Net, _Cfg, model_name="other")


def test_plain_safetensors_is_not_engine_format(tmp_path):
    save_file({"a": torch.zeros(1)}, str(tmp_path / "a.safetensors"))
    with pytest.raises(WeightsError, match="not an AssetGen engine checkpoint"):
        read_engine_metadata(tmp_path / "a.safetensors")


def test_config_json_round_trip_and_init_random_determinism():
    cfg = _Cfg(inner=_Inner((7,)))
    assert config_from_dict(_Cfg, json.loads(config_to_json(cfg))) == cfg
    a, b, c = _net(1), _net(1), _net(2)
    assert torch.equal(a.layers[0].weight, b.layers[0].weight)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    assert torch.all(a.norm.weight == 1) and torch.all(a.layers[0].bias == 0)


def _tiny_models():
    """(builder, config) of every network class the engine loads, at test size."""
    from engine.models.dinov2 import Dinov2Config, Dinov2Model
    from engine.models.image_vae import ImageVAE, ImageVAEConfig
    from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT
    from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder
    from engine.models.super_resolution import SuperResolution, SuperResolutionConfig
    from engine.models.text_encoders import ClipTextConfig, ClipTextEncoder, T5Encoder, T5EncoderConfig
    from engine.models.texturegen_dit import TextureGenConfig, TextureGenDiT

    return {"dinov2": (Dinov2Model, Dinov2Config.tiny()), "meshgen": (MeshGenDiT, MeshGenConfig.tiny()),
            "meshgen_refine": (MeshGenDiT, MeshGenConfig.tiny_refine()),
            "shape_vae": (ShapeVaeDecoder, ShapeVaeConfig.tiny()),
            "texturegen": (TextureGenDiT, TextureGenConfig.tiny()),
            "image_vae": (ImageVAE, ImageVAEConfig.tiny()),
            "t5": (T5Encoder, T5EncoderConfig.tiny()), "clip": (ClipTextEncoder, ClipTextConfig.tiny()),
            "super_resolution": (SuperResolution, SuperResolutionConfig.tiny())}


@pytest.mark.parametrize("name", list(_tiny_models()))
def test_engine_load_equals_eager_build_and_load_bit_for_bit(tmp_path, name):
    """The meta-skeleton loader (no fp32 host copy) gives exactly what building the module eagerly, loading
    the checkpoint strictly and casting gives; constant tables no checkpoint holds (timestep and Fourier
    frequencies) keep their constructor values and float32 dtype, in a bf16 model too."""
    make, cfg = _tiny_models()[name]
    path = save_engine_checkpoint(tmp_path / f"{name}.safetensors", init_random(make(cfg), 5), cfg, name)
    eager = load_strict(make(cfg), load_state_dict(path), name)
    persistent = set(eager.state_dict())
    for dtype in (torch.float32, torch.bfloat16):
        loaded, _ = load_engine_checkpoint(path, make, type(cfg), model_name=name, dtype=dtype)
        reference = dict(eager.named_buffers()) | dict(eager.named_parameters())
        got = dict(loaded.named_buffers()) | dict(loaded.named_parameters())
        assert sorted(got) == sorted(reference)
        for key, value in reference.items():
            cast = key in persistent and value.is_floating_point()
            want = value.to(dtype) if cast else value
            assert got[key].device.type == "cpu" and got[key].dtype == want.dtype, key
            assert torch.equal(got[key], want), key
    buffers = {k for k, _ in eager.named_buffers()} - persistent
    if name in ("meshgen", "shape_vae"):
        assert buffers  # the frequency tables are really exercised


def test_loaded_meshgen_refine_forward_equals_eager(tmp_path):
    from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT

    cfg = MeshGenConfig.tiny_refine()
    path = save_engine_checkpoint(tmp_path / "r.safetensors", init_random(MeshGenDiT(cfg), 2), cfg, "r")
    eager = load_strict(MeshGenDiT(cfg), load_state_dict(path)).eval()
    loaded, _ = load_engine_checkpoint(path, MeshGenDiT, MeshGenConfig, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.n_tokens, cfg.latent_dim, generator=gen)
    cond = torch.randn(1, cfg.n_context, cfg.context_dim, generator=gen)
    pos = torch.randint(0, 16, (cfg.n_tokens, 3), generator=gen)
    t = torch.tensor([999.0])
    with torch.inference_mode():
        want = eager(x, t, eager.precompute_context(cond, pos))
        assert torch.equal(loaded(x, t, loaded.precompute_context(cond, pos)), want)


def test_skeleton_puts_only_this_threads_parameters_on_meta():
    import threading

    from engine.models.checkpoints import skeleton
    from engine.models.dit_layers import TimestepEmbedder, timestep_frequencies

    other = {}

    def build():
        module = TimestepEmbedder(16, freq_dim=8)
        worker = threading.Thread(target=lambda: other.update(p=nn.Linear(2, 2).weight.device.type))
        worker.start()
        worker.join()
        return module

    module = skeleton(build)
    assert all(p.device.type == "meta" for p in module.parameters())
    assert torch.equal(module.freqs, timestep_frequencies(8))  # a real buffer, constructor values
    assert other["p"] == "cpu"                                  # another thread builds normally
    assert nn.Linear(2, 2).weight.device.type == "cpu"          # the hook is gone afterwards


def test_build_on_keeps_constant_tables():
    """build_on used to leave buffers without a reset_buffers() uninitialised (to_empty)."""
    from engine.models.dit_layers import build_on
    from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder

    vae = build_on("cpu", torch.bfloat16, ShapeVaeDecoder, ShapeVaeConfig.tiny(), seed=1)
    ref = ShapeVaeDecoder(ShapeVaeConfig.tiny()).geo_decoder.fourier_embedder.frequencies
    assert torch.equal(vae.geo_decoder.fourier_embedder.frequencies, ref)
    assert vae.post_kl.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, bytes(range(256)) * 8, b"\xff" * 8 + b"{}"])
def test_broken_safetensors_bytes_are_one_line_weights_errors(tmp_path, content):
    """Empty, truncated or random bytes: a WeightsError naming the file (no SafetensorError traceback),
    from every reader: tensors, engine metadata, and the CLI before any stage runs."""
    from engine.cli import main
    from engine.models.checkpoints.safetensors_io import load_state_dict, read_engine_metadata

    bad = tmp_path / "meshgen_coarse.safetensors"
    bad.write_bytes(content)
    for read in (load_state_dict, read_engine_metadata):
        with pytest.raises(WeightsError, match="cannot open checkpoint") as info:
            read(bad)
        assert "\n" not in str(info.value) and str(bad) in str(info.value)
    for name in ("dinov2", "shape_vae"):
        (tmp_path / f"{name}.safetensors").write_bytes(content)
    out = tmp_path / "o.glb"
    assert main(["generate", "--example", "-o", str(out), "--weights", str(tmp_path)]) == 2
    assert not out.exists()
