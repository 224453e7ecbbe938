"""Dense benchmark inputs of the geometry stage: the watertight marching-cubes remesh of each real asset.

Every geometry benchmark starts from the same meshes: an asset of ``<shared>/assets`` scaled into
[-1, 1]^3 (centred bounding box, longest side 2: the paper's normalised object units), then remeshed by
``engine.geometry.watertight.watertight_mesh`` at ``resolution`` (512 gives the paper's ~1M-face dense
meshes). Building one at 512 takes ~50 s on the 2-core CPU, so results are cached as ``.npz`` (vertices
float32 [V, 3], faces int32 [F, 3]) under ``cache_dir`` keyed by asset, resolution and backend.

The shared folder is ``--shared`` of the calling benchmark, else ``$ASSETGEN_SHARED``, else ``../shared``
beside the repository (the device machine gets a git-ignored copy carried as ``.gpu_inputs/shared``).

Run:  python -m benchmarks.geometry.dense_inputs [--assets ...] [--resolution 512] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from engine.geometry.mesh import TriMesh

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "assetgen_dense"


def shared_dir(explicit: str | Path | None = None) -> Path:
    """The shared data folder (assets/, images/): explicit argument, $ASSETGEN_SHARED, or ../shared."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("ASSETGEN_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def all_assets(shared: Path) -> list[str]:
    """Every asset folder of ``shared/assets`` (sorted)."""
    return sorted(p.name for p in (shared / "assets").iterdir() if p.is_dir())


def normalised(mesh: TriMesh) -> TriMesh:
    """Geometry scaled into [-1, 1]^3: centred box, longest side 2."""
    lo, hi = mesh.bounds()
    scale = 2.0 / float(np.max(hi - lo))
    return TriMesh((mesh.vertices - (lo + hi) / 2.0) * scale, mesh.faces.copy())


def source_mesh(name: str, shared: Path) -> TriMesh:
    """The asset's own geometry, normalised."""
    from engine.io.asset_load import find_mesh_file, load_mesh

    return normalised(load_mesh(find_mesh_file(shared / "assets" / name)))


def mesh_sha256(mesh: TriMesh) -> str:
    """Hash of the exact float32 positions and int32 faces (equal inputs across machines and backends)."""
    digest = hashlib.sha256(np.ascontiguousarray(mesh.vertices, np.float32).tobytes())
    digest.update(np.ascontiguousarray(mesh.faces, np.int32).tobytes())
    return digest.hexdigest()


def dense_mesh(name: str, resolution: int = 512, shared: Path | None = None,
               cache_dir: Path = DEFAULT_CACHE, backend: str = "cpu") -> tuple[TriMesh, float]:
    """(dense watertight MC mesh of asset ``name``, seconds spent building it; 0 when read from cache).

    backend "cpu" runs ``watertight_mesh``; "gpu" runs ``watertight_mesh_gpu`` (sparse MC), which gives the
    same mesh (checked by ``mesh_sha256`` against the CPU builds: see benchmarks/geometry/README.md)."""
    cache = Path(cache_dir) / f"{name}_{resolution}.npz"
    if cache.is_file():
        data = np.load(cache)
        return TriMesh(data["vertices"], data["faces"]), 0.0
    raw = source_mesh(name, shared_dir(shared))
    t0 = time.perf_counter()
    if backend == "gpu":
        from engine.geometry.watertight_gpu import watertight_mesh_gpu

        dense = watertight_mesh_gpu(raw, resolution, mc="sparse")
    else:
        from engine.geometry.watertight import watertight_mesh

        dense = watertight_mesh(raw, resolution)
    seconds = time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, vertices=dense.vertices, faces=dense.faces)
    tmp.replace(cache)
    return dense, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", nargs="*", default=None, help="asset ids (default: all)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--shared", default=None)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--backend", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()
    shared = shared_dir(args.shared)
    for name in args.assets or all_assets(shared):
        mesh, seconds = dense_mesh(name, args.resolution, shared, Path(args.cache), args.backend)
        print(f"{name:14s} {mesh.num_faces:9d} faces {mesh.num_vertices:9d} verts  built in {seconds:.1f} s "
              f"({args.backend})  sha256 {mesh_sha256(mesh)[:16]}", flush=True)


if __name__ == "__main__":
    main()
