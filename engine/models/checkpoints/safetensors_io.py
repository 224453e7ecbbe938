"""Checkpoint files: safetensors in, strict loading, and the engine's own converted-weights format.

Accepted inputs of ``load_state_dict``:
  * one ``.safetensors`` file, or a list of them (shards);
  * a ``*.safetensors.index.json`` (Hugging Face sharded layout: ``{"weight_map": {key: shard file}}``);
  * a directory: its ``*.safetensors.index.json`` when there is exactly one, else every ``*.safetensors``.
Files are opened with ``safetensors.safe_open`` (memory-mapped): only the selected tensors are read, so
taking ``conditioner.main_image_encoder.model.`` out of a combined Hunyuan3D-2 file does not read the DiT.

Engine format (``save_engine_checkpoint``): a safetensors file whose header metadata holds
``{"assetgen_format": "1", "model": name, "config": JSON of the frozen config dataclass,
"dtype": "bfloat16"}``, written atomically (temporary file in the destination folder, fsync, ``os.replace``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from engine.errors import WeightsError

ENGINE_FORMAT = "1"
C = TypeVar("C")
PathLike = str | os.PathLike


def resolve_checkpoint_files(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """The safetensors files that ``paths`` names (see the module docstring), in load order."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise WeightsError("no checkpoint file was given",
                           "pass a .safetensors file, an index.json or a folder")
    files: list[Path] = []
    for item in items:
        files.extend(_resolve_one(Path(item)))
    return list(dict.fromkeys(files))


def _resolve_one(path: Path) -> list[Path]:
    if not path.exists():
        raise WeightsError(f"checkpoint path '{path}' does not exist",
                           "check the path, or download the weights to that location")
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if len(indexes) == 1:
            return _files_of_index(indexes[0])
        shards = sorted(path.glob("*.safetensors"))
        if not shards:
            raise WeightsError(f"folder '{path}' holds no .safetensors file",
                               "point at the folder that holds the model's .safetensors weights")
        return shards
    if path.name.endswith(".index.json"):
        return _files_of_index(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"'{path}' is not a .safetensors file",
                           "convert the checkpoint to safetensors (pickled .ckpt/.bin files are not loaded)")
    return [path]


def _files_of_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"cannot read the shard index '{index}': {exc}",
                           "re-download the index.json next to its shards") from exc
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise WeightsError(f"shard index '{index}' names {len(missing)} missing file(s): "
                           f"{', '.join(missing[:5])}", "download every shard listed in the index")
    return files


def open_safetensors(file: PathLike, device: str | torch.device = "cpu"):
    """``safetensors.safe_open`` (memory-mapped) with every header problem (empty, truncated, random
    bytes, not safetensors) raised as a one-line WeightsError naming the file, before any tensor is read."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(file), framework="pt", device=str(device))
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"cannot open checkpoint '{file}': {reason}",
                           "re-download the file; it may be truncated or not a safetensors file") from None


def load_state_dict(paths: PathLike | Iterable[PathLike], dtype: torch.dtype | None = None,
                    device: str | torch.device = "cpu", prefix: str | None = None,
                    strip_prefix: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a (possibly sharded) safetensors checkpoint, memory-mapped.

    ``prefix`` keeps only keys starting with it (stripped from the names when ``strip_prefix``);
    ``dtype`` casts floating-point tensors (integer/bool tensors keep theirs); tensors land on ``device``.
    Raises WeightsError for a missing path, a key present in two shards, or a prefix matching nothing.
    """
    out: dict[str, torch.Tensor] = {}
    seen_prefixes: set[str] = set()
    for file in resolve_checkpoint_files(paths):
        with open_safetensors(file, device) as f:
            for key in f.keys():
                if prefix is not None and not key.startswith(prefix):
                    seen_prefixes.add(key.split(".", 1)[0] + ".")
                    continue
                name = key[len(prefix):] if (prefix is not None and strip_prefix) else key
                if name in out:
                    raise WeightsError(f"key '{key}' appears in more than one shard (second: '{file}')",
                                       "use one consistent set of shards")
                tensor = f.get_tensor(key)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                out[name] = tensor
    if prefix is not None and not out:
        found = ", ".join(sorted(seen_prefixes)[:10]) or "none"
        raise WeightsError(f"no key of the checkpoint starts with '{prefix}' "
                           f"(top-level groups found: {found})",
                           "point at the checkpoint that holds this model, or fix the key prefix")
    return out


