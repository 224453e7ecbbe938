"""Hunyuan3D-2 shape backbone from a local snapshot: flow DiT + ShapeVAE decoder + DINOv2 conditioner.

Snapshot layout (Tencent's Hugging Face repos, shared/reference/open_checkpoints.md): a folder holding
``config.yaml`` and ``model.fp16.safetensors`` (or ``model.safetensors``), e.g. ``hunyuan3d-dit-v2-0``,
``-v2-0-fast``, ``-v2-0-turbo``, ``hunyuan3d-dit-v2-mini(-fast|-turbo)``; or the repo root holding such
subfolders (the first present of ``SUBFOLDER_PREFERENCE`` is used unless ``subfolder`` names one).

``config.yaml`` is read as data only: each section's ``target`` is compared by its class name (never imported)
and its ``params`` mapped onto our typed configs. The one combined weights file holds three key groups split
at the first '.': ``model.`` -> ``Hunyuan3DDiT``, ``vae.`` -> ``ShapeVaeDecoder`` (the encoder's keys, if any,
are dropped by ``shape_vae.load_hunyuan_vae``), ``conditioner.main_image_encoder.model.`` -> ``Dinov2Model``
(Hugging Face names). Every group loads strictly (engine.errors.WeightsError lists missing / unexpected /
mis-shaped keys); an unknown group is an error too. Modules are built on the meta device and materialised
directly on the target device in the target dtype, so a 1.1B DiT never exists as an fp32 CPU copy.

Sampling (Tencent's ``Hunyuan3DDiTFlowMatchingPipeline``): noise ~ N(0, 1) of [B, num_latents, embed_dim],
Euler over the scheduler's grid (engine.sampling.flow_euler), CFG batched with an all-zero unconditional
image embedding for the plain DiTs, the guidance scale fed to ``guidance_in`` for the distilled ones.
The returned latents are at the DiT's scale; ``ShapeVaeDecoder.decode_latents`` divides by scale_factor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from engine.errors import ConfigError, WeightsError
from engine.models.dinov2 import ConditionTokens, Dinov2Config, Dinov2Model, condition_tokens, prepare_pixels
from engine.models.hunyuan3d_dit import Hunyuan3DDiT, Hunyuan3DDiTConfig
from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder, load_hunyuan_vae
from engine.sampling.flow_euler import FlowEulerSampler, FlowSchedule, FlowScheduleKind, GuidanceMode

SUBFOLDER_PREFERENCE = ("hunyuan3d-dit-v2-0-turbo", "hunyuan3d-dit-v2-0-fast", "hunyuan3d-dit-v2-0",
                        "hunyuan3d-dit-v2-mini-turbo", "hunyuan3d-dit-v2-mini-fast", "hunyuan3d-dit-v2-mini")
WEIGHT_FILES = ("model.fp16.safetensors", "model.safetensors")
DIT_PREFIX, VAE_PREFIX, COND_PREFIX = "model.", "vae.", "conditioner.main_image_encoder.model."
_DINO_VERSIONS = {"facebook/dinov2-giant": Dinov2Config.giant, "facebook/dinov2-large": Dinov2Config.large,
                  "facebook/dinov2-with-registers-giant": Dinov2Config.giant_registers}
_HF_DINO = {"hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
            "num_attention_heads": "num_heads", "patch_size": "patch_size", "image_size": "image_size",
            "num_register_tokens": "num_register_tokens",
            "use_swiglu_ffn": "swiglu", "mlp_ratio": "mlp_ratio", "qkv_bias": "qkv_bias",
            "layer_norm_eps": "layer_norm_eps", "layerscale_value": "layerscale_value",
            "num_channels": "num_channels"}
_VAE_PARAMS = {"num_latents": "num_latents", "embed_dim": "embed_dim", "width": "width", "heads": "heads",
               "num_decoder_layers": "num_layers", "num_freqs": "num_freqs", "include_pi": "include_pi",
               "qkv_bias": "qkv_bias", "qk_norm": "qk_norm", "scale_factor": "scale_factor",
               "geo_decoder_downsample_ratio": "geo_downsample",
               "geo_decoder_mlp_expand_ratio": "geo_mlp_ratio",
               "geo_decoder_ln_post": "geo_ln_post"}
_TOPK = {3072: 1024, 512: 256, 4096: 1365}  # FlashVDM's latents kept per query chunk


@dataclass(frozen=True)
class Hunyuan3DSpec:
    """Everything ``config.yaml`` says that the engine uses."""

    name: str
    dit: Hunyuan3DDiTConfig
    vae: ShapeVaeConfig
    dino: Dinov2Config
    cond_image_size: int = 518
    use_cls_token: bool = True
    schedule: FlowSchedule = FlowSchedule()

    @property
    def default_steps(self) -> int:
        """Tencent's step counts: 5 for the consistency-distilled turbo DiTs, 50 otherwise."""
        return 5 if self.schedule.kind is FlowScheduleKind.CONSISTENCY else 50


