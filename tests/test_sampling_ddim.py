"""DDIM v-prediction sampler: closed-form schedule checks, v identities, oracle-model recovery, CFG maths."""

from __future__ import annotations

import pytest
import torch

from engine.sampling.ddim_vpred import (
    DDIMConfig,
    DDIMVPred,
    rescale_zero_terminal_snr,
    scaled_linear_alphas_cumprod,
    trailing_timesteps,
    v_to_eps,
    v_to_x0,
)
from engine.sampling.guidance import GuidanceConfig, GuidanceMode, combine, guidance_condition


def test_schedule_closed_form():
    cfg = DDIMConfig()
    abar = scaled_linear_alphas_cumprod(cfg)
    raw = scaled_linear_alphas_cumprod(DDIMConfig(rescale_zero_snr=False))
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert torch.allclose(raw, torch.cumprod(1 - betas, 0))
    assert abar[-1] == 0.0  # zero terminal SNR
    assert torch.isclose(abar[0], raw[0], rtol=0, atol=1e-15)  # first entry unchanged
    assert bool((abar[1:] < abar[:-1]).all())
    # the rescale is affine in sqrt(abar): midpoint maps to the midpoint of the affine map
    s, s0, sT = raw.sqrt(), raw[0].sqrt(), raw[-1].sqrt()
    assert torch.allclose(rescale_zero_terminal_snr(raw).sqrt(), (s - sT) * s0 / (s0 - sT))


def test_trailing_spacing():
    assert trailing_timesteps(1000, 25).tolist() == list(range(999, 0, -40))
    assert trailing_timesteps(1000, 100)[:3].tolist() == [999, 989, 979]
    assert trailing_timesteps(1000, 5).tolist() == [999, 799, 599, 399, 199]
    assert trailing_timesteps(1000, 3).tolist() == [999, 666, 332]


def test_v_identities():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g,
                                                                             dtype=torch.float64)
    for ab in (0.0, 0.3, 0.999):
        a, s = ab ** 0.5, (1 - ab) ** 0.5
        z, v = a * x0 + s * eps, a * eps - s * x0
        assert torch.allclose(v_to_x0(z, v, a, s), x0)
        assert torch.allclose(v_to_eps(z, v, a, s), eps)


def test_step_coefficients_match_ddim_formula():
    d = DDIMVPred(DDIMConfig(steps=10))
    ts = trailing_timesteps(1000, 10)
    z, v = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    for i in range(10):
        ab = d.alphas_cumprod[ts[i]]
        ab_prev = d.alphas_cumprod[ts[i + 1]] if i + 1 < 10 else torch.tensor(1.0, dtype=torch.float64)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        want = ab_prev.sqrt() * v_to_x0(z, v, a, s) + (1 - ab_prev).sqrt() * v_to_eps(z, v, a, s)
        got = d.update(z.float(), v.float(), d.indices[i: i + 1])
        assert torch.allclose(got.double(), want, atol=1e-5), i


@pytest.mark.parametrize("steps", [1, 5, 25])
def test_oracle_model_recovers_x0(steps):
    """A model returning the exact v of a known x0 at the current z makes DDIM land on x0."""
    d = DDIMVPred(DDIMConfig(steps=steps))
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 16, 4, generator=g)
    abar = d.alphas_cumprod.float()

    def oracle(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = abar[t.long()].view(-1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        eps = (z - a * x0) / s
        return a * eps - s * x0

    z_T = torch.randn(2, 16, 4, generator=g)
    out = d.sample(d.make_step(oracle, torch.float32), z_T)
    assert torch.allclose(out, x0, atol=1e-4)
    # and a wrong oracle does not (the check can fail)
    bad = d.sample(d.make_step(lambda z, t: oracle(z, t) + 0.1, torch.float32), z_T)
    assert not torch.allclose(bad, x0, atol=1e-2)


def test_cfg_combine_and_condition():
    vc, vu = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(combine(vc, vu, 5.0), vu + 5.0 * (vc - vu), atol=1e-6)
    assert torch.allclose(combine(vc, vu, 1.0), vc)
    cond = torch.randn(1, 7, 4)
    both = guidance_condition(cond, GuidanceConfig(GuidanceMode.BATCHED))
    assert both.shape == (2, 7, 4) and torch.equal(both[0], cond[0]) and not both[1].any()
    assert guidance_condition(cond, GuidanceConfig(GuidanceMode.FOLDED)) is cond


def test_config_validation():
    with pytest.raises(ValueError):
        DDIMConfig(steps=0)
    with pytest.raises(ValueError):
        DDIMConfig(beta_start=0.02, beta_end=0.01)
