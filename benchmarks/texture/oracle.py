"""Oracle benchmark of texture fusion (issue 4 item 7): true-colour views in, held-back views scored.

For each textured asset (``/work/shared/assets``: glTF/OBJ with base-colour textures):
  1. source = the asset scaled into the rig sphere (radius ``NORMALISE_RADIUS``; the rig frames radius 1);
     low = ``simplify_qem(source, --faces)`` + ``unwrap_uv(low, --atlas)`` -- the mesh we texture.
     ``--prepare-only`` writes these to ``--cache`` (npz + manifest) on a machine with xatlas; later runs
     read them (the GPU machine needs no geometry tools, only the assets under $ASSETGEN_SHARED).
  2. views: the SOURCE rasterised from the 10 rig views at ``--view-px``, each pixel coloured with the
     source's true surface colour (``transfer.surface_colours``: texture x factor, sRGB) -- the stand-in for
     TextureGen's output -- with the source's silhouettes as the views' pixel masks, given to the plan (like
     the silhouettes a generator is conditioned on, they are known before the colours).
  3. fusion onto low's atlas (``--atlas``): ``ours`` = ``fusion_gpu`` (plan + fuse on the device),
     ``baseline`` = ``baseline.baseline_fuse`` (bilinear, cos^4, OpenCV Telea in UV space; same plan),
     ``cpu_ref`` = ``backproject.fuse_views`` (the CPU reference, single-tap), as listed in ``--methods``.
  4. score: low textured with each atlas and the source, both rendered from 8 held-back views (azimuths
     22.5 + 45 i deg, elevation +30 / -30 deg alternating, orthographic, ``--eval-px``); on the pixels
     covered in both renders (others zeroed in both): PSNR (peak 1) and SSIM (11 x 11 Gaussian, sigma 1.5,
     K1 0.01, K2 0.03, valid window positions whose centre is covered, mean over RGB), pooled over views.
     Unfilled share = chart texels that neither a view nor the inpainting coloured.
  5. timing (``ours``): render conditions (``render_views_gpu``, 10 views, normals), precompute
     (``plan_fusion`` reusing those renders, and with its own rasterisation), fusion (``fuse_views_gpu``);
     CUDA events, median (p20/p80) of ``--repeats`` after one warm-up. Baseline and CPU reference: wall.
Outputs: markdown table at ``--out``, rows at ``--csv`` (``benchmarks.common.append_result``).
Usage (GPU): python -m benchmarks.texture.oracle --device cuda --atlas 2048 --view-px 1024 --out ... --csv ...

``--degrade`` (issue 14 item 6): the views are degraded as generated views are (``degrade.py``: per-view
exposure and white-balance jitter, clipped, sub-pixel misregistration; seeded, identical for every method);
``ours`` then harmonises them (``engine.texture.view_harmonisation``, on in the engine for TextureGen's
views: ``TextureConfig.harmonise_views``). ``--device host``: everything on the CPU without the CUDA
simulator (which is far too slow at full size): ``ours`` = the CPU engine's fusion of generated views
(``backproject.fuse_views`` with the harmonic fill and the harmonisation, as ``generate --device cpu``),
``baseline`` = ``baseline.baseline_fuse_host`` (single tap, cos^4, Telea on the CPU reference's plan),
``cpu_ref`` = ``fuse_views`` without the harmonisation (the engine before it). Host times are wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, append_result, cuda_times, git_sha, percentiles, time_repeats
from engine.errors import AssetGenError
from engine.geometry.mesh import TriMesh

TEXTURED = ("helmet", "duck", "milktruck", "fox", "sofa", "suzanne", "spot", "bob")
DEFAULT_CACHE = REPO / ".gpu_inputs" / "texture_oracle"
NORMALISE_RADIUS = 0.95
METHODS = ("ours", "baseline", "cpu_ref")
TIMES = ("t_conditions", "t_precompute", "t_precompute_raster", "t_ours", "t_baseline", "t_cpu_ref")


def held_back_cameras(count: int = 8, elevation: float = 30.0) -> list:
    """``count`` orthographic views between the rig's azimuths (22.5 + 360 i / count deg), elevation
    +``elevation`` for even i and -``elevation`` for odd i, framing the rig sphere (prior 0: unused)."""
    from engine.texture.views import OrthoCamera

    cams = []
    for i in range(count):
        az, el = np.radians(22.5 + 360.0 * i / count), np.radians(elevation if i % 2 == 0 else -elevation)
        d = (float(np.cos(el) * np.sin(az)), float(np.sin(el)), float(np.cos(el) * np.cos(az)))
        cams.append(OrthoCamera(f"held_{i}", d, (0.0, 1.0, 0.0), 1.0, 0.0))
    return cams


# --------------------------------------------------------------------------------------------- meshes
def load_source(asset: str, shared: Path, center=None, scale=None) -> tuple[TriMesh, np.ndarray, float]:
    """The asset in the rig frame: (mesh, center, scale) with vertices = (v - center) * scale."""
    from engine.io.asset_load import find_mesh_file, load_mesh
    from engine.texture.views import normalize_to_sphere

    mesh = load_mesh(find_mesh_file(shared / "assets" / asset))
    if center is None:
        mesh.vertices, center, scale = normalize_to_sphere(mesh.vertices, NORMALISE_RADIUS)
    else:
        mesh.vertices = ((mesh.vertices.astype(np.float64) - center) * scale).astype(np.float32)
    return mesh, np.asarray(center, np.float64), float(scale)


def prepare(args, shared: Path) -> None:
    from engine.geometry.simplify import simplify_qem
    from engine.geometry.uv_unwrap import unwrap_uv

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    entries = []
    for asset in args.assets:
        try:
            source, center, scale = load_source(asset, shared)
            simple, rep = simplify_qem(source, args.faces)
            low, uv = unwrap_uv(simple, args.atlas)
        except AssetGenError as err:
            print(f"{asset}: skipped ({err})", flush=True)
            continue
        np.savez(cache / f"{asset}.npz", vertices=low.vertices, faces=low.faces, uvs=low.uvs,
                 normals=low.normals, center=center, scale=scale)
        entries.append({"asset": asset, "source_faces": source.num_faces, "low_faces": low.num_faces,
                        "simplify_reached": rep.reached, "charts": uv.charts,
                        "uv_utilisation": uv.utilisation})
        print(f"{asset}: {source.num_faces} -> {low.num_faces} faces, {uv.charts} charts, utilisation "
              f"{uv.utilisation:.2f}", flush=True)
    (cache / "manifest.json").write_text(json.dumps({"faces": args.faces, "atlas": args.atlas,
                                                    "git_sha": git_sha(), "assets": entries}, indent=1))


def load_low(cache: Path, asset: str) -> tuple[TriMesh, np.ndarray, float]:
    d = np.load(cache / f"{asset}.npz")
    return (TriMesh(d["vertices"], d["faces"], normals=d["normals"], uvs=d["uvs"]), d["center"],
            float(d["scale"]))


# ------------------------------------------------------------------------------------------ rendering
def rasterize(mesh: TriMesh, cameras: list, res: int, cuda: bool) -> tuple[np.ndarray, np.ndarray]:
    """(face_id int32 [K, R, R], bary float32 [K, R, R, 3]) on the host; GPU rasteriser under CUDA."""
    if cuda:
        import torch

        from triton_kernels.rasterize_views import rasterize_views_gpu

        v = torch.from_numpy(mesh.vertices).cuda()
        f = torch.from_numpy(mesh.faces.astype(np.int32)).cuda()
        fid, bary, _ = rasterize_views_gpu(v, f, cameras, res)
        return fid.cpu().numpy(), bary.cpu().numpy()
    from engine.geometry.rasterize import rasterize_ortho

    out = [rasterize_ortho(mesh.vertices, mesh.faces, c, res)[:2] for c in cameras]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def render_source(source: TriMesh, cameras: list, res: int, cuda: bool) -> tuple[np.ndarray, np.ndarray]:
    """True colours float32 [K, R, R, 3] (sRGB [0, 1], 0 background) and coverage bool [K, R, R]."""
    from engine.texture.transfer import surface_colours

    fid, bary = rasterize(source, cameras, res, cuda)
    hit = fid >= 0
    rgb = np.zeros(fid.shape + (3,), np.float32)
    rgb[hit] = surface_colours(source, fid[hit], bary[hit])
    return rgb, hit


def render_atlas(low: TriMesh, atlas: np.ndarray, cameras: list, res: int, cuda: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``low`` textured with ``atlas`` (uint8 [S, S, 3]): colours float32 [K, R, R, 3], coverage."""
    from engine.geometry.rasterize import interpolate
    from engine.texture.render_conditions import sample_bilinear_repeat

    fid, bary = rasterize(low, cameras, res, cuda)
    hit = fid >= 0
    rgb = np.zeros(fid.shape + (3,), np.float32)
    uv = interpolate(low.uvs, low.faces, fid, bary)[hit]
    rgb[hit] = sample_bilinear_repeat(atlas, uv) / 255.0
    return rgb, hit