def _section(cfg: dict, key: str, source: Path) -> tuple[str, dict]:
    sec = cfg.get(key)
    if not isinstance(sec, dict) or "target" not in sec:
        raise WeightsError(f"{source}: section '{key}' with a 'target' is missing",
                           "use the config.yaml shipped with the Hunyuan3D-2 snapshot")
    return str(sec["target"]), dict(sec.get("params") or {})


def _dino_config(params: dict, source: Path) -> tuple[Dinov2Config, int, bool]:
    enc = params.get("main_image_encoder") or {}
    if enc.get("type") != "DinoImageEncoder":
        raise WeightsError(f"{source}: image encoder '{enc.get('type')}' is not supported",
                           "use a single-view Hunyuan3D-2 snapshot (DinoImageEncoder)")
    kw = dict(enc.get("kwargs") or {})
    if isinstance(kw.get("config"), dict):
        hf = kw["config"]
        changes = {ours: hf[theirs] for theirs, ours in _HF_DINO.items() if theirs in hf}
        dino = replace(Dinov2Config(num_register_tokens=0), **changes)  # HF Dinov2Model: no registers
    elif kw.get("version") in _DINO_VERSIONS:
        dino = _DINO_VERSIONS[kw["version"]]()
    else:
        raise WeightsError(f"{source}: the image encoder names neither a config nor a known version "
                           f"({kw.get('version')!r})", f"use one of {sorted(_DINO_VERSIONS)}")
    return dino, int(kw.get("image_size", 224)), bool(kw.get("use_cls_token", True))


