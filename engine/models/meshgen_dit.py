"""MeshGen coarse and refine diffusion transformers (paper 5.2), v-prediction over VecSet latents.

Architecture, as the paper states it: a linear maps N x D noisy latent tokens (coarse N = 4096, refine
N = 16384; D = 64) to width W = 2048; 24 blocks with 16 heads, each (i) self-attention with AdaLN and QK
normalisation, (ii) cross-attention to DINOv2-g/14 image tokens (context dim 1536) with AdaLN, (iii) a
SwiGLU FFN; the first and last 11 blocks are joined by long skip connections; a final LayerNorm and a
linear give the velocity [B, N, D]. AdaLN is driven by the timestep embedding only.

Choices the paper leaves open (documented, each a config field):
* Long skips follow U-ViT (Bao et al. 2023): block 23 - i receives the output of block i (i < 11) as
  ``x = Linear_2W->W(cat(x, skip))`` before it runs; blocks 11 and 12 form the middle.
* AdaLN per block (SiLU + Linear, DiT) giving (shift, scale, gate) for the two attention sub-layers, the
  ones the paper names with AdaLN; the FFN is pre-normed with an affine LayerNorm and no gate.
* SwiGLU hidden = 8/3 W rounded up to 256 = 5632 (LLaMA's ratio).
With these choices ``param_count(MeshGenConfig.coarse())`` = 2.29B against the paper's "2.3B" (per block:
self-attn 16.8M, cross-attn 14.7M, AdaLN 25.2M, SwiGLU 34.6M; skips 92.3M). Modulating the FFN too
(9 chunks) would give 2.58B, which is why it is left out.

Refine DiT: the same family, N = 16384 tokens, each anchored to a voxel of the coarse surface
(``refine_token_positions``), 3D RoPE on those positions in self-attention (``engine.models.rope3d``),
DINOv2 at 1022 px (1 + 4 + 73 * 73 = 5334 context tokens), 5 distilled steps (paper 5.3).

Per request ``precompute_context(cond, positions)`` computes every block's cross-attention K/V and the
rotary tables once; a denoising step is ``forward(x [B, N, 64], t [B], ctx) -> v [B, N, 64]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from engine.models.dit_layers import (
    DiTBlock,
    DiTBlockConfig,
    TimestepEmbedder,
    block_flops,
    context_kv_flops,
    swiglu_hidden,
)
from engine.models.rope3d import rope3d_tables


def dinov2_tokens(image_px: int, patch: int = 14, registers: int = 4) -> int:
    """Tokens of DINOv2-g/14 with registers at ``image_px``: 1 class + registers + (px / 14)^2."""
    return 1 + registers + (image_px // patch) ** 2


@dataclass(frozen=True)
class MeshGenConfig:
    """One MeshGen DiT. Presets: ``coarse()`` (= ``paper()``), ``refine()``, ``tiny()``, ``tiny_refine()``."""

    name: str = "coarse"
    depth: int = 24
    width: int = 2048
    heads: int = 16
    latent_dim: int = 64
    n_tokens: int = 4096
    context_dim: int = 1536
    n_context: int = 1374
    mlp_hidden: int = swiglu_hidden(2048)
    long_skips: int = 11
    qk_norm: bool = True
    modulate: tuple[str, ...] = ("self", "cross")
    rope: bool = False
    rope_theta: float = 10000.0
    freq_dim: int = 256
    steps: int = 25  # distilled sampling steps (teacher: 100 coarse / 20 refine, with CFG)
    image_px: int = 518

    def __post_init__(self) -> None:
        if not 0 <= 2 * self.long_skips <= self.depth:
            raise ValueError(f"{self.long_skips} long skips need depth >= {2 * self.long_skips}")
        self.block_config()  # validates width/heads/modulate

    def block_config(self) -> DiTBlockConfig:
        return DiTBlockConfig(width=self.width, heads=self.heads, mlp_hidden=self.mlp_hidden,
                              context_dim=self.context_dim, qk_norm=self.qk_norm, modulate=self.modulate)

    @classmethod
    def coarse(cls) -> MeshGenConfig:
        return cls()

    @classmethod
    def paper(cls) -> MeshGenConfig:
        return cls.coarse()

    @classmethod
    def refine(cls) -> MeshGenConfig:
        return cls(name="refine", n_tokens=16384, n_context=dinov2_tokens(1022), rope=True, steps=5,
                   image_px=1022)

    @classmethod
    def tiny(cls) -> MeshGenConfig:
        return cls(name="tiny", depth=6, width=64, heads=4, latent_dim=8, n_tokens=32, context_dim=48,
                   n_context=10, mlp_hidden=swiglu_hidden(64, multiple=32), long_skips=2, freq_dim=32,
                   steps=4, image_px=28)

    @classmethod
    def tiny_refine(cls) -> MeshGenConfig:
        return replace(cls.tiny(), name="tiny_refine", n_tokens=64, rope=True, rope_theta=100.0)

    @classmethod
    def from_name(cls, name: str) -> MeshGenConfig:
        presets = {"coarse": cls.coarse, "paper": cls.paper, "refine": cls.refine, "tiny": cls.tiny,
                   "tiny_refine": cls.tiny_refine}
        if name not in presets:
            raise ValueError(f"unknown MeshGen preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()


@dataclass(frozen=True, eq=False)
class MeshGenContext:
    """Per-request constants: ``kv[i]`` = block i's cross-attention (k, v), each [B, H, M, Dh];
    ``rope`` = (cos, sin) [N, Dh] for the refine model, None for the coarse one."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def tensors(self) -> list[torch.Tensor]:
        """Flat list (k0, v0, k1, v1, ..., [cos, sin]) for static CUDA-graph buffers."""
        flat = [t for pair in self.kv for t in pair]
        return flat + (list(self.rope) if self.rope is not None else [])

    @classmethod
    def from_tensors(cls, flat: list[torch.Tensor], depth: int, rope: bool) -> MeshGenContext:
        kv = [(flat[2 * i], flat[2 * i + 1]) for i in range(depth)]
        return cls(kv, (flat[2 * depth], flat[2 * depth + 1]) if rope else None)


