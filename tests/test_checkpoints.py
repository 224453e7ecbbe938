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
