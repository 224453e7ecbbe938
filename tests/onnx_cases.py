"""Shared, cached ONNX exports of the tiny bucket for tests/test_export_onnx.py and tests/test_tensorrt_rtx.py
(each export is seconds of torch.export + onnxscript: done once per pytest process)."""

from __future__ import annotations

import fnmatch
import functools
import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

# the minimum (MeshGen step with precomputed context, shape VAE decoder, TextureGen step, image VAE
# decoder, DINOv2) plus the refine step (rotary tables as inputs)
FLOAT_NETWORKS = ("dinov2", "meshgen_coarse", "meshgen_refine", "shape_vae_kv", "shape_vae_query",
                  "texturegen", "image_vae_decode")
MIXED = ("fp8_tensor", "fp8_row", "int8", "bf16")


@functools.cache
def out_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="assetgen_onnx_"))


@functools.cache
def exports():
    from trt_builds.onnx_export import network_exports

    return network_exports("tiny", FLOAT_NETWORKS)


@functools.cache
def exported(name: str):
    from trt_builds.onnx_export import export_onnx

    return export_onnx(exports()[name], out_dir())


@functools.cache
def calibrated_recipe(name: str, mode: str):
    """A recipe for ``name`` calibrated on its sample inputs (plus two perturbed copies): "fp8_tensor"
    quantises every eligible layer in FP8_TENSOR; "mixed" cycles the eligible layers through fp8_tensor,
    fp8_row, int8 and bf16. Eligible: not protected by quant.sensitivity's default patterns (what
    quant.analyse keeps in full precision: embeddings, in/out projections, context K/V, adaLN)."""
    from quant.calibrate import Calibrator
    from quant.recipe import Recipe
    from quant.sensitivity import DEFAULT_PROTECT

    exp = exports()[name]
    gen = torch.Generator().manual_seed(1)
    with Calibrator(exp.inner) as cal, torch.no_grad():
        for i in range(3):
            noisy = [v + 0.1 * i * torch.randn(v.shape, generator=gen)
                     if v.is_floating_point() and k != "t" else v for k, v in exp.inputs.items()]
            exp.module(*noisy)
    layers, channel = {}, {}
    for i, layer in enumerate(sorted(cal.stats)):
        fmt = "fp8_tensor" if mode == "fp8_tensor" else MIXED[i % len(MIXED)]
        if any(fnmatch.fnmatch(layer, p) for p in DEFAULT_PROTECT):
            fmt = "bf16"
        layers[layer] = {"format": fmt, "act_amax": cal.stats[layer].amax}
        if fmt == "int8":
            channel[layer] = cal.stats[layer].channel_amax
    return Recipe(name, "fp8", "cpu", "tiny random, seed 0", {"inputs": "export_spec samples"}, layers, {},
                  channel)


@functools.cache
def qdq_exported(name: str, mode: str):
    from trt_builds.onnx_export import export_onnx

    return export_onnx(exports()[name], out_dir(), recipe=calibrated_recipe(name, mode),
                       recipe_stem=f"{name}.{mode}.tiny")
