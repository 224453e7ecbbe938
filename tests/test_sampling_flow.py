"""Flow-matching Euler sampler: Hunyuan3D-2's grids and closed-form integrations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.sampling.flow_euler import (
    FlowEulerSampler,
    FlowSchedule,
    FlowScheduleKind,
    GuidanceMode,
    flow_grid,
)

CONSISTENCY_100 = FlowSchedule(FlowScheduleKind.CONSISTENCY, pcm_timesteps=100)


def test_euler_grid_is_tencents_and_drops_the_zero_step():
    # linspace(0, 1, 5) then 1 appended: the last step has length 0 and is not evaluated.
    np.testing.assert_array_equal(flow_grid(5, FlowSchedule()), [0, 0.25, 0.5, 0.75, 1, 1])
    s = FlowEulerSampler(50)
    assert s.evaluations == 49 and len(s.times) == 49
    assert sum(s.dts) == pytest.approx(1.0, abs=1e-6)


def test_shifted_grid():
    g = flow_grid(3, FlowSchedule(shift=3.0))  # 3 * 0.5 / (1 + 2 * 0.5) = 0.75
    np.testing.assert_allclose(g, [0, 0.75, 1, 1], rtol=0, atol=1e-7)


def test_consistency_grid_hand_computed():
    # pcm grid base[[0, 9, 19, ...]] of base = linspace(0, 1, 1000); picks 0, 20, 40, 60, 80 of it.
    want = [0, 199 / 999, 399 / 999, 599 / 999, 799 / 999, 1]
    np.testing.assert_allclose(flow_grid(5, CONSISTENCY_100), want, atol=1e-7)
    assert FlowEulerSampler(5, CONSISTENCY_100).evaluations == 5


def test_schedule_from_yaml():
    s = FlowSchedule.from_yaml("hy3dgen.shapegen.schedulers.ConsistencyFlowMatchEulerDiscreteScheduler",
                               {"num_train_timesteps": 1000, "pcm_timesteps": 100})
    assert s == CONSISTENCY_100
    assert FlowSchedule.from_yaml("x.FlowMatchEulerDiscreteScheduler", {}).kind is FlowScheduleKind.EULER
    with pytest.raises(ConfigError, match="unsupported scheduler"):
        FlowSchedule.from_yaml("x.DDIMScheduler", {})


def _straight_line_oracle(x0: torch.Tensor):
    """Exact conditional velocity towards x0 along the straight path: v = (x0 - x) / (1 - s)."""
    def velocity(x, t, cond, guidance):
        return (x0 - x) / (1.0 - t.float())[:, None, None]
    return velocity


@pytest.mark.parametrize("steps,schedule", [(2, FlowSchedule()), (7, FlowSchedule(shift=2.5)),
                                            (5, CONSISTENCY_100)])
def test_straight_line_oracle_recovers_x0(steps, schedule):
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 4, generator=gen), torch.randn(2, 16, 4, generator=gen)
    out = FlowEulerSampler(steps, schedule).sample(_straight_line_oracle(x0), noise, torch.zeros(2, 1, 1))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_constant_velocity_integrates_exactly():
    noise, v = torch.randn(1, 8, 3), torch.randn(1, 8, 3)
    out = FlowEulerSampler(9, CONSISTENCY_100).sample(lambda x, t, c, g: v.expand_as(x), noise,
                                                      torch.zeros(1))
    torch.testing.assert_close(out, noise + v, rtol=0, atol=1e-6)  # the grid spans 0 -> 1


def test_linear_field_matches_euler_product():
    # dx/ds = a x: Euler gives x0 * prod(1 + a dt_i) exactly; and approaches exp(a) with many steps.
    a, noise = -0.7, torch.ones(1, 1, 1)
    for steps in (4, 200):
        s = FlowEulerSampler(steps, FlowSchedule(shift=2.0))
        out = s.sample(lambda x, t, c, g: a * x, noise, torch.zeros(1)).item()
        assert out == pytest.approx(float(np.prod([1 + a * d for d in s.dts])), rel=1e-5)
    assert out == pytest.approx(np.exp(a), rel=5e-3)


def test_cfg_batches_cond_and_uncond_and_combines():
    w, seen = 4.0, []
    cond, uncond = torch.full((2, 3, 5), 1.0), torch.zeros(2, 3, 5)

    def velocity(x, t, c, g):
        seen.append((x.shape[0], t.shape[0], c.shape[0], g))
        return c[:, :1, :2].expand(-1, x.shape[1], -1) * 0 + c[:, :1, :1] + 0.5  # cond 1.5, uncond 0.5
    noise = torch.zeros(2, 6, 2)
    out = FlowEulerSampler(3).sample(velocity, noise, cond, uncond, guidance=w, mode=GuidanceMode.CFG)
    assert seen == [(4, 4, 4, None)] * 2  # one batched pass per evaluated step
    torch.testing.assert_close(out, torch.full_like(out, 0.5 + w * 1.0))


def test_embedded_guidance_is_passed_and_single_batch():
    got = []

    def velocity(x, t, c, g):
        got.append(g.clone())
        return torch.zeros_like(x)
    FlowEulerSampler(2, CONSISTENCY_100).sample(velocity, torch.zeros(3, 2, 2), torch.zeros(3, 1, 1),
                                                guidance=5.0, mode=GuidanceMode.EMBEDDED)
    assert len(got) == 2 and all(torch.equal(g, torch.full((3,), 5.0)) for g in got)


def test_network_sees_tencents_time_inputs():
    times = []
    FlowEulerSampler(5, CONSISTENCY_100).sample(lambda x, t, c, g: times.append(t[0].item()) or x * 0,
                                                torch.zeros(1, 1, 1), torch.zeros(1))
    np.testing.assert_allclose(times, flow_grid(5, CONSISTENCY_100)[:-1], atol=1e-7)
