"""Shape decoding: VAE latents -> SDF on a lattice -> narrow-band bricks for the sparse marching cubes.

Lattice: ``res`` cells per axis over ``[-bound, bound]^3`` (bound 1.01, as Hunyuan3D and
``engine.geometry.watertight``), node ``i`` at ``-bound + i * 2 bound / res``, arrays indexed [x, y, z]
(the convention of ``triton_kernels.marching_cubes``). Fields are NEGATIVE INSIDE; a node is inside when
``value < level``.

Hierarchical decoding (after Hunyuan3D-2's ``HierarchicalVolumeDecoding``; rule restated on cells):
  level 0: every node of the ``coarse_res`` lattice is decoded.
  level l -> l + 1 (resolution doubles): a level-l cell is ACTIVE when a corner has ``|v - level| < band``
  or its corners change sign; active cells are dilated by ``dilate`` rings (3x3x3 max-pool; ``dilate_last``
  at the last refinement); the fine cells are the 8 children of active cells and only the nodes of fine
  cells that were not decoded at a coarser level are decoded (fine node 2i = coarse node i is reused).
  Every other fine node gets the trilinear interpolation of the coarse values (exact at the reused nodes):
  inside an inactive coarse cell all corners share a sign and have ``|v| >= band``, so the fill keeps that
  sign and magnitude and creates no crossing. ``band`` is in field units (Hunyuan: 0.95 on their logits),
  or ``band_voxels`` times the cell size of the level (SDF fields: >= sqrt(3) guarantees that a cell left
  inactive holds no surface when the field is 1-Lipschitz).
  final level: the fine cells are reported as bricks of ``brick^3`` cells (``brick_mask``), which is what
  ``triton_kernels.marching_cubes_sparse.marching_cubes_bricks`` takes together with the final values.

Memory at res 512: the final values (float32 [513]^3, 0.54 GB), decoded/active masks (bool, 0.14 GB each)
and a half-precision max-pool scratch; NO network work on the ~135 M nodes, only on the band.
Query order: each level's queries are sorted by 8^3-node block so consecutive queries (the top-k chunks of
``VaeField``) are spatially coherent. Host syncs: one per level (the query count, to size the batches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.models.shape_vae import LatentKV, ShapeVaeDecoder

BOUND = 1.01


class SdfField(Protocol):
    """points float32 [P, 3] world units -> float32 [P], negative inside. Points are made on the field's
    ``device`` attribute when it has one (the CPU otherwise)."""

    def __call__(self, points: torch.Tensor) -> torch.Tensor: ...


@torch.inference_mode()
def decode_latents(model: ShapeVaeDecoder, z: torch.Tensor) -> LatentKV:
    """Once per request: z [B, N, E] -> the geometry decoder's K/V [B, H, N, Dh]."""
    return model.decode_latents(z)