# -------------------------------------------------------------------------------------------- metrics
def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB (peak 1) of images [..., H, W, 3] over ``mask`` [..., H, W] pixels."""
    mse = float(np.mean((a[mask].astype(np.float64) - b[mask]) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Masked SSIM of images [V, H, W, 3] in [0, 1]: the SSIM map (Wang et al. 2004: Gaussian window,
    C1 = (0.01)^2, C2 = (0.03)^2) at valid window positions, averaged over RGB, then over the positions
    whose window centre lies in ``mask`` [V, H, W]."""
    import torch
    import torch.nn.functional as F

    g = torch.from_numpy(gaussian_window(size, sigma))
    x = torch.from_numpy(np.asarray(a, np.float64)).permute(0, 3, 1, 2).reshape(-1, 1, *a.shape[1:3])
    y = torch.from_numpy(np.asarray(b, np.float64)).permute(0, 3, 1, 2).reshape(-1, 1, *b.shape[1:3])

    def blur(t):
        t = F.conv2d(t, g.view(1, 1, 1, -1))
        return F.conv2d(t, g.view(1, 1, -1, 1))

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    smap = smap.view(a.shape[0], 3, *smap.shape[-2:]).mean(1).numpy()          # [V, H', W']
    h = size // 2
    m = np.asarray(mask)[:, h:a.shape[1] - h, h:a.shape[2] - h]
    return float(smap[m].mean()) if m.any() else float("nan")


