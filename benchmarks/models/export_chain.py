"""The network chain of the export benchmark (``benchmarks.models.exports``), three ways on the same inputs.

The chain is what the C++ runtime runs (``trt_builds/cpp``): shape = DINOv2 conditioning -> the MeshGen
DDIM sampler (``coarse_steps``) -> shape decoder on a dense (G+1)^3 query lattice; texture = image VAE
encode of the reference and the K condition maps -> TextureGen prepare -> the flow sampler (``steps``,
pinned reference slot, CFG rows where the bucket has them) -> image VAE decode of the K views. Each run
starts from the host inputs (uint8 picture, float32 condition maps [K, R, R, 3] in [0, 1], a seed) and ends
with the float32 outputs in host memory, as ``assetgen.h`` returns them:
  * ``engine``   the Python engine's own code: ``_image_tokens``, ``MeshGenNetworks.sampler`` (DDIM with its
                 CUDA-graph step runner), ``VaeField`` + ``dense_decode``; the texture stage's batched VAE
                 encode, ``TextureGenDiT.prepare`` and ``sample_views`` (CUDA-graph runner + VAE decode);
  * ``packaged`` ``PackagedNetworks``: Python driving the ``.pt2`` packages (one VAE call per image);
  * ``cpp``      the C example host over the C API (``assetgen_host ... DEVICE REPEATS``), which prints the
                 wall time of each run; its first run is the warm-up.
The lattice resolution G is the benchmark's (``grid``): the engine decodes hierarchically up to 512^3, the
C++ runtime only densely, and a dense 513^3 lattice (135 M queries) would take most of the budget.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

RUN_LINE = re.compile(r"run (\d+): shape ([0-9.]+) s, texture ([0-9.]+) s, chain ([0-9.]+) s")
LOAD_LINE = re.compile(r"^load ([0-9.]+) s")


@dataclass
class ChainInputs:
    """Host inputs of one request: picture uint8 [S, S, 3] on white; normals, positions float32
    [K, R, R, 3] in [0, 1]; the seed of both noises (drawn as the engine and the C API draw them)."""

    picture: torch.Tensor
    normals: torch.Tensor
    positions: torch.Tensor
    seed: int
    grid: int

    def shape_noise(self, n: int, d: int) -> torch.Tensor:
        return torch.randn((1, n, d), generator=torch.Generator().manual_seed(self.seed))

    def texture_noise(self, k: int, c: int, h: int) -> torch.Tensor:
        return torch.randn((1, k, c, h, h), generator=torch.Generator().manual_seed(self.seed))


@dataclass
class ChainTimes:
    """Seconds per timed run (the warm-up excluded) and the load seconds, of one variant."""

    load_s: float
    shape: list[float]
    texture: list[float]

    @property
    def chain(self) -> list[float]:
        return [a + b for a, b in zip(self.shape, self.texture)]


def chain_inputs(plan, num_views: int, seed: int = 3, grid: int = 128) -> ChainInputs:
    """Seeded inputs: a coloured disc on white at 1024 px (paper buckets) or 40 px (tiny), smooth maps."""
    size = 40 if plan.scale == "tiny" else 1024
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2
    colour = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
    picture = torch.where(disc[..., None], colour, torch.full_like(colour, 255))
    r = plan.texture.view_resolution
    base = torch.nn.functional.interpolate(torch.rand(2 * num_views, 3, 8, 8, generator=gen), size=(r, r),
                                           mode="bilinear", align_corners=False)
    maps = base.permute(0, 2, 3, 1).contiguous()
    return ChainInputs(picture, maps[:num_views].contiguous(), maps[num_views:].contiguous(), seed, grid)


def lattice(grid: int, bound: float, device: torch.device) -> torch.Tensor:
    """float32 [(G+1)^3, 3] lattice nodes, x slowest (``dense_decode``'s and the C++ runtime's order)."""
    from engine.models.shape_decoding import lattice_points

    r = torch.arange(grid + 1, device=device)
    idx = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)
    return lattice_points(idx, grid + 1, bound)


def _timed(fn: Callable[[], object], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _runs(shape: Callable[[], object], texture: Callable[[], object], cuda: bool, repeats: int,
          load_s: float) -> ChainTimes:
    """One warm-up run, then ``repeats`` timed ones."""
    shape(), texture()
    times = ChainTimes(load_s, [], [])
    for _ in range(repeats):
        times.shape.append(_timed(shape, cuda))
        times.texture.append(_timed(texture, cuda))
    return times


@torch.inference_mode()
def engine_chain(plan, shape_nets, tex, inp: ChainInputs, repeats: int) -> ChainTimes:
    """The Python engine's samplers and decoders (module docstring)."""
    from engine.models.shape_decoding import VaeField, dense_decode
    from engine.sampling.texturegen_sampler import TextureSamplerConfig
    from engine.stages.shape_networks import _image_tokens
    from engine.stages.texture_networks import ViewsJob, _to_vae, _white_latent, sample_views

    dev, s, t = shape_nets.device, plan.shape, plan.texture
    cuda, k, r = dev.type == "cuda", inp.normals.shape[0], t.view_resolution
    mc, vae = shape_nets.coarse_cfg, shape_nets.coarse_vae

    def shape():
        noise = inp.shape_noise(mc.n_tokens, mc.latent_dim).to(dev)                    # [1, N, D]
        cond = _image_tokens(shape_nets, inp.picture.to(dev), s.dino_resolution_coarse)  # [1, M, C]
        latents = shape_nets.sampler("coarse", s.coarse_steps)(cond, noise)
        fld = VaeField(vae, vae.decode_latents(latents), topk=vae.cfg.default_topk)
        return latents.cpu(), dense_decode(fld, inp.grid, s.bounds).cpu()

    def texture():
        ref = _to_vae(inp.picture.to(dev)[None].float() / 255.0, r)                    # [1, 3, R, R]
        maps = torch.cat([inp.normals, inp.positions]).to(dev)                          # [2K, R, R, 3]
        enc = tex.vae.encode(torch.cat([ref, _to_vae(maps, r)]).to(tex.dtype))
        ref_lat = enc[0:1].float()                                                      # [1, C, h, w]
        geometry = torch.cat([enc[1:1 + k], enc[1 + k:]], dim=1)[None]                  # [1, K, 2C, h, w]
        branches = plan.branches
        request = tex.dit.prepare(geometry, *tex.text_context, repeat=branches)
        noise = inp.texture_noise(k, ref_lat.shape[1], ref_lat.shape[2]).to(dev)
        sampler = TextureSamplerConfig.from_texture_config(t.steps, t.guidance, plan.guidance_scale)
        white = _white_latent(tex, r)[0] if branches == 2 else None
        grid_shape = (branches, 1 + k) + tuple(ref_lat.shape[1:])
        job = ViewsJob(request, noise, ref_lat, sampler, white, grid_shape, None, None, "")
        return sample_views(tex, job).cpu()                                             # [K, 3, R, R]

    return _runs(shape, texture, cuda, repeats, 0.0)


