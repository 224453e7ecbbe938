"""Device log-space blending (engine/texture/blend_gpu.py) against the host references in blend.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.texture.blend import blend_views, blend_views_ref
from engine.texture.blend_gpu import blend_views_gpu, view_priors
from engine.texture.views import camera_rig


def _inputs(k: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    colours = rng.random((k, h, w, 3)).astype(np.float32)
    inc = rng.random((k, h, w)).astype(np.float32)
    inc[rng.random((k, h, w)) < 0.5] = 0.0                                  # unseen in many views
    inc[:, :2, :2] = 0.0                                                     # unseen by all views
    priors = np.asarray([c.prior_weight for c in camera_rig()][:k], np.float32)
    return colours, inc, priors


def _packed(colours: np.ndarray, inc: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    k = inc.shape[0]
    return torch.from_numpy(colours.reshape(k, -1, 3)), torch.from_numpy(inc.reshape(k, -1))


@pytest.mark.filterwarnings("ignore:invalid value encountered")        # blend.py: 0 * log(0) at alpha 0
@pytest.mark.parametrize("alpha", [0.0, 1.0, 4.0, 60.0])
def test_matches_host_blend(alpha):
    colours, inc, priors = _inputs(10, 12, 16, 1)
    want, want_known = blend_views(colours, inc, priors, alpha)
    got, known = blend_views_gpu(*_packed(colours, inc), torch.from_numpy(priors), alpha)
    assert np.array_equal(known.numpy(), want_known.reshape(-1))
    assert np.abs(got.numpy() - want.reshape(-1, 3)).max() < 2e-5
    assert not known[0] and float(got[0].abs().sum()) == 0.0                # unseen texel: 0, unknown


def test_matches_linear_space_reference():
    colours, inc, priors = _inputs(10, 9, 7, 2)
    want, want_known = blend_views_ref(colours, inc, priors, 3.0, eps=1e-6)
    got, known = blend_views_gpu(*_packed(colours, inc), priors.tolist(), 3.0, eps=1e-6)
    assert np.array_equal(known.numpy(), want_known.reshape(-1))
    assert np.abs(got.numpy() - want.reshape(-1, 3)).max() < 1e-5


def test_large_alpha_stays_finite_and_picks_the_most_frontal_view():
    inc = torch.tensor([[0.10, 0.5], [0.11, 0.0]])                           # [K=2, T=2]
    colours = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [float("nan")] * 3]])
    got, known = blend_views_gpu(colours, inc, torch.ones(2), alpha=400.0, eps=0.0)
    assert torch.isfinite(got).all() and known.all()                         # NaN where unseen: ignored
    assert torch.allclose(got[0], torch.tensor([0.0, 0, 1.0]), atol=1e-6)    # I^400 ratio ~ 3e-17
    assert torch.allclose(got[1], torch.tensor([0.0, 1.0, 0]))


def test_view_priors_follow_the_paper():
    p = view_priors(camera_rig(), "cpu")
    assert p.tolist() == pytest.approx([1.0, 0.1, 0.01, 0.001, 1.0, 0.001, 0.01, 0.1, 0.3, 0.3])


def test_bad_inputs():
    c, i = torch.zeros(3, 5, 3), torch.zeros(3, 5)
    with pytest.raises(ConfigError):
        blend_views_gpu(c, i[:, :4], torch.ones(3))
    with pytest.raises(ConfigError):
        blend_views_gpu(c, i, torch.ones(2))
    with pytest.raises(ConfigError):
        blend_views_gpu(c, i, torch.ones(3), alpha=-1.0)
    with pytest.raises(ConfigError):
        blend_views_gpu(c, i, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ConfigError):
        blend_views_gpu(c, i, torch.ones(3), alpha=math.inf)


@pytest.mark.gpu
def test_cuda_matches_cpu_realistic():
    gen = torch.Generator().manual_seed(3)
    k, t = 10, 2_000_000
    colours = torch.rand(k, t, 3, generator=gen)
    inc = torch.rand(k, t, generator=gen) * (torch.rand(k, t, generator=gen) > 0.6)
    priors = view_priors(camera_rig(), "cpu")
    want, want_known = blend_views_gpu(colours, inc, priors, 4.0)
    got, known = blend_views_gpu(colours.cuda(), inc.cuda(), priors.cuda(), 4.0)
    assert torch.equal(known.cpu(), want_known)
    assert torch.allclose(got.cpu(), want, atol=1e-5)