def score(truth: np.ndarray, truth_mask: np.ndarray, rgb: np.ndarray, mask: np.ndarray
          ) -> tuple[float, float]:
    """(PSNR dB, SSIM) of a render against the truth on the pixels covered in both."""
    both = truth_mask & mask
    a, b = np.where(both[..., None], truth, 0.0), np.where(both[..., None], rgb, 0.0)
    return psnr(a, b, both), ssim(a, b, both)


# ---------------------------------------------------------------------------------------------- runs
def device_times(fn, repeats: int, cuda: bool) -> list[float]:
    """Seconds per call: CUDA events after one warm-up on CUDA; wall clock, no warm-up, on the CPU."""
    if cuda:
        import torch

        fn()
        torch.cuda.synchronize()
        return cuda_times(fn, repeats)
    return time_repeats(fn, repeats, warmup=0)[0]


def fuse_ours_and_baseline(low: TriMesh, views: np.ndarray, vmask: np.ndarray, args, cuda: bool,
                           row: dict) -> dict:
    """Time the device path (conditions, precompute, fusion) and run the baseline on the same plan;
    fills ``row`` and returns {method: host uint8 atlas}."""
    import torch

    from benchmarks.texture.baseline import baseline_fuse
    from engine.config import TextureConfig
    from engine.texture.fusion_gpu import FusionConfig, fuse_views_gpu, plan_fusion
    from engine.texture.render_conditions_gpu import TexturedDeviceMesh, render_views_gpu
    from engine.texture.view_harmonisation import HarmoniseConfig
    from engine.texture.views import camera_rig
    from triton_kernels.numba_cuda import kernel_device

    dev, cams, s, r, n = kernel_device(), camera_rig(), args.atlas, args.view_px, args.repeats
    dm = TexturedDeviceMesh.from_trimesh(low, dev)
    v_t, m_t = torch.from_numpy(views).to(dev), torch.from_numpy(vmask).to(dev)
    box: dict = {}
    row["t_conditions"] = device_times(lambda: box.__setitem__("r", render_views_gpu(dm, cams, r)), n, cuda)
    cfg = FusionConfig(harmonise=HarmoniseConfig() if TextureConfig().harmonise_views else None)

    def precompute() -> None:   # ours harmonises the views as the engine does for TextureGen's
        box["plan"] = plan_fusion(dm, cams, s, r, config=cfg, renders=box["r"], pixel_mask=m_t)

    row["t_precompute"] = device_times(precompute, n, cuda)
    row["t_precompute_raster"] = device_times(lambda: plan_fusion(dm, cams, s, r, pixel_mask=m_t), n, cuda)
    plan, out = box["plan"], {}
    if "ours" in args.methods:
        row["t_ours"] = device_times(lambda: box.__setitem__("ours", fuse_views_gpu(plan, v_t)), n, cuda)
        atlas, stats = box["ours"]
        out["ours"] = atlas.cpu().numpy()
        row["valid_texels"], row["known_texels"] = stats["valid_texels"], stats["known_texels"]
        row["unfilled_texels"] = stats.get("inpaint_unfilled", 0)
        row["neutral_fill"] = bool(stats.get("neutral_fill", False))
    if "baseline" in args.methods:
        # the baseline's Telea runs on the host (seconds at 2048^2): timed once, not a target
        row["t_baseline"] = device_times(lambda: box.__setitem__("base", baseline_fuse(plan, v_t)), 1, cuda)
        out["baseline"] = box["base"][0]
    return out