def parse_hunyuan3d_config(path: str | Path) -> Hunyuan3DSpec:
    """Read a Hunyuan3D-2 ``config.yaml`` (data only) into a Hunyuan3DSpec; WeightsError when unusable."""
    import yaml

    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise WeightsError(f"cannot read '{path}': {exc}", "re-download the snapshot's config.yaml") from exc
    if not isinstance(cfg, dict):
        raise WeightsError(f"'{path}' is not a Hunyuan3D-2 config", "point at the snapshot's config.yaml")
    target, params = _section(cfg, "model", path)
    if target.rsplit(".", 1)[-1] != "Hunyuan3DDiT":
        raise WeightsError(f"{path}: denoiser '{target}' is not supported (only Hunyuan3DDiT: "
                           "Hunyuan3D-2 and -2mini)",
                           "use a hunyuan3d-dit-v2-0* or hunyuan3d-dit-v2-mini* snapshot")
    try:
        dit = Hunyuan3DDiTConfig.from_yaml_params(params)
        _, vae_params = _section(cfg, "vae", path)
        n = int(vae_params.get("num_latents", 3072))
        vae_kw = {ours: vae_params[theirs] for theirs, ours in _VAE_PARAMS.items() if theirs in vae_params}
        vae = ShapeVaeConfig(name=path.parent.name or "hunyuan", default_topk=_TOPK.get(n, max(1, n // 3)),
                             **vae_kw)
        dino, size, cls_token = _dino_config(_section(cfg, "conditioner", path)[1], path)
        schedule = FlowSchedule.from_yaml(*_section(cfg, "scheduler", path))
    except (ConfigError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: unusable parameters ({exc})",
                           "use the snapshot's own config.yaml") from exc
    if dit.context_in_dim != dino.hidden_size or dit.in_channels != vae.embed_dim:
        raise WeightsError(f"{path}: DiT sizes (context {dit.context_in_dim}, channels {dit.in_channels}) do "
                           f"not match the conditioner width {dino.hidden_size} / VAE latent width "
                           f"{vae.embed_dim}", "use the snapshot's own config.yaml")
    return Hunyuan3DSpec(path.parent.name, dit, vae, dino, size, cls_token, schedule)


def resolve_snapshot(path: str | Path, subfolder: str | None = None) -> tuple[Path, Path]:
    """(config.yaml, weights file) of a snapshot folder or of a repo root's DiT subfolder."""
    root = Path(path)
    if not root.is_dir():
        raise WeightsError(f"Hunyuan3D-2 snapshot folder '{root}' does not exist",
                           "pass the folder holding config.yaml and model.fp16.safetensors")
    folder = root / subfolder if subfolder else root
    if not (folder / "config.yaml").is_file() and subfolder is None:
        found = [root / s for s in SUBFOLDER_PREFERENCE if (root / s / "config.yaml").is_file()]
        if not found:
            raise WeightsError(f"'{root}' holds no config.yaml and none of the subfolders "
                               f"{', '.join(SUBFOLDER_PREFERENCE)}",
                               "point at a hunyuan3d-dit-* folder or the repo that contains them")
        folder = found[0]
    if not (folder / "config.yaml").is_file():
        raise WeightsError(f"'{folder}' has no config.yaml", "download the snapshot's config.yaml too")
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / "config.yaml", folder / name
    hint = " (only the pickled model.ckpt is there)" if (folder / "model.ckpt").exists() else ""
    raise WeightsError(f"'{folder}' has no {' or '.join(WEIGHT_FILES)}{hint}",
                       "download model.fp16.safetensors (pickled checkpoints are not loaded)")


def _key_groups(file: Path) -> dict[str, int]:
    from engine.models.checkpoints.safetensors_io import open_safetensors

    groups: dict[str, int] = {}
    with open_safetensors(file) as f:
        for key in f.keys():
            g = COND_PREFIX if key.startswith(COND_PREFIX) else key.split(".", 1)[0] + "."
            groups[g] = groups.get(g, 0) + 1
    return groups


def _materialise(make, device: torch.device, dtype: torch.dtype) -> nn.Module:
    with torch.device("meta"):
        module = make()
    return module.to(dtype).to_empty(device=device)


class Hunyuan3DShapeModel(nn.Module):
    """A loaded Hunyuan3D-2 shape backbone. ``conditioner`` is None when loaded without it."""

    def __init__(self, spec: Hunyuan3DSpec, dit: Hunyuan3DDiT, vae: ShapeVaeDecoder,
                 conditioner: Dinov2Model | None) -> None:
        super().__init__()
        self.spec, self.dit, self.vae, self.conditioner = spec, dit, vae, conditioner
        self._samplers: dict[tuple, FlowEulerSampler] = {}

    @property
    def device(self) -> torch.device:
        return self.dit.latent_in.weight.device

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """RGB image (see dinov2.prepare_pixels: [H, W, 3] / [B, H, W, 3] / [B, 3, H, W], uint8 or [0, 1]),
        already square and on a white background -> condition tokens [B, L, context_in_dim]."""
        if self.conditioner is None:
            raise ConfigError("this Hunyuan3D-2 model was loaded without its conditioner",
                              "load it with load_conditioner=True or pass image tokens to sample_latents")
        w = self.conditioner.layernorm.weight
        hidden = self.conditioner(prepare_pixels(image.to(w.device), self.spec.cond_image_size, w.dtype))
        which = ConditionTokens.ALL if self.spec.use_cls_token else ConditionTokens.PATCHES
        return condition_tokens(hidden, self.spec.dino, which)

    def sampler(self, steps: int) -> FlowEulerSampler:
        """The sampler for ``steps`` on this model's device (tables built once and cached)."""
        key = (steps, self.device)
        if key not in self._samplers:
            self._samplers[key] = FlowEulerSampler(steps, self.spec.schedule, self.device)
        return self._samplers[key]

    @torch.inference_mode()
    def sample_latents(self, cond_tokens: torch.Tensor, steps: int | None = None, guidance: float = 5.0,
                       seed: int = 0) -> torch.Tensor:
        """cond_tokens [B, L, context_in_dim] -> latents float32 [B, num_latents, embed_dim] (DiT scale).

        steps: default ``spec.default_steps``; guidance: Tencent's default 5.0. Plain DiTs run CFG batched
        (cond and a zero embedding in one batch of 2B) unless guidance == 1 or < 0, which is the conditional
        branch alone (identical maths at w = 1, Tencent's rule for w < 0); distilled DiTs take w as input.
        """
        steps = self.spec.default_steps if steps is None else steps
        b, dev = cond_tokens.shape[0], self.device
        gen = torch.Generator(device=dev).manual_seed(seed)
        shape = (b, self.spec.vae.num_latents, self.spec.dit.in_channels)
        noise = torch.randn(shape, generator=gen, device=dev)  # [B, N, C] float32
        cond = cond_tokens.to(dev, self.dit.latent_in.weight.dtype)
        if self.spec.dit.guidance_embed:
            mode, uncond = GuidanceMode.EMBEDDED, None
        elif guidance == 1.0 or guidance < 0:
            mode, uncond = GuidanceMode.NONE, None
        else:
            mode, uncond = GuidanceMode.CFG, torch.zeros_like(cond)
        return self.sampler(steps).sample(self.dit, noise, cond, uncond, guidance, mode)


def load_hunyuan3d_snapshot(path: str | Path, device: str | torch.device = "cpu",
                            dtype: torch.dtype = torch.float16, subfolder: str | None = None,
                            load_conditioner: bool = True) -> Hunyuan3DShapeModel:
    """Load a Hunyuan3D-2 / -2mini snapshot (see the module docstring) strictly onto ``device``/``dtype``."""
    from engine.models.checkpoints import load_state_dict, load_strict

    config_file, weights = resolve_snapshot(path, subfolder)
    spec = parse_hunyuan3d_config(config_file)
    device = torch.device(device)
    groups = _key_groups(weights)
    known = {DIT_PREFIX, VAE_PREFIX, COND_PREFIX}
    unknown = sorted(set(groups) - known)
    missing = sorted(g for g in known - set(groups) if load_conditioner or g != COND_PREFIX)
    if unknown or missing:
        raise WeightsError(f"'{weights}': key groups do not match a Hunyuan3D-2 snapshot (missing: "
                           f"{', '.join(missing) or 'none'}; unexpected: {', '.join(unknown) or 'none'})",
                           "use the combined model.fp16.safetensors of a hunyuan3d-dit-* folder")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return load_state_dict(weights, dtype=dtype, device=device, prefix=prefix)

    dit = load_strict(_materialise(lambda: Hunyuan3DDiT(spec.dit), device, dtype), part(DIT_PREFIX),
                      what=f"Hunyuan3D-2 DiT ({spec.name})")
    with torch.device(device):
        vae = ShapeVaeDecoder(spec.vae).to(dtype)  # built in place: its Fourier table is a buffer
    load_hunyuan_vae(vae, part(VAE_PREFIX))
    cond = None
    if load_conditioner:
        cond = load_strict(_materialise(lambda: Dinov2Model(spec.dino), device, dtype), part(COND_PREFIX),
                           what=f"Hunyuan3D-2 DINOv2 conditioner ({spec.name})")
    return Hunyuan3DShapeModel(spec, dit.eval(), vae.eval(), cond.eval() if cond is not None else None)
