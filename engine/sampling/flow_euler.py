"""Flow-matching Euler sampler with Hunyuan3D-2's schedules.

Convention (Tencent's, the reverse of diffusers'): flow time s runs from 0 (pure noise) to 1 (data) along
the straight path x_s = (1 - s) * noise + s * x0, and the network predicts the velocity
v = dx/ds = x0 - noise. One Euler step is x <- x + (s_next - s) * v(x, s). The network's time input is s
itself (Tencent passes timesteps = 1000 s and divides by num_train_timesteps again before the model).

Schedules, as Tencent's ``hy3dgen/shapegen/schedulers.py`` builds them (provenance: read, not copied):
* ``EULER`` (``FlowMatchEulerDiscreteScheduler``): s_i = linspace(0, 1, steps), warped by
  shift * s / (1 + (shift - 1) s), then 1 appended. The last grid point is already 1, so Tencent's last model
  call has s_next - s = 0 and changes nothing: ``steps`` steps cost steps - 1 network evaluations here
  (the zero-length step is dropped when the tables are built; the result is identical).
* ``CONSISTENCY`` (``ConsistencyFlowMatchEulerDiscreteScheduler``, the ``-turbo`` checkpoints):
  base = linspace(0, 1, T); the PCM grid base[[0, r - 1, 2r - 1, ...]] with r = T // pcm_timesteps; the
  sampling points are that grid at floor(linspace(0, pcm_timesteps, steps, endpoint=False)), then 1.

Guidance: ``CFG`` runs cond and uncond in one batch of 2B and combines v_u + w (v_c - v_u);
``EMBEDDED`` passes w to a guidance-distilled network (one pass of B); ``NONE`` runs the cond branch only.
Tables (grid, per-step times on the device, step lengths as host floats) are built once per sampler; the
loop itself has no host synchronisation.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import ConfigError

# velocity(x [B, N, C], t [B] float32, cond [B, L, Dc], guidance [B] float32 | None) -> v [B, N, C]
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class FlowScheduleKind(enum.Enum):
    EULER = "euler"
    CONSISTENCY = "consistency"


class GuidanceMode(enum.Enum):
    CFG = "cfg"  # batched cond + uncond
    EMBEDDED = "embedded"  # guidance-distilled network takes the scale as an input
    NONE = "none"  # conditional branch only


@dataclass(frozen=True)
class FlowSchedule:
    """Which grid and its parameters (Tencent's scheduler ``params``)."""

    kind: FlowScheduleKind = FlowScheduleKind.EULER
    num_train_timesteps: int = 1000
    shift: float = 1.0  # EULER only
    pcm_timesteps: int = 50  # CONSISTENCY only (Tencent's default; the YAML may set it)

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 2 or self.shift <= 0:
            raise ConfigError("flow schedule needs num_train_timesteps >= 2 and shift > 0",
                              "check the config")
        consistency = self.kind is FlowScheduleKind.CONSISTENCY
        if consistency and not 1 <= self.pcm_timesteps <= self.num_train_timesteps:
            raise ConfigError(f"pcm_timesteps {self.pcm_timesteps} out of range",
                              f"use 1..{self.num_train_timesteps}")

    @classmethod
    def from_yaml(cls, target: str, params: dict) -> FlowSchedule:
        """From a Tencent ``scheduler`` section; ``target`` is only compared by its class name."""
        name = target.rsplit(".", 1)[-1]
        t = int(params.get("num_train_timesteps", 1000))
        if name == "FlowMatchEulerDiscreteScheduler":
            if params.get("use_dynamic_shifting", False):
                raise ConfigError("dynamic timestep shifting is not supported", "use a fixed 'shift'")
            return cls(FlowScheduleKind.EULER, t, shift=float(params.get("shift", 1.0)))
        if name == "ConsistencyFlowMatchEulerDiscreteScheduler":
            return cls(FlowScheduleKind.CONSISTENCY, t, pcm_timesteps=int(params.get("pcm_timesteps", 50)))
        raise ConfigError(f"unsupported scheduler '{target}'",
                          "use FlowMatchEulerDiscreteScheduler or ConsistencyFlowMatchEulerDiscreteScheduler")


def flow_grid(steps: int, schedule: FlowSchedule) -> np.ndarray:
    """The steps + 1 flow times (float32, last = 1) that Tencent's scheduler steps through."""
    if steps < 1:
        raise ConfigError(f"{steps} sampling steps", "use at least 1 step")
    if schedule.kind is FlowScheduleKind.EULER:
        s = np.linspace(0.0, 1.0, steps)
        s = schedule.shift * s / (1.0 + (schedule.shift - 1.0) * s)
    else:
        t, pcm = schedule.num_train_timesteps, schedule.pcm_timesteps
        base = np.linspace(0.0, 1.0, t)
        picks = np.concatenate([[0], (np.arange(1, pcm) * (t // pcm)).round().astype(np.int64) - 1])
        idx = np.floor(np.linspace(0, pcm, num=steps, endpoint=False)).astype(np.int64)
        s = base[picks][idx]
    return np.concatenate([s.astype(np.float32), np.ones(1, np.float32)])


class FlowEulerSampler:
    """Euler integration of a velocity network over one schedule; build once, call per request.

    ``times`` [E] (device, float32) are the network's time inputs of the E evaluated steps and ``dts`` their
    lengths (host floats); ``evaluations`` is E (zero-length steps removed).
    """

    def __init__(self, steps: int, schedule: FlowSchedule = FlowSchedule(), device: str | torch.device = "cpu"
                 ) -> None:
        grid = flow_grid(steps, schedule)  # [steps + 1]
        dts = (grid[1:] - grid[:-1]).astype(np.float32)
        keep = dts != 0.0
        self.steps, self.schedule, self.grid = steps, schedule, grid
        self.dts = [float(d) for d in dts[keep]]
        self.times = torch.from_numpy(grid[:-1][keep].copy()).to(device)  # [E]
        self.evaluations = len(self.dts)

    def sample(self, velocity: VelocityFn, noise: torch.Tensor, cond: torch.Tensor,
               uncond: torch.Tensor | None = None, guidance: float = 1.0,
               mode: GuidanceMode = GuidanceMode.NONE) -> torch.Tensor:
        """Integrate from ``noise`` [B, N, C] at s = 0 to s = 1; returns float32 [B, N, C].

        cond [B, L, Dc]; uncond [B, L, Dc] (CFG only; Tencent's unconditional image embedding is zeros).
        The state is kept in float32; the network sees it cast to its own dtype.
        """
        x = noise.to(torch.float32, copy=True)  # never updates the caller's tensor in place
        b = x.shape[0]
        g = None
        if mode is GuidanceMode.CFG:
            if uncond is None:
                raise ValueError("CFG sampling needs the unconditional embedding")
            cond = torch.cat((cond, uncond), dim=0)  # [2B, L, Dc], built once per request
        elif mode is GuidanceMode.EMBEDDED:
            g = torch.full((b,), guidance, dtype=torch.float32, device=x.device)
        reps = 2 if mode is GuidanceMode.CFG else 1
        for i, dt in enumerate(self.dts):
            t = self.times[i].expand(reps * b)  # [reps B], no host sync
            if mode is GuidanceMode.CFG:
                v_c, v_u = velocity(torch.cat((x, x), dim=0), t, cond, None).float().chunk(2, dim=0)
                v = torch.lerp(v_u, v_c, guidance)  # v_u + w (v_c - v_u)
            else:
                v = velocity(x, t, cond, g).float()
            x = x.add_(v, alpha=dt)
        return x
