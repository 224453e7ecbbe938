"""Shared fixtures: paths to the real third-party assets and images in ../shared (never copied here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# CI has no GPU: Triton kernels run on the CPU through Triton's interpreter. This must be set before any test
# module imports triton (collection order is alphabetical), so it lives here, not in one test file.
# numba-cuda kernels likewise run in numba's CUDA simulator, which numba reads once at its first import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from engine.io.asset_load import find_mesh_file

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASSETGEN_SHARED", REPO.parent / "shared"))
ASSETS = SHARED / "assets"
IMAGES = SHARED / "images"


def asset_path(name: str) -> Path:
    """Path of the main file of a shared asset folder (e.g. 'bunny' -> .../stanford-bunny.obj)."""
    return find_mesh_file(ASSETS / name)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not ASSETS.is_dir():
        pytest.skip(f"shared assets not found at {ASSETS}")
    return SHARED


def pytest_collection_modifyitems(config, items):
    """GPU tests (marker ``gpu``) run on the device machine; without CUDA they are skipped."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine: benchmarks/gpu_run.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