def fuse_host(low: TriMesh, views: np.ndarray, vmask: np.ndarray, args, row: dict) -> dict:
    """``--device host``: the CPU engine's fusion (ours, cpu_ref) and the host baseline, wall-clock timed."""
    from benchmarks.texture.baseline import baseline_fuse_host
    from engine.config import TextureConfig
    from engine.texture.backproject import fuse_views
    from engine.texture.view_harmonisation import HarmoniseConfig
    from engine.texture.views import camera_rig

    cams, out = camera_rig(), {}
    harmonise = HarmoniseConfig() if TextureConfig().harmonise_views else None
    runs = {"ours": lambda: fuse_views(low, cams, views, args.atlas, masks=vmask, harmonic=True,
                                       harmonise=harmonise),
            "cpu_ref": lambda: fuse_views(low, cams, views, args.atlas, masks=vmask, harmonic=True),
            "baseline": lambda: baseline_fuse_host(low, cams, views, args.atlas, masks=vmask)}
    for name in args.methods:
        t0 = time.perf_counter()
        out[name], stats = runs[name]()
        row[f"t_{name}"] = [time.perf_counter() - t0]
        if name == "ours":
            row["valid_texels"], row["known_texels"] = stats["valid_texels"], stats["known_texels"]
            row["unfilled_texels"] = 0
            for key in ("gains", "shifts", "harmonise_pairs", "seconds_backproject"):
                if key in stats:
                    row[f"ours_{key}"] = stats[key]
    return out


def run_asset(asset: str, args, shared: Path, cuda: bool) -> dict:
    from engine.texture.backproject import fuse_views
    from engine.texture.views import camera_rig

    low, center, scale = load_low(Path(args.cache), asset)
    source, _, _ = load_source(asset, shared, center, scale)
    row: dict = {"asset": asset, "source_faces": source.num_faces, "low_faces": low.num_faces}
    if args.degrade:
        from benchmarks.texture.degrade import degraded_views

        views, vmask, gains, shifts = degraded_views(source, camera_rig(), args.view_px, asset,
                                                     args.degradation, cuda)
        row["true_gains"], row["true_shifts"] = gains.tolist(), shifts.tolist()
    else:
        views, vmask = render_source(source, camera_rig(), args.view_px, cuda)    # the "generated" views
        views = np.clip(np.rint(views * 255.0), 0, 255).astype(np.uint8)
    if args.device == "host":
        atlases = fuse_host(low, views, vmask, args, row)
    else:
        atlases = fuse_ours_and_baseline(low, views, vmask, args, cuda, row) \
            if {"ours", "baseline"} & set(args.methods) else {}
    if "cpu_ref" in args.methods and args.device != "host":
        t0 = time.perf_counter()
        atlases["cpu_ref"], _ = fuse_views(low, camera_rig(), views, args.atlas, masks=vmask)
        row["t_cpu_ref"] = [time.perf_counter() - t0]
    held = held_back_cameras()
    truth, tmask = render_source(source, held, args.eval_px, cuda)
    for name, atlas in atlases.items():
        rgb, mask = render_atlas(low, atlas, held, args.eval_px, cuda)
        row[f"psnr_{name}"], row[f"ssim_{name}"] = score(truth, tmask, rgb, mask)
    return row