class VaeField:
    """The VAE's SDF for one request (batch 1): ``model.query`` in batches of ``max_batch`` points,
    FlashVDM top-k over chunks of ``chunk`` consecutive points when ``topk`` is set. ``num_queries``
    counts every point queried (a host int; no device sync)."""

    def __init__(self, model: ShapeVaeDecoder, kv: LatentKV, topk: int | None = None, chunk: int = 4096,
                 max_batch: int = 131072) -> None:
        if kv.k.shape[0] != 1:
            raise ConfigError(f"VaeField decodes one shape at a time, got a batch of {kv.k.shape[0]}",
                              "decode the shapes of a batch one by one")
        self.model, self.kv, self.topk, self.chunk = model, kv, topk, chunk
        self.max_batch = max(chunk, max_batch // chunk * chunk)
        self.num_queries = 0
        self.device = kv.k.device

    @torch.inference_mode()
    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        self.num_queries += int(points.shape[0])
        outs = [self.model.query(points[s:s + self.max_batch][None], self.kv, self.topk, self.chunk)[0]
                for s in range(0, points.shape[0], self.max_batch)]
        return torch.cat(outs) if outs else points.new_zeros(0)


@dataclass
class SphereField:
    """|p - center| - radius."""

    radius: float = 0.6
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return (points - points.new_tensor(self.center)).norm(dim=-1) - self.radius


@dataclass
class TorusField:
    """Torus around the y axis: sqrt((|p_xz| - major)^2 + p_y^2) - minor."""

    major: float = 0.55
    minor: float = 0.22

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        ring = points[:, [0, 2]].norm(dim=-1) - self.major
        return torch.sqrt(ring * ring + points[:, 1] ** 2) - self.minor


class GridField:
    """Trilinear interpolation of a lattice SDF ``values`` float32 [n, n, n] over [-bound, bound]^3 (exact at
    the nodes); e.g. the SDF of a real mesh used to drive a realistic band in the benchmark."""

    def __init__(self, values: torch.Tensor, bound: float = BOUND) -> None:
        self.grid = values.float()[None, None].permute(0, 1, 4, 3, 2).contiguous()   # grid_sample: [z, y, x]
        self.bound = bound
        self.device = values.device

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        g = (points / self.bound).view(1, -1, 1, 1, 3)
        return F.grid_sample(self.grid, g, mode="bilinear", align_corners=True).view(-1)


@dataclass(frozen=True)
class HierarchyConfig:
    """Resolutions (cells per axis; ``final_res = coarse_res * 2^k``), band rule and brick size."""

    final_res: int = 512
    coarse_res: int = 64
    bound: float = BOUND
    level: float = 0.0
    band: float = 0.95
    band_voxels: float | None = None
    dilate: int = 1
    dilate_last: int = 0
    brick: int = 4

    def __post_init__(self) -> None:
        ratio = self.final_res // max(self.coarse_res, 1)
        if self.coarse_res < 2 or ratio * self.coarse_res != self.final_res or ratio & (ratio - 1):
            raise ConfigError(f"final resolution {self.final_res} is not coarse resolution {self.coarse_res} "
                              "times a power of two", "use e.g. coarse 64 and final 512")
        if self.brick < 1 or self.final_res % self.brick:
            raise ConfigError(f"brick {self.brick} does not divide resolution {self.final_res}",
                              "use a power-of-two brick such as 4 or 8")
        if self.dilate < 0 or self.dilate_last < 0 or not self.bound > 0:
            raise ConfigError("dilation must be >= 0 and bound > 0", "fix the hierarchy settings")

    @property
    def resolutions(self) -> list[int]:
        out = [self.coarse_res]
        while out[-1] < self.final_res:
            out.append(out[-1] * 2)
        return out

    def band_at(self, res: int) -> float:
        return self.band if self.band_voxels is None else self.band_voxels * 2.0 * self.bound / res


@dataclass
class HierarchicalSdf:
    """Result of ``hierarchical_decode``.

    values:     float32 [n, n, n], n = final_res + 1: decoded nodes exact, the rest trilinear fills.
    decoded:    bool [n, n, n], nodes the field was evaluated at (at any level).
    brick_mask: bool [nb, nb, nb], nb = final_res / brick: bricks holding an active final cell.
    queries:    points decoded per level (host ints), coarse first.
    """

    values: torch.Tensor
    decoded: torch.Tensor
    brick_mask: torch.Tensor
    brick: int
    bound: float
    level: float
    queries: list[int] = field(default_factory=list)

    def bricks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(bricks int32 [B, 3], values float32 [B, b+1, b+1, b+1]): ``marching_cubes_sparse`` input."""
        b, n = self.brick, self.values.shape[0]
        bricks = torch.nonzero(self.brick_mask).to(torch.int32)
        r = torch.arange(b + 1, device=self.values.device)
        local = (r[:, None, None] * n + r[None, :, None]) * n + r[None, None, :]
        base = ((bricks[:, 0].long() * b * n + bricks[:, 1].long() * b) * n + bricks[:, 2].long() * b)
        return bricks, self.values.reshape(-1)[base[:, None, None, None] + local[None]].contiguous()

    def mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(verts float32 [V, 3] world units, faces int32 [F, 3]) on the values' device: narrow-band
        Triton MC on CUDA, the numpy reference on the dense values elsewhere (CPU tests)."""
        n = self.values.shape[0]
        if self.values.is_cuda:
            from triton_kernels.marching_cubes_sparse import marching_cubes_bricks

            verts, faces = marching_cubes_bricks(self.values, self.brick_mask, self.brick, self.level)
        else:
            from triton_kernels.marching_cubes import marching_cubes_ref

            v, f = marching_cubes_ref(self.values.numpy(), self.level)
            verts, faces = torch.from_numpy(v), torch.from_numpy(f.astype(np.int32))
        return verts * (2.0 * self.bound / (n - 1)) - self.bound, faces


def lattice_points(idx: torch.Tensor, n: int, bound: float = BOUND) -> torch.Tensor:
    """int64 [Q, 3] node indices of an n-node lattice -> float32 [Q, 3] world positions."""
    return (idx.to(torch.float32) * (2.0 * bound / (n - 1)) - bound).contiguous()


def dense_decode(fld: SdfField, res: int, bound: float = BOUND) -> torch.Tensor:
    """Every node of the res-cell lattice: float32 [res+1]^3 (reference for the hierarchical decoder)."""
    n = res + 1
    r = torch.arange(n)
    idx = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)
    dev = _device_of(fld)
    return fld(lattice_points(idx.to(dev), n, bound)).view(n, n, n)


