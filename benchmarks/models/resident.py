"""All networks of the default preset resident on one GPU together (issue 5 target: <= 60 GB, bf16).

Builds, one after the other and keeping every one, with random weights directly on the device in bf16
(meta construction, no fp32 copy): DINOv2-g/14 with registers, MeshGen coarse DiT, MeshGen refine DiT,
two VecSet shape decoders (coarse and refine; the paper's refine VAE has the coarse interface), TextureGen
DiT, image VAE, T5-XXL and CLIP-L text encoders, the per-view super-resolution network. Reports each
model's parameters and the allocator's growth, the total resident weights against the target. Usage:
    python -m benchmarks.models.resident --device cuda --out benchmarks/results/models_resident_h100.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import RESULTS, append_result

TARGET_GB = 60.0


def _models():
    """(name, builder) pairs; each builder returns an nn.Module on the device in bf16 (random weights)."""
    from engine.models.dinov2 import Dinov2Config, Dinov2Model
    from engine.models.dit_layers import build_on
    from engine.models.image_vae import ImageVAE, ImageVAEConfig
    from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT
    from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder
    from engine.models.super_resolution import SuperResolution, SuperResolutionConfig
    from engine.models.text_encoders import ClipTextConfig, ClipTextEncoder, T5Encoder, T5EncoderConfig
    from engine.models.texturegen_dit import TextureGenConfig, build_texturegen

    def on(make, cfg):
        return lambda dev: build_on(dev, torch.bfloat16, make, cfg)

    return [
        ("dinov2_g14_reg", on(Dinov2Model, Dinov2Config.giant_registers())),
        ("meshgen_coarse", on(MeshGenDiT, MeshGenConfig.coarse())),
        ("meshgen_refine", on(MeshGenDiT, MeshGenConfig.refine())),
        ("shape_vae_coarse", on(ShapeVaeDecoder, ShapeVaeConfig.assetgen())),
        ("shape_vae_refine", on(ShapeVaeDecoder, ShapeVaeConfig.assetgen())),
        ("texturegen", lambda dev: build_texturegen(TextureGenConfig.paper(), dev, torch.bfloat16, seed=0)),
        ("image_vae", on(ImageVAE, ImageVAEConfig.paper())),
        ("t5_xxl", on(T5Encoder, T5EncoderConfig.xxl())),
        ("clip_l", on(ClipTextEncoder, ClipTextConfig.vit_l14())),
        ("super_resolution", on(SuperResolution, SuperResolutionConfig.paper())),
    ]


def bench(device: str = "cuda") -> list[dict]:
    rows, keep = [], []
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    for name, build in _models():
        before = torch.cuda.memory_allocated() if cuda else 0
        model = build(device).eval()
        keep.append(model)
        params = sum(p.numel() for p in model.parameters())
        grown = ((torch.cuda.memory_allocated() if cuda else 0) - before) / 2**30
        rows.append(dict(model=name, params_b=params / 1e9, gb=grown if cuda else params * 2 / 2**30))
    total = ((torch.cuda.memory_allocated() - base) / 2**30) if cuda else sum(r["gb"] for r in rows)
    rows.append(dict(model="TOTAL resident", params_b=sum(r["params_b"] for r in rows), gb=total))
    return rows


def _markdown(rows: list[dict], device: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (parameter bytes, not measured)"
    lines = [f"# Default-preset networks resident together ({name})", "",
             f"bf16, random weights; target <= {TARGET_GB:.0f} GB for all of them together.", "",
             "| model | parameters (B) | allocator growth (GiB) |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['params_b']:.3f} | {r['gb']:.2f} |" for r in rows]
    total = rows[-1]["gb"]
    verdict = "within" if total <= TARGET_GB else "OVER"
    lines += ["", f"Total {total:.1f} GiB: {verdict} the {TARGET_GB:.0f} GB target."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=str(RESULTS / "models_resident.md"))
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        raise SystemExit("resident memory is a GPU measurement: run with --device cuda")
    rows = bench(args.device)
    text = _markdown(rows, args.device)
    Path(args.out).write_text(text)
    print(text)
    csv = args.csv or str(RESULTS / "h100.csv")
    gpu = torch.cuda.get_device_name()
    for r in rows:
        append_result(csv, "models_resident", r["model"], "memory", "GiB", f"{r['params_b']:.3f}B",
                      r["gb"], None, None, "bf16 random weights, default preset", gpu)


if __name__ == "__main__":
    main()
