"""Visible faces stay (issue 14.4): recall and precision of hidden-face removal on shapes whose visible
faces are known exactly, and on every shared asset against a brute-force oracle (CPU), for the variants of
``engine.geometry.hidden_faces``, with their times.

What runs, per mesh, at ``--views`` x ``--px`` (the CPU budget; the paper's 512 x 1024 is the GPU's):
  * ``flood fill`` (the default): ``find_visible_faces(mesh, ...)`` -- views, the paper's normal-gated
    flood fill, then the escape check on the faces left to remove (``hidden_faces_verify``);
  * ``escape``: ``find_visible_faces(..., HiddenFaceMethod.ESCAPE_RAYS)`` -- views, escape rays, the check;
  * ``paper flood fill``: ``find_visible_faces(..., verify=False)`` -- views and flood fill alone (the
    method before issue 14.4), as the baseline.
Truth:
  * shapes (tests/meshes.py: a deep cup, a box with a small hole, a mouth, a hollow sphere with a
    window, a shell around hidden objects): exact, by construction;
  * assets (every folder of <shared>/assets, as ``engine.io.asset_load.load_mesh`` loads it): the oracle
    (``engine.geometry.hidden_faces_oracle``: ``--oracle-points`` random points x ``--oracle-dirs``
    random directions per face, nearest-hit ray casts, numpy RNG ``--seed``; the engine draws no numpy
    random numbers, its check none at all) run on every face any variant removed. A face escape keeps is
    proved visible by its own view, escape or check ray, so visible = kept by escape + removed faces the
    oracle proves visible; recall = visible faces kept / visible faces; precision = removed faces the
    oracle cannot prove visible / removed faces (both 1 when nothing is removed and nothing visible is
    missed).
Times: one call each, after a warm-up call on a small shape (JIT), wall clock, on a shared 2-core machine.
With ``--device cuda`` the variants run their GPU paths (``hidden_faces_gpu``: rasterised views, then
escape rays on the GPU BVH or the GPU flood fill, then the check on the host), e.g. at the paper's
512 x 1024.
Writes benchmarks/results/hidden_faces_recall_<cpu|h100>.md and rows in benchmarks/results/<cpu|h100>.csv.

Run:  python -m benchmarks.hidden_faces_recall [--assets ...] [--views 96 --px 256] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, append_result, git_sha
from benchmarks.geometry.dense_inputs import all_assets, shared_dir
from engine.geometry.hidden_faces import HiddenFaceMethod
from engine.geometry.mesh import TriMesh

NAME = "hidden_faces_recall"


def shapes() -> dict[str, tuple[TriMesh, np.ndarray]]:
    sys.path.insert(0, str(REPO / "tests"))
    import meshes

    return {"deep_cup": meshes.deep_cup(), "box_with_hole": meshes.box_with_hole(),
            "mouth": meshes.mouth(), "hollow_sphere_with_window": meshes.hollow_sphere_with_window(),
            "shell_with_inner_object": meshes.shell_with_inner_object()}


VARIANTS = (("flood fill", "flood_fill", HiddenFaceMethod.FLOOD_FILL, True),
            ("escape", "escape_rays", HiddenFaceMethod.ESCAPE_RAYS, True),
            ("paper flood fill", "flood_fill_unverified", HiddenFaceMethod.FLOOD_FILL, False))
"""(table name, csv variant, step 2, step 3 on): the default, the option, the paper's method alone."""


def visible_faces(mesh: TriMesh, views: int, px: int, device: str, method: HiddenFaceMethod,
                  verify: bool = True) -> np.ndarray:
    if device == "cpu":
        from engine.geometry.hidden_faces import find_visible_faces

        return find_visible_faces(mesh, views, px, method, verify=verify)
    from engine.geometry.device_mesh import DeviceMesh
    from engine.geometry.hidden_faces_gpu import find_visible_faces_gpu
    from triton_kernels.numba_cuda import kernel_device

    dm = DeviceMesh.from_trimesh(mesh, kernel_device())
    return find_visible_faces_gpu(dm, views, px, method, verify=verify)[0].cpu().numpy()


def timed(mesh: TriMesh, args, method: HiddenFaceMethod, verify: bool) -> tuple[np.ndarray, float]:
    if args.device != "cpu":
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    kept = visible_faces(mesh, args.views, args.px, args.device, method, verify)
    return kept, time.perf_counter() - t0


def scores(kept: np.ndarray, visible: np.ndarray) -> dict[str, float]:
    removed = ~kept
    return {"removed": int(removed.sum()), "missed": int((visible & removed).sum()),
            "hidden_kept": int((kept & ~visible).sum()),
            "recall": float((kept & visible).sum() / max(1, visible.sum())),
            "precision": float((removed & ~visible).sum() / removed.sum()) if removed.any() else 1.0}


def judge(name: str, mesh: TriMesh, truth: np.ndarray | None, args) -> dict:
    from engine.geometry.hidden_faces_oracle import oracle_visible

    kept, seconds = {}, {}
    for label, _, method, verify in VARIANTS:
        kept[label], seconds[label] = timed(mesh, args, method, verify)
    proved = kept["escape"]                             # every face it keeps is proved by a ray
    oracle_s = 0.0
    if truth is None:                                   # oracle on every face any variant removed
        ask = np.flatnonzero(~np.logical_and.reduce(list(kept.values())))
        t1 = time.perf_counter()
        seen = oracle_visible(mesh, ask, args.oracle_points, args.oracle_dirs, seed=args.seed)
        oracle_s = time.perf_counter() - t1
        truth = proved.copy()
        truth[ask] = seen | proved[ask]
    row = {"mesh": name, "faces": mesh.num_faces, "visible": int(truth.sum()), "oracle_s": oracle_s,
           "seconds": seconds, "scores": {k: scores(v, truth) for k, v in kept.items()}}
    parts = [f"{k}: removed {m['removed']} missed {m['missed']} {seconds[k]:.1f} s"
             for k, m in row["scores"].items()]
    print(f"{name:26s} F={mesh.num_faces:6d} vis={row['visible']:6d} | " + " | ".join(parts)
          + f" | oracle {oracle_s:.1f} s", flush=True)
    return row


