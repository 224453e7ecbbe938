"""Deterministic DDIM (eta = 0) for v-prediction models with a zero-terminal-SNR schedule (MeshGen, 5.2).

Schedule (paper 5.2: scaled-linear betas, zero-SNR rescaling of Lin et al. 2024, "Common diffusion noise
schedules and sample steps are flawed", Algorithm 1):
  betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2,  abar = cumprod(1 - betas)
  sqrt(abar) <- (sqrt(abar) - sqrt(abar_T)) * sqrt(abar_0) / (sqrt(abar_0) - sqrt(abar_T))
so abar_T = 0 (pure noise at the last training step) and abar_0 is unchanged.
Noising: z_t = alpha_t z_0 + sigma_t eps with alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t);
velocity v = alpha_t eps - sigma_t z_0, hence z_0 = alpha_t z_t - sigma_t v and eps = sigma_t z_t + alpha_t v.
Timesteps: "trailing" spacing (Lin et al. 2024, section 3.4): t_i = round(T - i T / S) - 1, i = 0..S-1, so
sampling starts at t = T - 1 (the zero-SNR step). The step after the last one goes to abar = 1.
DDIM update (eta = 0): z_prev = sqrt(abar_prev) z_0 + sqrt(1 - abar_prev) eps, which is linear in (z_t, v):
  z_prev = cx_i * z_t + cv_i * v
  cx_i = sqrt(abar_prev) alpha_t + sqrt(1 - abar_prev) sigma_t
  cv_i = sqrt(1 - abar_prev) alpha_t - sqrt(abar_prev) sigma_t
The tables (timesteps, cx, cv) are built once, in float64 then stored fp32 on the device; a step looks
them up with a device index tensor, so a denoising step has no host sync and can be captured in a CUDA
graph (``make_step``). Latents are kept in fp32 between steps; the model sees them in its own dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DDIMConfig:
    steps: int = 25  # distilled coarse; teacher 100; refine 5 (teacher 20)
    train_steps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    rescale_zero_snr: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= self.train_steps:
            raise ValueError(f"steps must be in 1..{self.train_steps}, got {self.steps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")


def scaled_linear_alphas_cumprod(cfg: DDIMConfig) -> torch.Tensor:
    """abar [T] float64 of the scaled-linear schedule, zero-SNR rescaled when ``cfg.rescale_zero_snr``."""
    betas = torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, cfg.train_steps,
                           dtype=torch.float64) ** 2
    abar = torch.cumprod(1.0 - betas, dim=0)
    return rescale_zero_terminal_snr(abar) if cfg.rescale_zero_snr else abar


def rescale_zero_terminal_snr(abar: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale sqrt(abar) so its last entry is 0, first unchanged."""
    s = abar.double().sqrt()
    s0, s_last = s[0].clone(), s[-1].clone()
    s = (s - s_last) * s0 / (s0 - s_last)
    return s ** 2


def trailing_timesteps(train_steps: int, steps: int) -> torch.Tensor:
    """[steps] int64 training timesteps, descending, starting at train_steps - 1 ("trailing")."""
    ratio = train_steps / steps
    return (torch.round(torch.arange(train_steps, 0, -ratio, dtype=torch.float64)).long() - 1)[:steps]


def v_to_x0(z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor | float, sigma: torch.Tensor | float
            ) -> torch.Tensor:
    """Clean latent from a v prediction: z_0 = alpha z_t - sigma v."""
    return alpha * z - sigma * v


def v_to_eps(z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor | float, sigma: torch.Tensor | float
             ) -> torch.Tensor:
    """Noise from a v prediction: eps = sigma z_t + alpha v."""
    return sigma * z + alpha * v


class DDIMVPred:
    """Tables of one sampling run on one device. ``timesteps``, ``alphas``, ``sigmas``, ``cx``, ``cv``:
    [S] fp32; ``indices``: [S] int64 (slice ``indices[i:i+1]`` is the device index of step i)."""

    def __init__(self, cfg: DDIMConfig, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.alphas_cumprod = scaled_linear_alphas_cumprod(cfg)  # [T] float64, CPU (reference)
        ts = trailing_timesteps(cfg.train_steps, cfg.steps)
        abar = self.alphas_cumprod[ts]
        abar_prev = torch.cat([self.alphas_cumprod[ts[1:]], torch.ones(1, dtype=torch.float64)])
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        a_prev, s_prev = abar_prev.sqrt(), (1 - abar_prev).sqrt()
        tables = {"timesteps": ts.double(), "alphas": alpha, "sigmas": sigma,
                  "cx": a_prev * alpha + s_prev * sigma, "cv": s_prev * alpha - a_prev * sigma}
        for name, value in tables.items():
            setattr(self, name, value.to(device=device, dtype=torch.float32))
        self.indices = torch.arange(cfg.steps, device=device)

    @property
    def steps(self) -> int:
        return self.cfg.steps

    def update(self, z: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One DDIM step: z [B, ...] fp32, v like z, idx [1] int64 device index -> z_prev fp32."""
        shape = (1,) * z.dim()
        cx = self.cx.index_select(0, idx).view(shape)
        cv = self.cv.index_select(0, idx).view(shape)
        return cx * z + cv * v.float()

    def make_step(self, velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  model_dtype: torch.dtype) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """step(z [B, ...] fp32, idx [1] int64) -> z_prev, with v = velocity(z in model_dtype, t [B]).

        Everything it does is on the device (no host sync), so it can be captured as one CUDA graph."""
        def step(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            t = self.timesteps.index_select(0, idx).expand(z.shape[0])  # [B] fp32
            return self.update(z, velocity(z.to(model_dtype), t), idx)
        return step

    def sample(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z_T: torch.Tensor
               ) -> torch.Tensor:
        """Run all steps from noise z_T [B, ...] (any float dtype) -> z_0 fp32 (a fresh tensor)."""
        z = z_T.float()
        for i in range(self.cfg.steps):
            z = step(z, self.indices[i: i + 1])
        return z.clone()
