"""Classifier-free guidance for the MeshGen DiTs, and the request-level sampler built on it (paper 5.2-5.3).

Guided velocity (Ho & Salimans 2022): v = v_uncond + s (v_cond - v_uncond).
* ``BATCHED`` (teacher: 100 coarse / 20 refine steps): conditional and unconditional branches run as one
  batch of 2B through the DiT (one set of GEMMs at twice the rows instead of two launches); the context
  K/V are precomputed once per request for the stacked batch [cond; uncond].
* ``FOLDED`` (distilled student: 25 / 5 steps): guidance was distilled into the model (paper 5.3), one
  conditional pass per step; ``scale`` is unused.
The unconditional image condition is all-zero DINOv2 tokens (the dropped condition of CFG training; the
convention of the open Hunyuan3D-2 DiT). The guidance scale of the teacher is not given in the paper:
``TEACHER_SCALE`` = 5.0 is an assumption (Hunyuan3D-2's default), a field the pipeline may override.

``GuidedSampler`` runs one request: precompute the context, then S DDIM steps, each optionally replayed
from a CUDA graph captured once per shape bucket and reused across requests (the new request's context
is copied into the graph's static buffers). The runners may live in a dict owned by the caller (the
engine's network bundle), so that they outlive the sampler object.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from engine.models.meshgen_dit import MeshGenContext, MeshGenDiT
from engine.runtime.cuda_graph import CudaGraphStep
from engine.sampling.ddim_vpred import DDIMConfig, DDIMVPred

TEACHER_SCALE = 5.0


class GuidanceMode(enum.Enum):
    BATCHED = "batched"  # CFG with cond + uncond in one batch of 2B (teacher)
    FOLDED = "folded"  # CFG distilled into the model: one conditional pass (student)


@dataclass(frozen=True)
class GuidanceConfig:
    mode: GuidanceMode = GuidanceMode.FOLDED
    scale: float = TEACHER_SCALE

    @property
    def batch_factor(self) -> int:
        return 2 if self.mode is GuidanceMode.BATCHED else 1


def combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """v_uncond + scale * (v_cond - v_uncond)."""
    return torch.lerp(v_uncond, v_cond, scale)


def guidance_condition(cond: torch.Tensor, guidance: GuidanceConfig) -> torch.Tensor:
    """cond [B, M, C] -> what the DiT sees: [B, M, C] folded, [2B, M, C] = [cond; zeros] batched."""
    if guidance.mode is GuidanceMode.BATCHED:
        return torch.cat([cond, torch.zeros_like(cond)], dim=0)
    return cond


def guided_velocity(model: MeshGenDiT, z: torch.Tensor, t: torch.Tensor, ctx: MeshGenContext,
                    guidance: GuidanceConfig) -> torch.Tensor:
    """z [B, N, D], t [B], ctx built from ``guidance_condition`` (batch B or 2B) -> guided v [B, N, D]."""
    if guidance.mode is GuidanceMode.FOLDED:
        return model(z, t, ctx)
    v = model(torch.cat([z, z]), torch.cat([t, t]), ctx)  # [2B, N, D]
    v_cond, v_uncond = v.chunk(2)
    return combine(v_cond, v_uncond, guidance.scale)


class GuidedSampler:
    """One MeshGen model + DDIM tables + guidance; ``__call__`` samples a request.

    ``use_graph``: capture one denoising step (model, guidance and DDIM update) as a CUDA graph on first
    use per shape bucket, replay it for every step of every later request; falls back to eager on CPU or
    if capture fails (``graph_mode(batch)`` says which ran).

    ``runners``: where the step runners live. Pass a dict the caller keeps (an engine's resident network
    bundle) and the runners outlive this sampler: a later sampler with the same ``name`` and DDIM steps
    finds the runner of its bucket there and only copies the new request's context into it
    (``set_constants``) before replaying. A bucket is (name, steps, guidance, z shape, context shapes):
    a request whose DINOv2 resolution or token count differs gets its own runner. Without ``runners``
    the sampler keeps its own dict.
    """

    def __init__(self, model: MeshGenDiT, ddim: DDIMConfig, guidance: GuidanceConfig,
                 use_graph: bool = True, runners: dict | None = None, name: str = "meshgen") -> None:
        self.model, self.guidance, self.use_graph, self.name = model, guidance, use_graph, name
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.ddim = DDIMVPred(ddim, self.device)
        self.runners: dict = {} if runners is None else runners
        self._last: dict[int, tuple] = {}  # batch -> bucket of the last request of that batch size

    def bucket(self, z_T: torch.Tensor, ctx: MeshGenContext) -> tuple:
        """The runner key of a request: z_T [B, N, D] and its context's tensor shapes/dtypes."""
        consts = tuple((tuple(t.shape), t.dtype) for t in ctx.tensors())
        return (self.name, self.ddim.steps, self.guidance, tuple(z_T.shape), consts)

    def graph_mode(self, batch: int) -> str | None:
        """'graph' or 'eager' for a batch size already sampled, else None."""
        return self.runners[self._last[batch]].mode if batch in self._last else None

    def runner(self, batch: int) -> CudaGraphStep:
        """The step runner of a batch size already sampled: ``runner(z [B, N, D] fp32, idx [1]) -> z_prev``
        with the last request's context (for per-step timing)."""
        return self.runners[self._last[batch]]

    @torch.inference_mode()
    def __call__(self, cond: torch.Tensor, z_T: torch.Tensor, positions: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """cond [B, M, C] image tokens; z_T [B, N, D] initial noise; positions [N, 3] (refine model)
        -> z_0 [B, N, D] fp32 (fresh tensor)."""
        ctx = self.model.precompute_context(guidance_condition(cond.to(self.dtype), self.guidance),
                                            positions)
        key = self.bucket(z_T, ctx)
        step = self.runners.get(key)
        if step is None:
            step = self.runners[key] = self._build(ctx, z_T)
        else:
            step.set_constants(ctx.tensors())
        self._last[z_T.shape[0]] = key
        return self.ddim.sample(step, z_T)

    def _build(self, ctx: MeshGenContext, z_T: torch.Tensor) -> CudaGraphStep:
        depth, rope = self.model.cfg.depth, ctx.rope is not None
        model, guidance, dtype = self.model, self.guidance, self.dtype
        denoise_tables = self.ddim  # captured: a runner keeps the tables it was built with

        def step(z: torch.Tensor, idx: torch.Tensor, *ctx_flat: torch.Tensor) -> torch.Tensor:
            c = MeshGenContext.from_tensors(list(ctx_flat), depth, rope)
            denoise = denoise_tables.make_step(lambda x, t: guided_velocity(model, x, t, c, guidance), dtype)
            return denoise(z, idx)

        inputs = [z_T.float(), self.ddim.indices[:1], *ctx.tensors()]
        return CudaGraphStep(step, inputs, n_dynamic=2, enabled=self.use_graph)