# --------------------------------------------------------------------------------------------- table
def _cell(row: dict, key: str, fmt: str) -> str:
    return "-" if key not in row else format(row[key], fmt)


def _ms(row: dict, key: str) -> str:
    return "-" if key not in row else f"{1e3 * float(np.median(row[key])):.1f}"


def write_table(rows: list[dict], args, device: str) -> list[str]:
    ok = [r for r in rows if "error" not in r]
    views = ("views DEGRADED as generated ones (" + args.degradation.describe() + "; ours harmonises "
             "them)") if args.degrade else "true colours of the source"
    lines = ["# Texture fusion oracle (issue 4 item 7" + (", degraded views: issue 14 item 6)" if args.degrade
                                                        else ")"), "",
             f"`python -m benchmarks.texture.oracle` at git `{git_sha()}` on {device}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Atlas {args.atlas}^2, 10 rig views at "
             f"{args.view_px} px ({views}), low mesh {args.faces} faces (simplify_qem + "
             f"unwrap_uv), scored on 8 held-back views (+-30 deg elevation) at {args.eval_px} px against the "
             "source's renders (pixels covered in both). Baseline: bilinear single tap, cos^4, OpenCV Telea "
             "in UV space, same plan and gutter. Times: median of "
             f"{args.repeats} (CUDA events after a warm-up on CUDA).", "",
             "| Asset | Low faces | Ours PSNR | Ours SSIM | Base PSNR | Base SSIM | Delta dB | CPU ref PSNR "
             "| Unfilled share | Seen share |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['asset']} | skipped: {r['error']} |||||||||")
            continue
        delta = r["psnr_ours"] - r["psnr_baseline"] if "psnr_ours" in r and "psnr_baseline" in r else None
        r["delta"] = delta
        unf = r["unfilled_texels"] / r["valid_texels"] if "valid_texels" in r else None
        seen = r["known_texels"] / r["valid_texels"] if "valid_texels" in r else None
        lines.append(f"| {r['asset']} | {r['low_faces']} | {_cell(r, 'psnr_ours', '.2f')} | "
                     f"{_cell(r, 'ssim_ours', '.4f')} | {_cell(r, 'psnr_baseline', '.2f')} | "
                     f"{_cell(r, 'ssim_baseline', '.4f')} | {'-' if delta is None else f'{delta:+.2f}'} | "
                     f"{_cell(r, 'psnr_cpu_ref', '.2f')} | {'-' if unf is None else f'{unf:.2e}'} | "
                     f"{'-' if seen is None else f'{seen:.3f}'} |")
    deltas = [r["delta"] for r in ok if r.get("delta") is not None]
    if ok:
        def mean(key: str, fmt: str) -> str:
            vals = [r[key] for r in ok if r.get(key) is not None]
            return format(float(np.mean(vals)), fmt) if vals else "-"
        lines.append(f"| **mean** | | {mean('psnr_ours', '.2f')} | {mean('ssim_ours', '.4f')} | "
                     f"{mean('psnr_baseline', '.2f')} | {mean('ssim_baseline', '.4f')} | "
                     f"{mean('delta', '+.2f')} | "
                     f"{mean('psnr_cpu_ref', '.2f')} | | |")
    lines += ["", "| Asset | Render conditions (ms) | Precompute (ms) | Precompute + raster (ms) | "
              "Fusion (ms) | Baseline (ms) | CPU ref (ms) |", "|---|---|---|---|---|---|---|"]
    for r in ok:
        lines.append(f"| {r['asset']} | " + " | ".join(_ms(r, k) for k in TIMES) + " |")
    lines += ["", "Targets (issue 4): render conditions <= 30 ms, precompute <= 100 ms, fusion <= 80 ms (at "
              "1024 px / 2048^2), PSNR >= baseline + 1 dB on average and never below it, 0 unfilled texels."]
    if deltas:
        unfilled = sum(r.get("unfilled_texels", 0) for r in ok)
        lines.append(f"Measured: mean delta {np.mean(deltas):+.2f} dB, min delta {min(deltas):+.2f} dB, "
                     f"unfilled chart texels over all assets {unfilled}.")
    return lines


