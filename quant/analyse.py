"""``python -m quant.analyse``: calibrate a network on real inputs, measure each layer's sensitivity and
write its recipe (``quant/recipes/<network>.<precision>.<arch>.json``) and the per-layer report.

  python -m quant.analyse --network texturegen --scale paper --device cuda --precision fp8 \
      --report benchmarks/results/quant_texturegen_h100.md

Pictures come from ``$ASSETGEN_SHARED/images`` (default ``../shared``), meshes from ``.../assets``. The
same command analyses real checkpoints once the engine loads them (the weights' fingerprint is recorded).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch

from quant.calibrate import Calibrator
from quant.formats import Format
from quant.recipe import RECIPES, Recipe, arch_family, recipe_name
from quant.sensitivity import Analysis, analyse

CANDIDATES = {"fp8": (Format.FP8_ROW,), "int8": (Format.INT8,)}
PICTURES = ("typical_misc_crate.png", "typical_creature_dragon.png", "typical_vehicle_cart.png")
MESHES = ("spot/spot.obj", "duck/Duck.glb")


def shared_root() -> Path:
    return Path(os.environ.get("ASSETGEN_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def build_target(args: argparse.Namespace):
    from quant import probes

    root = shared_root()
    pictures = [root / "images" / p for p in PICTURES[: args.pictures]]
    missing = [str(p) for p in pictures if not p.is_file()]
    if missing:
        raise SystemExit(f"error: calibration pictures not found: {', '.join(missing)} "
                         "(fix: set ASSETGEN_SHARED to the folder holding images/ and assets/)")
    if args.network == "meshgen_coarse":
        return probes.meshgen_coarse(args.scale, args.device, pictures, steps=args.steps or 25)
    if args.network == "meshgen_refine":
        return probes.meshgen_refine(args.scale, args.device, pictures, steps=args.steps or 5)
    meshes = [root / "assets" / m for m in MESHES[: args.meshes]]
    return probes.texturegen(args.scale, args.device, pictures, meshes, steps=args.steps or 4)


def report(analysis: Analysis, recipe: Recipe, seconds: float) -> str:
    stage = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in recipe.stage.items())
    lines = [f"# Quantisation analysis: {recipe.network} ({recipe.precision}, {recipe.arch})", "",
             f"Weights: {recipe.weights}. Inputs: {recipe.made_with['inputs']}.",
             f"Budget: layer output SQNR >= {recipe.made_with['layer_sqnr_db']} dB on the calibration rows; "
             f"stage: {recipe.made_with['stage_limit']}. Device: {recipe.made_with['device']}; "
             f"torch {recipe.made_with['torch']}; analysis took {seconds:.1f} s.", "",
             f"Result: {recipe.counts()} of {len(analysis.layers)} linear layers; whole recipe: " + stage, "",
             "| layer | rows/call | N x K | SQNR dB | block score | format | why |",
             "|---|---|---|---|---|---|---|"]
    for r in analysis.layers.values():
        sq = ", ".join(f"{k} {v:.1f}" for k, v in r.sqnr.items())
        score = "" if r.unit_score is None else f"{r.unit_score:.3f}"
        lines.append(f"| {r.name} | {r.rows} | {r.shape[0]} x {r.shape[1]} | {sq} | {score} | "
                     f"{r.final.value} | {r.reason} |")
    lines += ["", "Block score: the stage score (1.0 = the stage budget) with only that block's "
              "eligible layers quantised. Layers are accepted block by block from the least sensitive; "
              "the whole recipe is measured last."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quant.analyse", description=__doc__.split("\n")[0])
    ap.add_argument("--network", choices=("meshgen_coarse", "meshgen_refine", "texturegen"), required=True)
    ap.add_argument("--scale", choices=("paper", "tiny"), default="paper", help="random networks' size")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=tuple(CANDIDATES), default="fp8")
    ap.add_argument("--pictures", type=int, default=3, help="calibration pictures (default 3)")
    ap.add_argument("--meshes", type=int, default=2, help="TextureGen calibration meshes (default 2)")
    ap.add_argument("--steps", type=int, default=0, help="sampler steps (default: the preset's)")
    ap.add_argument("--recipes", type=Path, default=RECIPES, help="folder the recipe is written to")
    ap.add_argument("--report", type=Path, help="write the per-layer table (markdown) here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    target = build_target(args)
    with Calibrator(target.model, sample_every=3 if target.network == "meshgen_coarse" else 1) as cal:
        target.calibrate()
    result = analyse(target.model, cal.stats, target.probe, CANDIDATES[args.precision], target.budget,
                     log=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    dev = torch.device(args.device)
    layers = {n: {"format": r.final.value, "sqnr_db": {k: round(v, 2) for k, v in r.sqnr.items()},
                  "act_amax": result.act_amax[n], "rows": r.rows, "reason": r.reason}
              for n, r in result.layers.items()}
    amax = {n: cal.stats[n].channel_amax for n, r in result.layers.items() if r.final is Format.INT8}
    made_with = {"inputs": target.inputs, "layer_sqnr_db": target.budget.layer_sqnr_db,
                 "stage_limit": target.budget.stage_limit, "block_scores": result.units,
                 "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "date": datetime.date.today().isoformat(),
                 "command": "python -m quant.analyse " + " ".join(sys.argv[1:] if argv is None else argv)}
    recipe = Recipe(target.network, args.precision, arch_family(dev), target.weights, made_with, layers,
                    result.stage, amax)
    path = recipe.save(args.recipes / f"{recipe_name(target.network, args.precision, recipe.arch)}.json")
    print(f"recipe {path}: {recipe.counts()}; stage {recipe.stage}; {seconds:.1f} s")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report(result, recipe, seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
