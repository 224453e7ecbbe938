"""Run the engine's networks from AOTInductor packages instead of eager modules.

``PackagedNetworks(manifest)`` loads every package of one bucket (``trt_builds.aoti`` wrote the manifest)
once -- lifecycle: load (constructor), infer (``run`` and the chain methods), unload (``close``) -- and
runs the network part of the pipeline with the engine's own samplers around the packaged steps:
  * ``shape_latents``: DINOv2 -> MeshGen context K/V -> the DDIM v-prediction loop (``DDIMVPred`` tables and
    update, exactly the engine's) -> coarse latents;
  * ``field``: shape VAE K/V once, then the packaged query in fixed batches (the last one padded by
    repeating its last point, what ``topk_attention`` does itself);
  * ``texture_latents`` / ``decode_views``: image VAE encode -> TextureGen prepare -> the flow sampler with
    the pinned reference slot (``sample_texture_views``) -> image VAE decode.
Geometry (marching cubes, rendering the condition maps, fusion) stays with the engine's Python stages.
This is also the oracle the C++ runtime (``trt_builds/cpp``) is checked against, next to eager.

``max_relative_error`` is the parity measure of the tests: max |a - b| / max |b| per output.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.models.dinov2 import prepare_pixels
from engine.sampling.ddim_vpred import DDIMConfig, DDIMVPred


def read_manifest(path: str | Path) -> tuple[dict[str, str], dict[str, Path]]:
    """(settings, network -> package path) of a ``.manifest`` file, or of the only one in a folder."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.manifest"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path} holds {len(found)} manifests; pass one of them")
        path = found[0]
    settings, packages = {}, {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, *rest = line.split()
        if key == "package":
            packages[rest[0]] = path.parent / rest[1]
        else:
            settings[key] = " ".join(rest)
    return settings, packages


def load_package(path: str | Path):
    """Load one AOTInductor package: ``torch._inductor.codecache`` imported first (in a process that has
    compiled nothing, torch 2.10+'s loader can fail to reach it: pytorch/pytorch#173706), then one
    ``load_pt2`` whose error is raised as it is -- ``aoti_load_package`` catches it, logs "Loading outdated
    pt2 file" and builds a second loader through the legacy path (which initialises the CUDA/Triton
    runtime again and hides the first error). Returns the callable compiled model."""
    import torch._inductor.codecache  # noqa: F401  (the import is the workaround)

    try:
        from torch.export.pt2_archive._package import load_pt2
    except ImportError:                                    # a torch without the archive module
        from torch._inductor import aoti_load_package

        return aoti_load_package(str(path))
    contents = load_pt2(str(path))
    if "model" not in contents.aoti_runners:
        raise RuntimeError(f"{path}: no compiled model in the package (it holds "
                           f"{', '.join(contents.aoti_runners) or 'none'})")
    return contents.aoti_runners["model"]


LOADERS = ("ours", "aoti", "aoti+codecache")   # load_package; aoti_load_package as is; after the import

_LOAD_AND_RUN = """
import sys, time, torch
inputs = torch.load(sys.argv[2])          # CUDA initialised (by the inputs) before the package loads
loader = sys.argv[4]
t0 = time.perf_counter()
if loader == "ours":
    from trt_builds.packaged import load_package
    package = load_package(sys.argv[1])
else:
    if loader == "aoti+codecache":
        import torch._inductor.codecache
    from torch._inductor import aoti_load_package
    package = aoti_load_package(sys.argv[1])
print(f"loaded in {time.perf_counter() - t0:.2f} s", flush=True)
with torch.inference_mode():
    out = package(*inputs)
torch.save(out if isinstance(out, (tuple, list)) else (out,), sys.argv[3])
print("ran", flush=True)
"""


def run_in_fresh_process(package: str | Path, inputs: tuple[torch.Tensor, ...], workdir: str | Path,
                         timeout: float = 300.0, loader: str = "ours", log: str | Path | None = None
                         ) -> tuple[tuple[torch.Tensor, ...] | None, str]:
    """Load ``package`` with ``loader`` (``LOADERS``) and run it on ``inputs`` in a new Python process with
    the fault handler on: (its outputs, "") or (None, what went wrong: exit status and the end of its
    stderr). A package that crashes its loader then costs a child, not the caller. ``log``: where the
    child's whole stdout + stderr is written."""
    import os
    import subprocess
    import sys

    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; use one of {', '.join(LOADERS)}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.save(tuple(inputs), work / "inputs.pt")
    (work / "outputs.pt").unlink(missing_ok=True)
    root = str(Path(__file__).resolve().parent.parent)          # the child imports trt_builds from here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        run = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _LOAD_AND_RUN, str(package),
                              str(work / "inputs.pt"), str(work / "outputs.pt"), loader],
                             capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        if log is not None:
            Path(log).write_text(f"(timed out after {timeout:.0f} s)\n{_text(exc.stdout)}{_text(exc.stderr)}")
        return None, f"no result within {timeout:.0f} s"
    if log is not None:
        Path(log).write_text(f"exit status {run.returncode}\n--- stdout\n{run.stdout}"
                             f"--- stderr\n{run.stderr}")
    if run.returncode != 0:
        return None, f"exit status {run.returncode}: {run.stderr[-3000:].strip()}"
    return tuple(torch.load(work / "outputs.pt")), ""


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def max_relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.detach().float()
    return float((got.detach().float() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


class PackagedNetworks:
    """Every package of one bucket, loaded once (see the module docstring)."""

    def __init__(self, manifest: str | Path, device: str = "cpu") -> None:
        self.settings, paths = read_manifest(manifest)
        self.device = torch.device(device)
        self.packages = {name: load_package(p) for name, p in paths.items()}
        self._ddim: dict[int, DDIMVPred] = {}

    def close(self) -> None:
        self.packages.clear()

    def setting(self, key: str, kind: type = int):
        return kind(self.settings[key])

    def run(self, network: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One package call; always a tuple of outputs. Inputs are made contiguous: a package reads its
        inputs with the strides they were traced with (contiguous) and does not check them."""
        if network not in self.packages:
            raise KeyError(f"no package for {network!r}; this bucket has {', '.join(self.packages)}")
        out = self.packages[network](*(x.contiguous() for x in inputs))
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    # ------------------------------------------------------------------------------------------ shape
    def shape_latents(self, picture: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """picture uint8 [S, S, 3] on white; noise float32 [1, N, D] -> latents float32 [1, N, D]."""
        pixels = prepare_pixels(picture.to(self.device), self.setting("dino_resolution"))   # [1, 3, R, R]
        tokens = self.run("dinov2", pixels)[0]                                            # [1, M, C]
        context = self.run("meshgen_coarse_context", tokens)
        steps = self.setting("coarse_steps")
        if steps not in self._ddim:
            cfg = DDIMConfig(steps=steps, train_steps=self.setting("ddim_train_steps"),
                             beta_start=self.setting("ddim_beta_start", float),
                             beta_end=self.setting("ddim_beta_end", float),
                             rescale_zero_snr=bool(self.setting("ddim_rescale_zero_snr")))
            self._ddim[steps] = DDIMVPred(cfg, self.device)
        ddim = self._ddim[steps]

        def step(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            t = ddim.timesteps.index_select(0, idx)                                       # [1]
            return ddim.update(z, self.run("meshgen_coarse", z, t, *context)[0], idx)

        return ddim.sample(step, noise.to(self.device))

    def field(self, latents: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """latents float32 [1, N, D]; points float32 [P, 3] -> field float32 [P] (negative inside)."""
        k, v = self.run("shape_vae_kv", latents)
        batch, n = self.setting("query_batch"), points.shape[0]
        out = []
        for s in range(0, n, batch):
            chunk = points[s:s + batch]
            pad = batch - chunk.shape[0]
            if pad:
                chunk = torch.cat([chunk, chunk[-1:].expand(pad, 3)])
            out.append(self.run("shape_vae_query", chunk[None].contiguous(), k, v)[0][0, :batch - pad])
        return torch.cat(out)

    # ---------------------------------------------------------------------------------------- texture
    def texture_latents(self, reference: torch.Tensor, normals: torch.Tensor, positions: torch.Tensor,
                        noise: torch.Tensor) -> torch.Tensor:
        """reference [1, 3, R, R], normals / positions [K, 3, R, R], all float32 in [-1, 1] at the view
        resolution; noise float32 [1, K, C, h, w] -> view latents float32 [1, K, C, h, w]."""
        from engine.sampling.texturegen_sampler import TextureSamplerConfig, sample_texture_views

        enc = lambda x: self.run("image_vae_encode", x[None].contiguous())[0]  # noqa: E731  [1, C, h, w]
        ref_lat = enc(reference[0])
        geometry = torch.cat([torch.cat([enc(n), enc(p)], dim=1) for n, p in zip(normals, positions)])
        prepared = self.run("texturegen_prepare", geometry[None])                        # base, k0, v0, ...
        cfg_mode = self.setting("branches") == 2
        white = enc(torch.ones_like(reference[0]))[0] if cfg_mode else None              # [C, h, w]
        mode = "default" if cfg_mode else "flash"
        sampler = TextureSamplerConfig.from_name(mode)
        sampler = TextureSamplerConfig(self.setting("texture_steps"), sampler.mode,
                                       self.setting("guidance_scale", float) if cfg_mode else 1.0)

        def velocity(grid: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.run("texturegen", grid.contiguous(), t.contiguous(), *prepared)[0]

        return sample_texture_views(velocity, noise.to(self.device), ref_lat, sampler, white)

    def decode_views(self, latents: torch.Tensor) -> torch.Tensor:
        """latents float32 [1, K, C, h, w] -> views float32 [K, 3, R, R] in [0, 1]."""
        views = [self.run("image_vae_decode", z[None].contiguous())[0] for z in latents[0]]
        return (torch.cat(views) + 1.0) * 0.5