def write_csv(rows: list[dict], args, device: str) -> None:
    size = f"atlas {args.atlas}, views {args.view_px}"
    config = f"10 rig views; {args.faces} faces; eval 8 held-back views at {args.eval_px} px"
    for r in rows:
        if "error" in r:
            continue
        for name in args.methods:
            for metric, unit in (("psnr", "dB"), ("ssim", "1")):
                if f"{metric}_{name}" in r:
                    append_result(args.csv, "texture_oracle", f"{name}:{r['asset']}", f"heldback_{metric}",
                                  unit, size, r[f"{metric}_{name}"], None, None, config, device)
        for key in TIMES:
            if key in r:
                append_result(args.csv, "texture_oracle", f"{key[2:]}:{r['asset']}", "latency", "s", size,
                              *percentiles(r[key]), config, device)
        if "valid_texels" in r:
            append_result(args.csv, "texture_oracle", f"ours:{r['asset']}", "unfilled_share", "1", size,
                          r["unfilled_texels"] / r["valid_texels"], None, None, config, device)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda", "host"), default="cuda",
                    help="cpu: the device code in numba's CUDA simulator (tiny sizes only); host: the CPU "
                         "engine's fusion and a host baseline (module docstring)")
    ap.add_argument("--atlas", type=int, default=2048)
    ap.add_argument("--view-px", type=int, default=1024)
    ap.add_argument("--eval-px", type=int, default=512)
    ap.add_argument("--faces", type=int, default=5000)
    ap.add_argument("--assets", nargs="*", default=list(TEXTURED))
    ap.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--degrade", action="store_true", help="degrade the views as generated ones (degrade.py)")
    ap.add_argument("--degrade-seed", type=int, default=0)
    ap.add_argument("--exposure-jitter", type=float, default=0.10)
    ap.add_argument("--wb-jitter", type=float, default=0.10)
    ap.add_argument("--max-shift-px", type=float, default=1.0)
    ap.add_argument("--prepare-only", action="store_true", help="write the low meshes to --cache and stop")
    ap.add_argument("--shared", default=None, help="folder with assets/ ($ASSETGEN_SHARED)")
    ap.add_argument("--out", default=None, help="markdown table")
    ap.add_argument("--csv", default=None, help="results CSV (append_result rows)")
    ap.add_argument("--json", default=None, help="raw per-asset rows")
    args = ap.parse_args(argv)
    from benchmarks.texture.degrade import Degradation

    args.degradation = Degradation(args.exposure_jitter, args.wb_jitter, args.max_shift_px, args.degrade_seed)
    if args.device == "cpu":                     # the device kernels then run in numba's CUDA simulator
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    from benchmarks.geometry.dense_inputs import shared_dir

    shared = shared_dir(args.shared)
    cache = Path(args.cache)
    if args.prepare_only or not all((cache / f"{a}.npz").is_file() for a in args.assets):
        prepare(args, shared)
        if args.prepare_only:
            return []
    cuda = args.device == "cuda"
    device = "cpu (host fusion)" if args.device == "host" else "cpu"
    if cuda:
        import torch

        device = torch.cuda.get_device_name()
    rows = []
    for asset in args.assets:
        if not (cache / f"{asset}.npz").is_file():
            rows.append({"asset": asset, "error": "not prepared (see --prepare-only output)"})
            continue
        try:
            rows.append(run_asset(asset, args, shared, cuda))
        except AssetGenError as err:
            rows.append({"asset": asset, "error": str(err)})
        print({k: v for k, v in rows[-1].items() if not k.startswith("t_")}, flush=True)
    lines = write_table(rows, args, device)
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    if args.csv:
        write_csv(rows, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    return rows


if __name__ == "__main__":
    main()
