"""AOTInductor packages (trt_builds/aoti.py) and the C++ runtime (trt_builds/cpp): the tiny bucket's chain
networks are exported once per session; each package matches its eager module, the packaged chains (shape
latents and field, texture views) match the engine's eager samplers, and the C++ example host, built with
cmake + ninja against the pip torch, reproduces them -- all within 1e-3 relative error in float32."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from trt_builds.aoti import build_packages
from trt_builds.export_spec import CHAIN, export_module, export_specs, preset_plan, random_bundles
from trt_builds.packaged import PackagedNetworks, max_relative_error, run_in_fresh_process

TOL = 1e-3
SEED = 3
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def plan():
    return preset_plan("tiny")


@pytest.fixture(scope="session")
def bundles(plan):
    return random_bundles(plan, torch.float32, seed=0)


@pytest.fixture(scope="session")
def manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("aoti_tiny")
    return build_packages("tiny", out, "fp32", CHAIN, seed=0, jobs=2, wrapper_opt="O0")


@pytest.fixture(scope="session")
def packaged(manifest):
    return PackagedNetworks(manifest)


def _picture(size: int = 40) -> torch.Tensor:
    """uint8 [S, S, 3]: a seeded coloured disc on white (the conditioners' input convention)."""
    gen = torch.Generator().manual_seed(SEED)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2
    colour = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
    return torch.where(disc[..., None], colour, torch.full_like(colour, 255))


def _condition_maps(k: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """normals, positions float32 [K, R, R, 3] in [0, 1] (smooth seeded fields, like rendered maps)."""
    gen = torch.Generator().manual_seed(SEED + 1)
    base = torch.nn.functional.interpolate(torch.rand(2 * k, 3, 8, 8, generator=gen), size=(r, r),
                                           mode="bilinear", align_corners=False)
    maps = base.permute(0, 2, 3, 1).contiguous()
    return maps[:k], maps[k:]


def _to_vae(maps: torch.Tensor) -> torch.Tensor:
    """[B, R, R, 3] in [0, 1] -> [B, 3, R, R] in [-1, 1] (the stage's ``_to_vae`` at the view size)."""
    return maps.permute(0, 3, 1, 2) * 2.0 - 1.0


def _grid_points(res: int, bound: float) -> torch.Tensor:
    """float32 [(res+1)^3, 3] lattice nodes, x slowest (``dense_decode``'s order)."""
    from engine.models.shape_decoding import lattice_points

    r = torch.arange(res + 1)
    idx = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)
    return lattice_points(idx, res + 1, bound)


@torch.inference_mode()
def _eager_shape(plan, shape_nets, picture: torch.Tensor):
    """The engine's eager path: DINOv2 tokens -> GuidedSampler (DDIM, folded) -> latents; VaeField on the
    dense grid."""
    from engine.models.shape_decoding import VaeField
    from engine.stages.shape_networks import _image_tokens

    s, mc = plan.shape, shape_nets.coarse_cfg
    noise = torch.randn((1, mc.n_tokens, mc.latent_dim), generator=torch.Generator().manual_seed(SEED))
    cond = _image_tokens(shape_nets, picture, s.dino_resolution_coarse)
    latents = shape_nets.sampler("coarse", s.coarse_steps)(cond, noise)
    vae = shape_nets.coarse_vae
    fld = VaeField(vae, vae.decode_latents(latents), topk=vae.cfg.default_topk)
    return noise, latents, fld(_grid_points(s.grid_resolution, s.bounds))


@torch.inference_mode()
def _eager_texture(plan, tex, picture: torch.Tensor, normals: torch.Tensor, positions: torch.Tensor):
    """The stage's eager path (prepare_views / sample_views without the renderer): views [K, 3, R, R]."""
    from engine.sampling.texturegen_sampler import TextureSamplerConfig, sample_texture_views
    from engine.stages.texture_networks import _to_vae as stage_to_vae

    t, k = plan.texture, normals.shape[0]
    ref = stage_to_vae(picture[None].float() / 255.0, t.view_resolution)
    enc = tex.vae.encode(torch.cat([ref, _to_vae(normals), _to_vae(positions)])).float()
    ref_lat = enc[0:1]
    geometry = torch.cat([enc[1:1 + k], enc[1 + k:]], dim=1)[None]
    request = tex.dit.prepare(geometry, *tex.text_context, repeat=plan.branches)
    noise = torch.randn((1, k) + tuple(ref_lat.shape[1:]), generator=torch.Generator().manual_seed(SEED))
    white = tex.vae.encode(torch.ones(1, 3, t.view_resolution, t.view_resolution)).float()[0]
    sampler = TextureSamplerConfig.from_texture_config(t.steps, t.guidance, plan.guidance_scale)
    latents = sample_texture_views(tex.dit.velocity_fn(request), noise, ref_lat, sampler, white)
    views = (tex.vae.decode(latents[0]).float() + 1.0) * 0.5
    return ref, noise, latents, views


@pytest.mark.parametrize("network", CHAIN)
def test_package_matches_eager(network, plan, bundles, packaged):
    shape_nets, tex = bundles
    spec = export_specs(plan, shape_nets, tex)[network]
    inputs = spec.sample_inputs(torch.float32, seed=SEED)
    with torch.inference_mode():
        ref = export_module(network, plan, shape_nets, tex)(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = packaged.run(network, *inputs)
    assert len(got) == len(spec.outputs) == len(ref)
    for g, r, t in zip(got, ref, spec.outputs, strict=True):
        assert tuple(g.shape) == t.shape
        assert max_relative_error(g, r) <= TOL, (network, t.name, max_relative_error(g, r))


def test_artifact_names_and_manifest(manifest, packaged):
    assert manifest.name == "assetgen.tiny.fp32.norecipe.manifest"
    for name in CHAIN:
        file = manifest.parent / f"{name}.tiny.fp32.norecipe.torch{torch.__version__.split('+')[0]}.cpu.pt2"
        assert file.is_file(), file
    assert packaged.setting("coarse_steps") == 4 and packaged.setting("branches") == 2


def test_packaged_chains_match_eager(plan, bundles, packaged):
    shape_nets, tex = bundles
    picture = _picture()
    noise, latents, field = _eager_shape(plan, shape_nets, picture)
    got = packaged.shape_latents(picture, noise)
    assert max_relative_error(got, latents) <= TOL
    points = _grid_points(plan.shape.grid_resolution, plan.shape.bounds)
    assert max_relative_error(packaged.field(latents, points), field) <= TOL

    normals, positions = _condition_maps(tex.dit_cfg.num_views, plan.texture.view_resolution)
    ref, tnoise, tlat, views = _eager_texture(plan, tex, picture, normals, positions)
    got_lat = packaged.texture_latents(ref, _to_vae(normals), _to_vae(positions), tnoise)
    assert max_relative_error(got_lat, tlat) <= TOL
    assert max_relative_error(packaged.decode_views(tlat), views) <= TOL


@pytest.fixture(scope="session")
def cpp_host(tmp_path_factory):
    """The top-level CMake project (runtime library + example host) built with ninja against the pip torch."""
    if shutil.which("cmake") is None or shutil.which("ninja") is None:
        pytest.skip("cmake and ninja are needed to build the C++ runtime")
    build = tmp_path_factory.mktemp("cpp_build")
    prefix = torch.utils.cmake_prefix_path
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    f"-DCMAKE_PREFIX_PATH={prefix}"], check=True, capture_output=True, text=True)
    done = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return build / "trt_builds" / "cpp" / "assetgen_host"