def _head(items: list[str], limit: int = 10) -> str:
    more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor]
                     ) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape mismatches) of ``state_dict`` against ``module.state_dict()``."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = sorted(f"{k} (checkpoint {list(state_dict[k].shape)} vs model {list(shape)})"
                        for k, shape in expected.items()
                        if k in state_dict and tuple(state_dict[k].shape) != shape)
    return missing, unexpected, mismatched


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str = "model") -> nn.Module:
    """Copy ``state_dict`` into ``module`` (cast to the module's dtype/device) when keys and shapes match
    exactly; otherwise raise WeightsError listing up to 10 missing, unexpected and mis-shaped keys each."""
    check_strict(module, state_dict, what)
    module.load_state_dict(state_dict, strict=True)
    return module


def check_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str = "model") -> None:
    """Raise WeightsError unless ``state_dict`` matches ``module``'s keys and shapes exactly (works on a
    meta-device module)."""
    missing, unexpected, mismatched = check_state_dict(module, state_dict)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_head(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_head(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} with the wrong shape: {_head(mismatched)}")
        raise WeightsError(f"{what}: checkpoint does not match the model's layout; " + "; ".join(parts),
                           "use a checkpoint of this model and size (check the preset and the key prefix)")


def config_to_json(config: Any) -> str:
    """JSON of a (possibly nested) frozen config dataclass; enums are written by value."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return json.dumps(dataclasses.asdict(config), sort_keys=True,
                      default=lambda o: o.value if hasattr(o, "value") else str(o))


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild the dataclass ``cls`` from ``config_to_json`` output (nested dataclasses, tuples, enums)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in data:
            kwargs[field.name] = _coerce(hints.get(field.name, Any), data[field.name])
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value)  # type: ignore[arg-type]
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v) for v in value)
    if isinstance(hint, type) and hasattr(hint, "__members__"):
        return hint(value)
    return value


def save_engine_checkpoint(path: PathLike, module: nn.Module, config: Any, model_name: str) -> Path:
    """Write ``module``'s weights with ``config`` and ``model_name`` in the header, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    _untie(state)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    meta = {"assetgen_format": ENGINE_FORMAT, "model": model_name, "config": config_to_json(config),
            "dtype": ",".join(dtypes)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _untie(state: dict[str, torch.Tensor]) -> None:
    """safetensors refuses tensors sharing storage: tied weights are written as separate copies."""
    seen: set[tuple[int, int]] = set()
    for key, value in state.items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset())
        if ident in seen:
            state[key] = value.clone()
        seen.add(ident)


def read_engine_metadata(path: PathLike) -> dict[str, str]:
    """Header metadata of an engine checkpoint; WeightsError when the file is not one."""
    file = resolve_checkpoint_files(path)[0]
    with open_safetensors(file) as f:
        meta = f.metadata() or {}
    if meta.get("assetgen_format") != ENGINE_FORMAT:
        raise WeightsError(f"'{file}' is not an AssetGen engine checkpoint (format "
                           f"{meta.get('assetgen_format')!r}, expected {ENGINE_FORMAT!r})",
                           "load it with load_state_dict and the model's own key layout, or convert it first")
    return meta


def load_engine_checkpoint(path: PathLike, builder: Callable[[C], nn.Module], config_cls: type[C], *,
                           model_name: str | None = None, dtype: torch.dtype | None = None,
                           device: str | torch.device = "cpu") -> tuple[nn.Module, C]:
    """Build ``builder(config)`` from the config stored in ``path`` and load its weights strictly.

    ``builder`` is a module class taking the config, or any callable ``config -> nn.Module``.
    ``model_name``, when given, must equal the stored name. Returns (module in eval mode, config).

    No float32 host copy: the module is built as a ``materialise.skeleton`` (meta parameters, real
    constant buffers), the checkpoint's tensors are read memory-mapped straight onto ``device`` and cast
    to ``dtype`` there (None: the dtype the constructor gives, float32), then installed with
    ``load_state_dict(assign=True)``. Non-persistent buffers keep their constructor values and dtype.
    The result equals ``builder(config).to(device)`` after a strict load with its parameters and
    persistent buffers cast to ``dtype``, bit for bit (tests/test_checkpoints.py).
    """
    from engine.models.checkpoints.materialise import materialise_, skeleton

    meta = read_engine_metadata(path)
    if model_name is not None and meta.get("model") != model_name:
        raise WeightsError(f"'{path}' holds model '{meta.get('model')}', not '{model_name}'",
                           "point at the checkpoint converted for this model")
    config = config_from_dict(config_cls, json.loads(meta["config"]))
    module = skeleton(lambda: builder(config))
    state = load_state_dict(path, dtype=dtype, device=device)
    check_strict(module, state, what=meta.get("model", "model"))
    return materialise_(module, device, dtype, state).eval(), config