def table(rows: list[dict], kind: str) -> list[str]:
    head = "removed | missed visible | hidden kept | recall | precision | s"
    labels = [v[0] for v in VARIANTS]
    out = [f"| {kind} | faces | visible | " + " | ".join(f"{k}: {head}" for k in labels) + " |",
           "|---" * (3 + 6 * len(labels)) + "|"]
    for r in rows:
        cells = [f"{m['removed']} | {m['missed']} | {m['hidden_kept']} | {m['recall']:.4f} | "
                 f"{m['precision']:.4f} | {r['seconds'][k]:.1f}" for k, m in r["scores"].items()]
        out.append(f"| {r['mesh']} | {r['faces']:,} | {r['visible']:,} | " + " | ".join(cells) + " |")
    return out


def write(shape_rows: list[dict], asset_rows: list[dict], args) -> None:
    module = "engine.geometry.hidden_faces" if args.device == "cpu" else "engine.geometry.hidden_faces_gpu"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    intro = (f"Generated by `python -m benchmarks.hidden_faces_recall` at git `{git_sha()}`, {when}, "
             f"{args.device_name}. Views: {args.views} x {args.px} px (the paper's 512 x 1024 px is 537M "
             f"rays per mesh on the CPU: the GPU's setting). Variants ({module}): flood fill = views + the "
             "paper's normal-gated flood fill + the escape check on the faces left to remove "
             "(engine.geometry.hidden_faces_verify; the default); escape = views + escape rays + the same "
             "check (``--hidden-faces escape_rays``); paper flood fill = views + flood fill alone (no check, "
             "the method before issue 14.4). The check and the oracle run on the host CPU. Times: wall "
             "clock of one call each, after a warm-up, on a 2-core machine shared with another job.")
    legend = ("recall = visible faces kept / visible faces; precision = removed faces that are hidden / "
              "removed faces; missed visible = visible faces removed; hidden kept = hidden faces kept.")
    lines = [f"# Hidden-face removal: visible faces kept, hidden ones removed ({args.tag})",
             "",
             intro, "", legend, "",
             "## Shapes with exactly known visibility (tests/meshes.py, default sizes)", ""]
    lines += table(shape_rows, "shape")
    lines += ["", f"## Shared assets as loaded, against the oracle ({args.oracle_points} random points x "
              f"{args.oracle_dirs} random directions per removed face, seed {args.seed})", "",
              "Visible = kept by escape (each proved by a view, escape or check ray) + removed faces the "
              "oracle proves visible; the oracle ran on every face any variant removed.", ""]
    lines += table(asset_rows, "asset")
    rows = shape_rows + asset_rows
    missed = ", ".join(f"{k} {sum(r['scores'][k]['missed'] for r in rows)}" for k, *_ in VARIANTS)
    secs = ", ".join(f"{k} {sum(r['seconds'][k] for r in rows):.0f} s" for k, *_ in VARIANTS)
    asset_secs = ", ".join(f"{k} {sum(r['seconds'][k] for r in asset_rows):.0f} s" for k, *_ in VARIANTS)
    lines += ["", f"Visible faces removed over all rows: {missed}. Time over all rows: {secs} (assets only: "
              f"{asset_secs}). Oracle time: {sum(r['oracle_s'] for r in asset_rows):.0f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    config = f"{args.views} views x {args.px}px; oracle {args.oracle_points}x{args.oracle_dirs}"
    for r in rows:
        for label, variant, *_ in VARIANTS:
            for key in ("recall", "precision"):
                append_result(args.csv or RESULTS / f"{args.tag}.csv", NAME, variant, key, "ratio",
                              f"{r['mesh']} ({r['faces']} faces)", r["scores"][label][key], None, None,
                              config, args.device_name)


def main() -> None:
    from engine.io.asset_load import find_mesh_file, load_mesh

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", nargs="*", default=None, help="asset ids (default: all)")
    ap.add_argument("--views", type=int, default=96)
    ap.add_argument("--px", type=int, default=256)
    ap.add_argument("--oracle-points", type=int, default=16)
    ap.add_argument("--oracle-dirs", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-shapes", action="store_true")
    ap.add_argument("--shared", default=None)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--csv", default=None, help="rows go here (default: benchmarks/results/<device>.csv)")
    args = ap.parse_args()
    if args.device == "cpu":
        args.tag, args.device_name = "cpu", "cpu"
    else:
        import torch

        args.device_name = torch.cuda.get_device_name(0)
        args.tag = next((t.lower() for t in ("H100", "H200") if t in args.device_name), "gpu")
    args.out = args.out or str(RESULTS / f"hidden_faces_recall_{args.tag}.md")
    shared = shared_dir(args.shared)
    warm = shapes()["box_with_hole"][0]
    for _, _, method, verify in VARIANTS:              # JIT compile (or cache load) outside the timings
        visible_faces(warm, 4, 16, args.device, method, verify)
    shape_rows = [] if args.no_shapes else [judge(n, m, t, args) for n, (m, t) in shapes().items()]
    asset_rows = [judge(a, load_mesh(find_mesh_file(shared / "assets" / a)), None, args)
                  for a in (args.assets if args.assets is not None else all_assets(shared))]
    write(shape_rows, asset_rows, args)


if __name__ == "__main__":
    main()