def _device_of(fld: SdfField) -> torch.device:
    """The device a field wants its points on: its ``device`` attribute, else the CPU."""
    return torch.device(getattr(fld, "device", "cpu"))


def _pool_dtype(dev: torch.device) -> torch.dtype:
    return torch.float16 if dev.type == "cuda" else torch.float32


def _dilate(mask: torch.Tensor, rings: int) -> torch.Tensor:
    """bool [R, R, R] grown by ``rings`` 26-neighbour rings (3x3x3 max-pool)."""
    if rings == 0:
        return mask
    m = mask.to(_pool_dtype(mask.device))[None, None]
    for _ in range(rings):
        m = F.max_pool3d(m, 3, stride=1, padding=1)
    return m[0, 0] > 0


def active_cells(values: torch.Tensor, band: float, level: float = 0.0) -> torch.Tensor:
    """bool [n-1]^3: cells with a corner within ``band`` of ``level`` or a sign change among corners."""
    v = (values - level)[None, None]
    vmax = F.max_pool3d(v, 2, stride=1)
    vmin = -F.max_pool3d(-v, 2, stride=1)
    near = -F.max_pool3d(-v.abs(), 2, stride=1) < band
    return ((vmin < 0) & (vmax >= 0) | near)[0, 0]


def _cell_nodes(cells: torch.Tensor) -> torch.Tensor:
    """bool [R]^3 cell mask -> bool [R+1]^3 mask of their corner nodes."""
    m = F.pad(cells.to(_pool_dtype(cells.device))[None, None], (1, 1, 1, 1, 1, 1))
    return F.max_pool3d(m, 2, stride=1)[0, 0] > 0


def _decode_nodes(fld: SdfField, todo: torch.Tensor, values: torch.Tensor, bound: float) -> int:
    """Evaluate ``fld`` at the nodes of bool mask ``todo`` [n]^3 (block-sorted order) into ``values``."""
    n = values.shape[0]
    idx = torch.nonzero(todo)                                              # [Q, 3], host sync
    if idx.shape[0] == 0:
        return 0
    block = idx // 8
    nb = -(-n // 8)
    order = torch.argsort((block[:, 0] * nb + block[:, 1]) * nb + block[:, 2], stable=True)
    idx = idx[order]
    values[idx[:, 0], idx[:, 1], idx[:, 2]] = fld(lattice_points(idx, n, bound))
    return int(idx.shape[0])


def hierarchical_decode(fld: SdfField, cfg: HierarchyConfig = HierarchyConfig(),
                        on_level: Callable[[str], None] | None = None) -> HierarchicalSdf:
    """Coarse-to-fine decoding of ``fld`` (rule in the module docstring). ``on_level(name)`` is called after
    each level's decoding ("r64", "r128", ...; e.g. to record CUDA events)."""
    dev = _device_of(fld)
    res = cfg.coarse_res
    values = dense_decode(fld, res, cfg.bound).float()                      # [n0]^3
    decoded = torch.ones_like(values, dtype=torch.bool)
    queries = [values.numel()]
    if on_level:
        on_level(f"r{res}")
    fine_cells = torch.ones((res,) * 3, dtype=torch.bool, device=dev)
    for fine_res in cfg.resolutions[1:]:
        last = fine_res == cfg.final_res
        cells = active_cells(values, cfg.band_at(res), cfg.level)                     # [res]^3
        cells = _dilate(cells, cfg.dilate_last if last else cfg.dilate)
        fine_cells = cells.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
        values = F.interpolate(values[None, None], size=(fine_res + 1,) * 3, mode="trilinear",
                               align_corners=True)[0, 0]
        fine_decoded = torch.zeros_like(values, dtype=torch.bool)
        fine_decoded[::2, ::2, ::2] = decoded
        decoded = fine_decoded
        todo = _cell_nodes(fine_cells) & ~decoded
        queries.append(_decode_nodes(fld, todo, values, cfg.bound))
        decoded |= todo
        del todo
        res = fine_res
        if on_level:
            on_level(f"r{res}")
    m = fine_cells.to(_pool_dtype(dev))[None, None]
    brick_mask = F.max_pool3d(m, cfg.brick, stride=cfg.brick)[0, 0] > 0
    return HierarchicalSdf(values.contiguous(), decoded, brick_mask, cfg.brick, cfg.bound, cfg.level, queries)
