"""Build a module without allocating its weights, then give it weights on the device in the run dtype.

Why: ``builder(config).to(device).to(dtype)`` first makes every parameter in float32 on the host and runs
its random init (a 7.4 B TextureGen DiT: 30 GB of host memory and minutes of init) only to overwrite it.

``skeleton(make)`` runs the constructor with every PARAMETER replaced by a meta tensor as it is
registered (a module parameter-registration hook, active for the calling thread only), while BUFFERS are
made by the constructor's own code on the host: constant tables that no checkpoint holds (the timestep
frequencies of ``dit_layers.TimestepEmbedder``, the Fourier frequencies of ``shape_vae.FourierEmbedder``)
keep their exact values without any per-class re-initialisation code. (accelerate's
``init_empty_weights(include_buffers=False)`` works the same way; written here.) A parameter created
with ``torch.empty`` before registration costs an untouched host allocation that is freed at once.

``materialise_(module, device, dtype, state)``:
  * parameters and persistent buffers come from ``state`` (tensors as read from a memory-mapped
    safetensors file, already on ``device``), installed with ``load_state_dict(assign=True)``: no copy
    into a pre-allocated module; floating tensors are cast to ``dtype`` (their skeleton dtype when
    ``dtype`` is None), integer ones keep theirs; on the CPU a tensor left at an unaligned file offset
    is copied once into aligned memory (CPU kernels pick other code paths for unaligned weights, so the
    loaded model would differ from the same weights in fresh memory in the last bits);
  * with ``state=None`` parameters get uninitialised storage (``torch.empty``) on the device for a random
    init to fill, and persistent buffers keep their constructor values (floating ones cast to ``dtype``);
  * non-persistent buffers (constant tables) are moved to the device and KEEP their constructor dtype
    (float32 tables stay float32 in a bf16 model: casting 10000 ** (-i / n) frequencies to bf16 would
    shift the phase of a timestep embedding at t = 999 by radians).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

_local = threading.local()
_hook_lock = threading.Lock()
_hook_users = 0
_hook_handle = None


def _to_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> nn.Parameter | None:
    if param is None or not getattr(_local, "depth", 0) or param.device.type == "meta":
        return None
    return nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)


@contextmanager
def _parameters_on_meta():
    """Within the block, parameters registered BY THIS THREAD become meta tensors."""
    global _hook_users, _hook_handle
    with _hook_lock:
        if _hook_users == 0:
            _hook_handle = register_module_parameter_registration_hook(_to_meta)
        _hook_users += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        with _hook_lock:
            _hook_users -= 1
            if _hook_users == 0 and _hook_handle is not None:
                _hook_handle.remove()
                _hook_handle = None


def skeleton(make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` with meta parameters and real (host) buffers; see the module docstring."""
    with _parameters_on_meta():
        return make()


def persistent_buffer_names(module: nn.Module) -> set[str]:
    """Qualified names of the buffers that ``state_dict`` holds."""
    return {n for n, _ in module.named_buffers()} & set(module.state_dict(keep_vars=True))


CPU_ALIGNMENT = 64  # bytes: torch's CPU allocator alignment


def _cast(t: torch.Tensor, like: torch.Tensor, device: torch.device, dtype: torch.dtype | None
          ) -> torch.Tensor:
    target = (dtype or like.dtype) if t.is_floating_point() else t.dtype
    out = t.to(device=device, dtype=target)
    if out.device.type == "cpu" and out.data_ptr() % CPU_ALIGNMENT:
        # a memory-mapped safetensors tensor sits at the file's offset: CPU kernels (oneDNN convolutions)
        # take other code paths on unaligned weights, so a loaded model would not compute bit for bit what
        # the same weights in fresh memory compute; one copy into torch's 64-byte-aligned allocation
        out = out.clone()
    return out


@torch.no_grad()
def materialise_(module: nn.Module, device: str | torch.device, dtype: torch.dtype | None,
                 state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Give a ``skeleton`` its tensors on ``device`` (rules in the module docstring). ``state`` must
    match the module's keys and shapes (check with ``check_state_dict`` first). Returns the module."""
    device = torch.device(device)
    persistent = persistent_buffer_names(module)
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, buf in list(mod._buffers.items()):
            if buf is None:
                continue
            if prefix + name in persistent:
                mod._buffers[name] = _cast(buf, buf, device, dtype) if state is None else buf
            else:
                mod._buffers[name] = buf.to(device)
        if state is None:
            for name, p in list(mod._parameters.items()):
                if p is not None:
                    target = (dtype or p.dtype) if p.is_floating_point() else p.dtype
                    mod._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=target, device=device),
                                                         requires_grad=p.requires_grad)
    if state is not None:
        like = module.state_dict(keep_vars=True)
        module.load_state_dict({k: _cast(v, like[k], device, dtype) for k, v in state.items()},
                               strict=True, assign=True)
    return module