@torch.inference_mode()
def packaged_chain(manifest: Path, device: str, plan, inp: ChainInputs, repeats: int) -> ChainTimes:
    """``PackagedNetworks`` over the bucket's packages (loaded here: ``load_s``), closed at the end."""
    from engine.stages.texture_networks import _to_vae
    from trt_builds.packaged import PackagedNetworks

    cuda = device.startswith("cuda")
    t0 = time.perf_counter()
    nets = PackagedNetworks(manifest, device)
    load_s = time.perf_counter() - t0
    dev, r = nets.device, plan.texture.view_resolution
    points = lattice(inp.grid, plan.shape.bounds, dev)
    n, d = nets.setting("n_tokens"), nets.setting("latent_dim")
    k, c = inp.normals.shape[0], nets.setting("latent_channels")
    h = r // nets.setting("latent_downsample")

    def shape():
        latents = nets.shape_latents(inp.picture, inp.shape_noise(n, d))
        return latents.cpu(), nets.field(latents, points).cpu()

    def texture():
        ref = _to_vae(inp.picture.to(dev)[None].float() / 255.0, r)
        to_vae = lambda maps: maps.to(dev).permute(0, 3, 1, 2) * 2.0 - 1.0  # noqa: E731  [K, 3, R, R]
        latents = nets.texture_latents(ref, to_vae(inp.normals), to_vae(inp.positions),
                                       inp.texture_noise(k, c, h))
        return nets.decode_views(latents).cpu()

    try:
        return _runs(shape, texture, cuda, repeats, load_s)
    finally:
        nets.close()


def write_host_inputs(inp: ChainInputs, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"picture": folder / "picture.u8", "normals": folder / "normals.f32",
             "positions": folder / "positions.f32"}
    inp.picture.numpy().tofile(files["picture"])
    inp.normals.numpy().astype(np.float32).tofile(files["normals"])
    inp.positions.numpy().astype(np.float32).tofile(files["positions"])
    return files


def grid_manifest(manifest: Path, grid: int) -> Path:
    """A copy of ``manifest`` beside it (its package paths are relative) whose dense lattice is G = ``grid``
    (the C++ runtime's field), named so that no folder lookup of ``*.manifest`` finds it."""
    text = re.sub(r"(?m)^grid_resolution \d+$", f"grid_resolution {grid}", manifest.read_text())
    out = manifest.with_name(f"{manifest.name}-grid{grid}")
    out.write_text(text)
    return out


def cpp_chain(host: Path, manifest: Path, device: str, inp: ChainInputs, repeats: int, folder: Path,
              timeout: float) -> ChainTimes:
    """The C example host as a subprocess: 1 + ``repeats`` runs; raises RuntimeError with its output
    when it fails."""
    files = write_host_inputs(inp, folder)
    bucket = grid_manifest(manifest, inp.grid)
    target = "cuda:0" if device.startswith("cuda") else "cpu"
    cmd = [str(host), str(bucket), str(files["picture"]), str(inp.picture.shape[0]), str(files["normals"]),
           str(files["positions"]), str(inp.seed), str(folder), target, str(1 + repeats)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        bucket.unlink()
    print(done.stdout, done.stderr, flush=True)
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"assetgen_host exited {done.returncode}: {tail[:400]}")
    runs = [m.groups() for m in RUN_LINE.finditer(done.stdout)]
    load = [float(m.group(1)) for ln in done.stdout.splitlines() if (m := LOAD_LINE.match(ln))]
    timed = [(float(s), float(t)) for i, s, t, _ in runs if int(i) > 0]
    if len(timed) != repeats or not load:
        raise RuntimeError(f"assetgen_host printed {len(timed)} timed runs, expected {repeats}")
    return ChainTimes(load[0], [s for s, _ in timed], [t for _, t in timed])