class MeshGenDiT(nn.Module):
    """Velocity model v = phi(z_t, t, c) of MeshGen (coarse or refine, per ``cfg.rope``)."""

    def __init__(self, cfg: MeshGenConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.x_in = nn.Linear(cfg.latent_dim, w)
        self.t_embed = TimestepEmbedder(w, cfg.freq_dim)
        bcfg = cfg.block_config()
        self.blocks = nn.ModuleList(DiTBlock(bcfg) for _ in range(cfg.depth))
        self.skips = nn.ModuleList(nn.Linear(2 * w, w) for _ in range(cfg.long_skips))
        self.norm_out = nn.LayerNorm(w, eps=1e-6)
        self.x_out = nn.Linear(w, cfg.latent_dim)

    def precompute_context(self, cond: torch.Tensor, positions: torch.Tensor | None = None
                           ) -> MeshGenContext:
        """cond [B, M, context_dim] image tokens (model dtype, model device); positions [N, 3] voxel
        coordinates of the tokens (refine model only) -> per-request ``MeshGenContext``."""
        if cond.dim() != 3 or cond.shape[-1] != self.cfg.context_dim:
            raise ValueError(f"cond must be [B, M, {self.cfg.context_dim}], got {tuple(cond.shape)}")
        kv = [blk.cross.context_kv(cond) for blk in self.blocks]
        rope = None
        if self.cfg.rope:
            if positions is None:
                raise ValueError("the refine DiT needs token positions [N, 3] (refine_token_positions)")
            rope = rope3d_tables(positions.to(cond.device), self.cfg.width // self.cfg.heads,
                                 self.cfg.rope_theta, dtype=cond.dtype)
        return MeshGenContext(kv, rope)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: MeshGenContext) -> torch.Tensor:
        """x [B, N, latent_dim] noisy latents; t [B] float training timesteps (0..999); ctx from
        ``precompute_context`` with batch B -> predicted velocity [B, N, latent_dim] (x's dtype)."""
        cond = self.t_embed(t)  # [B, W]
        h = self.x_in(x)  # [B, N, W]
        n_in = self.cfg.long_skips
        n_out_start = self.cfg.depth - n_in
        saved = []
        for i, blk in enumerate(self.blocks):
            if i >= n_out_start:
                h = self.skips[i - n_out_start](torch.cat([h, saved.pop()], dim=-1))
            h = blk(h, cond, ctx.kv[i], ctx.rope)
            if i < n_in:
                saved.append(h)
        return self.x_out(self.norm_out(h))


def param_count(cfg_or_model: MeshGenConfig | nn.Module) -> int:
    """Parameters of a model, or of the model a config describes (built on the meta device)."""
    if isinstance(cfg_or_model, MeshGenConfig):
        with torch.device("meta"):
            cfg_or_model = MeshGenDiT(cfg_or_model)
    return sum(p.numel() for p in cfg_or_model.parameters())


def flops_per_forward(cfg: MeshGenConfig, batch: int = 1, n_tokens: int | None = None,
                      n_context: int | None = None) -> int:
    """FLOPs of one ``forward`` (multiply-add = 2; context K/V excluded: see ``context_flops``)."""
    n = n_tokens or cfg.n_tokens
    m = n_context or cfg.n_context
    w, bn = cfg.width, batch * n
    body = cfg.depth * block_flops(cfg.block_config(), batch, n, m)
    io = 2 * bn * cfg.latent_dim * w * 2 + cfg.long_skips * 2 * bn * 2 * w * w
    return body + io


