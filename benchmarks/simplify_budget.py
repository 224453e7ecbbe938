"""Face budgets kept (issue 14.5): QEM simplification to 5K / 10K / 20K faces on every shared asset, ours vs
MeshLab's quadric edge collapse at the same count, side by side.

Inputs: the dense watertight marching-cubes remesh of every asset in <shared>/assets
(``benchmarks.geometry.dense_inputs``: scaled into [-1, 1]^3, ``--resolution`` grid, cached), the
meshes the pipeline simplifies; plus ``--extra-512`` assets at 512^3 (~1.2-1.6M faces), where the strict
guards used to stall short of 5K (bunny 5938 / bob 6212 faces on the CPU, 5592 / 5850 on the H100).
Methods, each asked for exactly the target:
  * ``ours_cpu``: ``simplify_qem`` with the pipeline's placement (BOUNDED_OPTIMAL); ``strict_faces`` is
    what the simplifier before this change reached (strict guards on the QEM point only: the old result);
  * ``ours_gpu`` (``--device cuda``): ``simplify_qem_gpu``, same placement;
  * ``meshlab``: pymeshlab ``meshing_decimation_quadric_edge_collapse`` with preserveboundary,
    preservenormal, optimalplacement and planarquadric True (``simplify_reference.run_meshlab``, the
    settings of the Table 2 benchmark).
Metrics vs the dense mesh (``simplify_reference.quality``: ``engine.metrics``, distances in units of the
dense mesh's longest box side): faces out, Chamfer (x1e-5) and Hausdorff (x1e-3) from ``--points``
point-to-surface samples per direction, flipped-normal pixels over 24 views at ``--view-px``, and one
timed call. An unreachable budget would be a ConfigError: written as such.
Writes benchmarks/results/simplify_budget_<device>.md and rows in benchmarks/results/<device>.csv.

Run:  python -m benchmarks.simplify_budget [--assets ...] [--resolution 256] [--extra-512 bunny bob]
      [--device cuda]
      python -m benchmarks.simplify_budget --compare GPU.md CPU.md   (the GPU rows beside MeshLab's)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, append_result, git_sha
from benchmarks.geometry.dense_inputs import all_assets, dense_mesh, shared_dir
from benchmarks.geometry.simplify_reference import quality, run_meshlab
from engine.errors import ConfigError
from engine.geometry.mesh import TriMesh, clean_mesh

TARGETS = (5000, 10000, 20000)
NAME = "simplify_budget"


def before(mesh: TriMesh, target: int) -> TriMesh:
    """The simplifier before this change: strict guards on the QEM point only, stopping where they stall."""
    from engine.geometry.simplify import _MODE, Placement, _simplify_kernel, fixed_vertices
    from engine.geometry.simplify_guards import QEM_POINT_ONLY

    clean = clean_mesh(mesh)
    pos, faces = clean.vertices.astype(np.float64), clean.faces.copy()
    alive, _ = _simplify_kernel(pos, faces, fixed_vertices(faces, clean.num_vertices), target, 100,
                                _MODE[Placement.BOUNDED_OPTIMAL], QEM_POINT_ONLY)
    used, remap = np.unique(faces[alive], return_inverse=True)
    return TriMesh(pos[used], remap.reshape(-1, 3))


def ours(device: str):
    from engine.geometry.simplify import Placement, simplify_qem

    if device == "cpu":
        return lambda mesh, target: simplify_qem(mesh, target, Placement.BOUNDED_OPTIMAL)
    from engine.geometry.simplify_gpu import simplify_qem_gpu

    return lambda mesh, target: simplify_qem_gpu(mesh, target, Placement.BOUNDED_OPTIMAL)


def measure(fn, dense: TriMesh, target: int, args) -> dict:
    t0 = time.perf_counter()
    try:
        result = fn(dense, target)
    except ConfigError as err:
        return {"error": str(err)}
    seconds = time.perf_counter() - t0
    out, report = result if isinstance(result, tuple) else (result, None)
    row = quality(dense, out, args.points, args.view_px)
    row.update(seconds=seconds, reason=report.reason if report is not None else "")
    return row


def cell(m: dict) -> str:
    if "error" in m:
        return "- | - | - | - | -" if m["error"] == "-" else "ConfigError | | | |"
    return (f"{int(m['faces'])} | {m['chamfer']:.1f} | {m['hausdorff']:.2f} | {m['flipped_px']:.0f} | "
            f"{m['seconds']:.2f}")


def run(args) -> list[dict]:
    ours_fn = ours(args.device)
    jobs = [(a, args.resolution) for a in args.assets] + [(a, 512) for a in args.extra_512]
    rows = []
    for name, res in jobs:
        backend = "gpu" if args.device == "cuda" else "cpu"
        dense, _ = dense_mesh(name, res, shared_dir(args.shared), backend=backend)
        for target in TARGETS:
            row = {"asset": name, "res": res, "dense": dense.num_faces, "target": target,
                   "before": measure(before, dense, target, args) if args.device == "cpu" else None,
                   "ours": measure(ours_fn, dense, target, args),
                   "meshlab": measure(run_meshlab, dense, target, args) if args.meshlab else {"error": "-"}}
            rows.append(row)
            old = cell(row["before"] or {"error": "-"})
            print(f"{name}@{res} ({dense.num_faces}) -> {target}: before {old} | ours {cell(row['ours'])} | "
                  f"meshlab {cell(row['meshlab'])} | {row['ours'].get('reason', '')}", flush=True)
    return rows


def _means(rows: list[dict], method: str, target: int) -> dict[str, float] | None:
    ok = [r[method] for r in rows if r["target"] == target and r[method] and "error" not in r[method]]
    if not ok:
        return None
    means = {k: float(np.mean([m[k] for m in ok])) for k in ("chamfer", "hausdorff", "flipped_px")}
    return means | {"n": len(ok)}


def write(rows: list[dict], args) -> None:
    device = "cpu" if args.device == "cpu" else _gpu_name()
    tag = "cpu" if args.device == "cpu" else next((t.lower() for t in ("H100", "H200") if t in device), "gpu")
    ours_name = "ours_cpu" if args.device == "cpu" else "ours_gpu"
    names = {"before": "before", "ours": ours_name, "meshlab": "meshlab"}
    over = [r for r in rows if "error" not in r["ours"] and r["ours"]["faces"] > r["target"]]
    config = f"dense MC {args.resolution}^3 (512^3: {'/'.join(args.extra_512) or '-'}); mean over assets"
    lines = [f"# Face budgets kept: QEM to 5K / 10K / 20K faces, {ours_name} vs MeshLab", "",
             f"Generated by `python -m benchmarks.simplify_budget` at git `{git_sha()}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, device {device}.", "",
             f"Inputs: dense watertight marching-cubes remesh of each asset ({args.resolution}^3 grid; "
             f"{', '.join(args.extra_512) or 'none'} also at 512^3). Placement BOUNDED_OPTIMAL (the pipeline "
             f"default). Metrics vs the dense mesh: CD = Chamfer (x1e-5) / HD = Hausdorff (x1e-3) from "
             f"{args.points:,} samples per direction, flipped-normal px over 24 views at {args.view_px} px, "
             "s = one call (ours: cleaning included; MeshLab: inside pymeshlab). before = the simplifier "
             "before this change (strict guards on the QEM point only; its faces in bold where over the "
             "budget).", "",
             f"Budget kept on every row: {'yes' if not over else f'NO, {len(over)} rows over'}.", "",
             f"| Asset | Dense faces | Target | before: faces | CD | HD | flip px | s | {ours_name} faces "
             "| CD | HD | flip px | s | MeshLab faces | CD | HD | flip px | s | reason (ours) |",
             "|---" * 20 + "|"]
    for r in rows:
        old = cell(r["before"] or {"error": "-"})
        if r["before"] and "faces" in r["before"] and r["before"]["faces"] > r["target"]:
            old = f"**{int(r['before']['faces'])}**" + old[old.index(" |"):]
        lines.append(f"| {r['asset']}{'@512' if r['res'] == 512 else ''} | {r['dense']:,} | {r['target']} | "
                     f"{old} | {cell(r['ours'])} | {cell(r['meshlab'])} | {r['ours'].get('reason', '')} |")
    lines += ["", "Means over the rows of each target:", "",
              "| Target | Method | rows | CD | HD | flip px |", "|---|---|---|---|---|---|"]
    for target in TARGETS:
        for method, label in names.items():
            m = _means(rows, method, target)
            if m is None:
                continue
            lines.append(f"| {target} | {label} | {m['n']} | {m['chamfer']:.1f} | {m['hausdorff']:.2f} | "
                         f"{m['flipped_px']:.1f} |")
            for key, unit in (("chamfer", "x1e-5"), ("hausdorff", "x1e-3"), ("flipped_px", "px")):
                append_result(args.csv or RESULTS / f"{tag}.csv", NAME, label, key, unit,
                              f"{m['n']} meshes -> {target}", m[key], None, None, config, device)
    Path(args.out or RESULTS / f"simplify_budget_{tag}.md").write_text("\n".join(lines) + "\n")


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def _table_rows(path: Path) -> dict[tuple[str, int], list[str]]:
    """(asset, target) -> the cells of a table this module wrote."""
    rows = {}
    for line in Path(path).read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 18 and cells[3].isdigit():
            rows[(cells[1], int(cells[3]))] = cells
    return rows


def compare(ours_md: Path, meshlab_md: Path) -> str:
    """Markdown: each row of ``ours_md`` (e.g. the GPU table, written where pymeshlab is missing) beside
    the MeshLab columns of ``meshlab_md`` (the CPU table of the same dense meshes), and whether ours is no
    worse on faces (within the budget), Chamfer, Hausdorff and flipped pixels."""
    ours, ref = _table_rows(ours_md), _table_rows(meshlab_md)
    lines = [f"## Side by side: `{Path(ours_md).name}` against MeshLab's columns of "
             f"`{Path(meshlab_md).name}`", "",
             "| Asset | Target | ours faces | CD | HD | flip px | MeshLab faces | CD | HD | flip px "
             "| no worse |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    worse = 0
    for key, o in ours.items():
        m = ref.get(key)
        if m is None:
            lines.append(f"| {key[0]} | {key[1]} | {o[9]} | {o[10]} | {o[11]} | {o[12]} | - | - | - | - | "
                         "no MeshLab row |")
            continue
        ok = (int(o[9]) <= key[1] and float(o[10]) <= float(m[15]) and float(o[11]) <= float(m[16])
              and int(o[12]) <= int(m[17]))
        worse += not ok
        lines.append(f"| {key[0]} | {key[1]} | {o[9]} | {o[10]} | {o[11]} | {o[12]} | {m[14]} | {m[15]} | "
                     f"{m[16]} | {m[17]} | {'yes' if ok else '**no**'} |")
    lines += ["", f"Rows no worse than MeshLab: {len(ours) - worse} of {len(ours)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", nargs="*", default=None, help="asset ids (default: all)")
    ap.add_argument("--extra-512", nargs="*", default=["bunny", "bob"])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--view-px", type=int, default=256)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--shared", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--csv", default=None, help="rows go here (default: benchmarks/results/<device>.csv)")
    ap.add_argument("--compare", nargs=2, metavar=("OURS_MD", "MESHLAB_MD"), default=None,
                    help="no run: append to OURS_MD its rows beside MESHLAB_MD's MeshLab columns")
    args = ap.parse_args()
    if args.compare:
        ours_md, meshlab_md = map(Path, args.compare)
        ours_md.write_text(ours_md.read_text().rstrip("\n") + "\n\n" + compare(ours_md, meshlab_md))
        return
    try:
        import pymeshlab  # noqa: F401

        args.meshlab = True
    except ImportError:                                 # e.g. on the device machine: ours only
        args.meshlab = False
    args.assets = args.assets if args.assets is not None else all_assets(shared_dir(args.shared))
    write(run(args), args)


if __name__ == "__main__":
    main()