def test_cpp_runtime_matches_python(plan, bundles, manifest, cpp_host, tmp_path):
    shape_nets, tex = bundles
    picture = _picture()
    normals, positions = _condition_maps(tex.dit_cfg.num_views, plan.texture.view_resolution)
    picture.numpy().tofile(tmp_path / "picture.u8")
    normals.numpy().tofile(tmp_path / "normals.f32")
    positions.numpy().tofile(tmp_path / "positions.f32")
    done = subprocess.run([str(cpp_host), str(manifest), str(tmp_path / "picture.u8"), str(picture.shape[0]),
                           str(tmp_path / "normals.f32"), str(tmp_path / "positions.f32"), str(SEED),
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    _, latents, field = _eager_shape(plan, shape_nets, picture)
    got = torch.from_numpy(np.fromfile(tmp_path / "latents.f32", dtype=np.float32)).view_as(latents)
    assert max_relative_error(got, latents) <= TOL
    got_field = torch.from_numpy(np.fromfile(tmp_path / "field.f32", dtype=np.float32))
    assert max_relative_error(got_field, field) <= TOL

    _, _, tlat, views = _eager_texture(plan, tex, picture, normals, positions)
    got_tlat = torch.from_numpy(np.fromfile(tmp_path / "view_latents.f32", dtype=np.float32)).view_as(tlat)
    assert max_relative_error(got_tlat, tlat) <= TOL
    got_views = torch.from_numpy(np.fromfile(tmp_path / "views.f32", dtype=np.float32)).view_as(views)
    assert max_relative_error(got_views, views) <= TOL


def test_bf16_package_within_low_precision_rule(plan, tmp_path):
    """A bf16 package (the shipping precision) of the coarse DiT step: its error against the same weights
    run in float32 is at most 2x eager bf16's error plus one bf16 rounding (CONVENTIONS.md's rule)."""
    import copy

    from trt_builds.aoti import artifact_name
    from trt_builds.packaged import load_package
    from trt_builds.export_modules import MeshGenStep

    shape_nets, tex = random_bundles(plan, torch.bfloat16, seed=0)
    manifest = build_packages("tiny", tmp_path, "bf16", ("meshgen_coarse",), seed=0, wrapper_opt="O0")
    package = load_package(manifest.parent / artifact_name("meshgen_coarse", "tiny", "bf16", "cpu"))
    inputs = export_specs(plan, shape_nets, tex)["meshgen_coarse"].sample_inputs(torch.bfloat16, seed=SEED)
    with torch.inference_mode():
        eager = MeshGenStep(shape_nets.coarse)(*inputs)
        ref = MeshGenStep(copy.deepcopy(shape_nets.coarse).float())(*(x.float() for x in inputs))
        got = package(*inputs)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert max_relative_error(got, ref) <= 2 * max_relative_error(eager, ref) + 2.0 ** -8


def test_host_demo_end_to_end(manifest, cpp_host, shared_dir, tmp_path, capsys):
    """``trt_builds.host_demo`` on a real picture and mesh (reuses this session's packages and host build):
    the host's field becomes a loadable mesh and its views a PNG contact sheet."""
    from engine.io.asset_load import load_mesh
    from trt_builds.host_demo import main

    out = tmp_path / "demo"
    main(["--packages", str(manifest), "--host", str(cpp_host), "--picture",
          str(shared_dir / "images" / "typical_misc_crate.png"), "--mesh",
          str(shared_dir / "assets" / "spot" / "spot.obj"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "not meaningful" in printed and printed.count("\nhost ") >= 2
    assert load_mesh(out / "shape.obj").num_faces > 0
    assert (out / "views.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _latencies(cell: str) -> list[float]:
    """'p50 [p10, p90]' -> [p50, p10, p90]."""
    return [float(x) for x in cell.replace("[", " ").replace("]", " ").replace(",", " ").split()]


def test_export_benchmark_tiny(manifest, cpp_host, tmp_path):
    """``benchmarks.models.exports`` end to end on the CPU over this session's tiny packages and host: a
    build row with its load time per chain package, eager / torch.compile / package latencies of the
    compared networks (the package matching eager), the chain three ways, the targets and the CSV rows."""
    from benchmarks.models.export_report import parse_tables
    from benchmarks.models.exports import main

    out = tmp_path / "out"
    main(["--preset", "tiny", "--device", "cpu", "--packages", str(manifest), "--host", str(cpp_host),
          "--networks", "dinov2,meshgen_coarse_context", "--chain-repeats", "2",
          "--scratch", str(tmp_path / "scratch"), "--out-dir", str(out)])
    tables = parse_tables((out / "exports_tiny_cpu.md").read_text())
    section = {title.split(" ")[0]: rows for title, rows in tables.items()}

    builds = {r["network"]: r for r in section["Package"]}
    assert set(builds) == set(CHAIN)
    for row in builds.values():
        assert 0 < float(row["load to first inference s"]) < 10 and row["<= 10 s"] == "yes", row
    nets = {r["network"]: r for r in section["Per"]}
    assert list(nets) == ["dinov2", "meshgen_coarse_context"]          # the priority order
    for row in nets.values():
        for column in ("eager ms", "torch.compile ms", "package ms"):
            p50, p10, p90 = _latencies(row[column])
            assert 0 < p10 <= p50 <= p90, (column, row[column])
        assert float(row["package / compile"]) > 0 and row["within 5 %"] in ("yes", "no")
        assert float(row["package vs eager rel. err"]) <= TOL
    chain = {r["variant"].split(" ")[0]: r for r in section["Network"]}
    assert set(chain) == {"Python", "PackagedNetworks", "C++"}
    for variant, row in chain.items():
        assert _latencies(row["chain s"])[0] > 0
        assert variant == "Python" or float(row["chain / engine"]) > 0
    targets = {r["target"].split(" ")[0]: r["verdict"] for r in section["Issue"]}
    assert set(targets) == {"every", "package", "C++"} and set(targets.values()) <= {"met", "not met"}

    csv = (out / "cpu.csv").read_text().splitlines()
    assert csv[0].startswith("name,variant,metric")
    assert any(line.startswith("export_chain_tiny,cpp,chain,s,grid16,") for line in csv)
    assert any(line.startswith("export_dinov2,fp32.package,latency,s,") for line in csv)


def _package_in_fresh_process(preset: str, precision: str, device: str, network: str, layout: str,
                              tmp_path: Path) -> list[float]:
    """Build ``network``'s package in ``layout``, load and run it in a child process (with the fault
    handler, so a crash names where it happened); the relative errors of its outputs against eager."""
    from trt_builds.aoti import PRECISIONS, build_package, load_bundles

    plan, (shape_nets, tex) = load_bundles(preset, precision, 0, None, device, ("shape",))
    spec, dtype = export_specs(plan, shape_nets, tex)[network], PRECISIONS[precision]
    module = export_module(network, plan, shape_nets, tex)
    path = tmp_path / f"{network}.{layout}.pt2"
    build_package(module, spec, dtype, path, layout=layout)
    inputs = tuple(x.to(device) for x in spec.sample_inputs(dtype, seed=SEED))
    with torch.inference_mode():
        ref = module(*inputs)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    del module, shape_nets
    if device == "cuda":
        torch.cuda.empty_cache()
    got, err = run_in_fresh_process(path, inputs, tmp_path / "run")
    assert got is not None, f"{network} ({layout}, {path.stat().st_size / 1e9:.2f} GB): {err}"
    assert len(got) == len(ref)
    return [max_relative_error(g.float(), r.float()) for g, r in zip(got, ref)]


def test_fresh_process_reports_a_broken_package(tmp_path):
    """``run_in_fresh_process`` on a file that is no package: no outputs, and the loader's own error."""
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(b"not a package")
    out, err = run_in_fresh_process(bad, (torch.zeros(2),), tmp_path / "run", timeout=120)
    assert out is None and "exit status 1" in err and "zip" in err.lower()


def test_blob_layout_package_matches_eager(tmp_path):
    """The "blob" weight layout (weights in their own file inside the package) loads in a fresh process
    and matches eager like the default layout."""
    assert max(_package_in_fresh_process("tiny", "fp32", "cpu", "dinov2", "blob", tmp_path)) <= TOL


@pytest.mark.gpu
@pytest.mark.parametrize(("network", "layout"), [("shape_vae_query", "so"), ("dinov2", "so"),
                                                 ("dinov2", "blob")])
def test_flash_package_loads_and_runs_on_cuda(network, layout, tmp_path):
    """A paper-size bf16 package built on the GPU loads in a fresh process and matches its eager module:
    dinov2's 2.3 GB of weights take AOTInductor's over-2-GB path (weights appended to the library and
    memory-mapped) in the "so" layout, a separate weights file in "blob"."""
    errs = _package_in_fresh_process("flash", "bf16", "cuda", network, layout, tmp_path)
    assert max(errs) <= 0.05, errs


class _Attention(torch.nn.Module):
    def forward(self, q, k, v):
        from engine.models.attention import attention

        return attention(q, k, v)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["export", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION",
                                     "MATH"])
def test_cuda_attention_package_per_backend(backend, tmp_path):
    """The engine's attention exported on CUDA with one SDPA backend allowed (or "export": the set
    ``build_package`` allows) loads and runs in a fresh process and matches eager: says which attention
    kernels a CUDA package can call."""
    from torch._inductor import aoti_compile_and_package
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from trt_builds.aoti import export_sdpa_backends

    allowed = export_sdpa_backends() if backend == "export" else [getattr(SDPBackend, backend)]
    gen = torch.Generator(device="cuda").manual_seed(SEED)
    q, k, v = (torch.randn(2, 8, 256, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
               for _ in range(3))
    path = tmp_path / f"attention_{backend}.pt2"
    with sdpa_kernel(allowed), torch.no_grad():
        ref = _Attention()(q, k, v)
        program = torch.export.export(_Attention(), (q, k, v), strict=False)
        aoti_compile_and_package(program, package_path=str(path))
    out, err = run_in_fresh_process(path, (q, k, v), tmp_path / "run", timeout=120)
    assert out is not None, f"attention package ({backend}): {err}"
    (got,) = out
    assert max_relative_error(got.float(), ref.float()) <= 0.02


def test_diagnose_runs_the_tiny_package_with_every_loader(tmp_path):
    """``python -m trt_builds.diagnose`` on the CPU: each loader runs the tiny package in a fresh process,
    the table names each case and keeps each child's log (file names the device tool can carry back)."""
    import re

    from trt_builds import diagnose
    from trt_builds.packaged import LOADERS

    assert diagnose.main(["--out", str(tmp_path), "--device", "cpu", "--timeout", "200"]) == 0
    table = (tmp_path / "aoti_diagnose.md").read_text()
    assert "torch " in table
    for loader in LOADERS:
        assert re.search(rf"\| tiny sin\+1 \| {re.escape(loader)} \| [\d.]+ \| ok \| ", table), table
    logs = sorted(p.name for p in tmp_path.glob("*.log"))
    assert len(logs) == len(LOADERS) + 2 and all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in logs), logs
    assert all("ran" in (tmp_path / n).read_text() for n in logs)


def test_fresh_process_rejects_an_unknown_loader(tmp_path):
    with pytest.raises(ValueError, match="unknown loader"):
        run_in_fresh_process(tmp_path / "x.pt2", (torch.zeros(1),), tmp_path, loader="dlopen")