def context_flops(cfg: MeshGenConfig, batch: int = 1, n_context: int | None = None) -> int:
    """FLOPs of ``precompute_context`` (once per request)."""
    return cfg.depth * context_kv_flops(cfg.block_config(), batch, n_context or cfg.n_context)


def _morton(ijk: np.ndarray) -> np.ndarray:
    """[K, 3] non-negative ints < 2^10 -> [K] Morton (Z-order) codes."""
    code = np.zeros(len(ijk), dtype=np.int64)
    for bit in range(10):
        for axis in range(3):
            code |= ((ijk[:, axis].astype(np.int64) >> bit) & 1) << (3 * bit + 2 - axis)
    return code


def refine_token_positions(vertices: torch.Tensor, faces: torch.Tensor, n: int = 16384, grid: int = 128,
                           bounds: tuple[float, float] = (-1.0, 1.0), seed: int = 0,
                           samples_per_token: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor positions of the refine tokens on the coarse mesh (paper 5.2), deterministic for a seed.

    vertices [V, 3] float, faces [F, 3] int (any device; work is done on the CPU, once per request),
    coordinates inside the cube ``bounds``. Samples ``samples_per_token * n`` area-weighted surface
    points, voxelises them on a ``grid``^3 lattice over ``bounds`` and returns exactly ``n`` unique voxels:
    if more are occupied, ``n`` spread evenly along the Morton (Z-order) curve; if fewer, the ring of
    neighbouring voxels closest to the surface samples is added until there are enough.
    Returns (voxels [n, 3] int64 lattice indices in Morton order, centres [n, 3] float32 in ``bounds``
    coordinates), on the CPU.
    """
    from scipy.spatial import cKDTree

    if n > grid ** 3:
        raise ValueError(f"cannot place {n} tokens on a {grid}^3 grid")
    v = vertices.detach().cpu().double()
    f = faces.detach().cpu().long()
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = torch.linalg.cross(b - a, c - a).norm(dim=1)
    if f.numel() == 0 or not bool(area.sum() > 0):
        raise ValueError("the coarse mesh has no surface area to anchor refine tokens on")
    gen = torch.Generator().manual_seed(seed)
    m = samples_per_token * n
    cdf = torch.cumsum(area, 0)                          # inverse-CDF sampling: no 2^24-category limit
    u = torch.rand(m, generator=gen, dtype=torch.float64) * cdf[-1]
    tri = torch.searchsorted(cdf, u, right=True).clamp_(max=len(area) - 1)
    r1, r2 = torch.rand(m, 1, generator=gen, dtype=torch.float64), torch.rand(m, 1, generator=gen,
                                                                               dtype=torch.float64)
    s = r1.sqrt()
    pts = (1 - s) * a[tri] + s * (1 - r2) * b[tri] + s * r2 * c[tri]  # [m, 3] uniform on the surface
    lo, hi = bounds
    cell = (hi - lo) / grid
    ijk = ((pts - lo) / cell).floor().clamp(0, grid - 1).long().numpy()
    occ = np.unique(ijk, axis=0)
    if len(occ) < n:
        occ = _grow(occ, pts.numpy(), n, grid, lo, cell, cKDTree(pts.numpy()))
    occ = occ[np.argsort(_morton(occ), kind="stable")]
    if len(occ) > n:
        occ = occ[(np.arange(n) * len(occ)) // n]
    vox = torch.from_numpy(occ.astype(np.int64))
    return vox, (lo + (vox.float() + 0.5) * cell).float()


def _grow(occ: np.ndarray, pts: np.ndarray, n: int, grid: int, lo: float, cell: float, tree) -> np.ndarray:
    """Add 26-neighbour rings of ``occ``, nearest to the surface samples first, until >= n voxels."""
    offsets = np.stack(np.meshgrid(*([np.arange(-1, 2)] * 3), indexing="ij"), -1).reshape(-1, 3)
    while len(occ) < n:
        cand = (occ[:, None, :] + offsets[None]).reshape(-1, 3)
        cand = cand[((cand >= 0) & (cand < grid)).all(axis=1)]
        key = lambda q: (q[:, 0] * grid + q[:, 1]) * grid + q[:, 2]  # noqa: E731
        cand = np.unique(cand, axis=0)
        cand = cand[~np.isin(key(cand), key(occ))]
        if len(cand) == 0:
            raise ValueError(f"cannot place {n} tokens on a {grid}^3 grid")
        dist, _ = tree.query(lo + (cand + 0.5) * cell)
        order = np.lexsort((key(cand), dist))  # nearest first, ties by lattice key
        occ = np.concatenate([occ, cand[order[: n - len(occ)]]])
    return occ
