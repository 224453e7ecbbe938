"""CUDA-graph step runner: eager fallback on CPU; graph replay equals eager on a GPU (marker ``gpu``)."""

from __future__ import annotations

import pytest
import torch

from engine.models.dit_layers import build_on
from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT
from engine.runtime.cuda_graph import CudaGraphStep
from engine.sampling.ddim_vpred import DDIMConfig
from engine.sampling.guidance import GuidanceConfig, GuidanceMode, GuidedSampler


def _affine(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x @ w + idx.float()


def test_cpu_uses_eager_and_follows_constants():
    x, w = torch.randn(3, 4), torch.randn(4, 4)
    step = CudaGraphStep(_affine, [x, torch.zeros(1, dtype=torch.long), w], n_dynamic=2)
    assert step.mode == "eager" and step.graph is None and "CUDA" in step.reason
    idx = torch.ones(1, dtype=torch.long)
    assert torch.equal(step(x, idx), x @ w + 1)
    w2 = torch.randn(4, 4)
    step.set_constants([w2])
    assert torch.equal(step(x, idx), x @ w2 + 1)
    with pytest.raises(ValueError):
        step(x)
    with pytest.raises(ValueError):
        step.set_constants([w2, w2])


def test_cpu_sampler_reports_eager():
    cfg = MeshGenConfig.tiny()
    model = build_on("cpu", torch.float32, MeshGenDiT, cfg, seed=0)
    sampler = GuidedSampler(model, DDIMConfig(steps=3), GuidanceConfig(GuidanceMode.FOLDED))
    cond = torch.randn(1, cfg.n_context, cfg.context_dim)
    z_T = torch.randn(1, cfg.n_tokens, cfg.latent_dim)
    a = sampler(cond, z_T)
    assert sampler.graph_mode(1) == "eager"
    b = sampler(cond, z_T)  # second request reuses the runner
    assert torch.equal(a, b) and a.shape == z_T.shape


@pytest.mark.gpu
def test_graph_replay_equals_eager_step():
    dev = "cuda"
    x, w = torch.randn(64, 64, device=dev), torch.randn(64, 64, device=dev)
    step = CudaGraphStep(_affine, [x, torch.zeros(1, dtype=torch.long, device=dev), w], n_dynamic=2)
    assert step.mode == "graph", step.reason
    for k in range(3):
        x_new, idx = torch.randn(64, 64, device=dev), torch.full((1,), k, device=dev)
        assert torch.allclose(step(x_new, idx), _affine(x_new, idx, w))
    w2 = torch.randn(64, 64, device=dev)
    step.set_constants([w2])
    assert torch.allclose(step(x, idx), _affine(x, idx, w2))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", list(GuidanceMode))
@pytest.mark.parametrize("name", ["tiny", "tiny_refine"])
def test_graph_sampler_equals_eager(mode, name):
    cfg = MeshGenConfig.from_name(name)
    model = build_on("cuda", torch.bfloat16, MeshGenDiT, cfg, seed=0)
    g = torch.Generator(device="cuda").manual_seed(0)
    pos = torch.randint(0, 8, (cfg.n_tokens, 3), device="cuda", generator=g) if cfg.rope else None
    guid = GuidanceConfig(mode)
    graph = GuidedSampler(model, DDIMConfig(steps=4), guid, use_graph=True)
    eager = GuidedSampler(model, DDIMConfig(steps=4), guid, use_graph=False)
    for _ in range(2):  # second request: new context copied into the captured buffers
        cond = torch.randn(1, cfg.n_context, cfg.context_dim, device="cuda", generator=g)
        z_T = torch.randn(1, cfg.n_tokens, cfg.latent_dim, device="cuda", generator=g)
        a, b = graph(cond, z_T, pos), eager(cond, z_T, pos)
        assert graph.graph_mode(1) == "graph" and eager.graph_mode(1) == "eager"
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
