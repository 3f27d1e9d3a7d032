import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import truncnorm

from cads_hf.objective import reinforce_gradient
from cads_hf.policies import BernoulliPolicy, TruncatedGaussianPolicy


@pytest.mark.parametrize("sigma", [0.5, 0.1, 0.02])
def test_truncated_gaussian_log_prob_matches_scipy(sigma):
    policy = TruncatedGaussianPolicy([10, 20, 30, 40], init=0.5, sigma_init=sigma)
    with torch.no_grad():
        policy.s.copy_(torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=torch.float64))
    samples = policy.sample(50, torch.Generator().manual_seed(0))
    s = policy.s.detach().numpy()
    expected = truncnorm.logpdf(samples.numpy(), (0 - s) / sigma, (1 - s) / sigma, loc=s, scale=sigma).sum(-1)
    np.testing.assert_allclose(policy.log_prob(samples).detach().numpy(), expected, atol=1e-6, rtol=0)


def test_truncated_gaussian_score_matches_finite_differences():
    policy = TruncatedGaussianPolicy([5, 5, 5], init=0.3, sigma_init=0.2)
    with torch.no_grad():
        policy.s.copy_(torch.tensor([0.05, 0.5, 0.93], dtype=torch.float64))
    samples = policy.sample(4, torch.Generator().manual_seed(1))
    score = policy.score(samples)
    h = 1e-6
    for j in range(3):
        shift = torch.zeros(3, dtype=torch.float64)
        shift[j] = h
        with torch.no_grad():
            policy.s += shift
            up = policy.log_prob(samples)
            policy.s -= 2 * shift
            down = policy.log_prob(samples)
            policy.s += shift
        np.testing.assert_allclose(score[:, j].numpy(), ((up - down) / (2 * h)).numpy(), rtol=1e-5, atol=1e-6)


def test_truncated_gaussian_samples_follow_scipy_distribution():
    from scipy.stats import kstest

    policy = TruncatedGaussianPolicy([1], init=0.9, sigma_init=0.3)
    samples = policy.sample(4000, torch.Generator().manual_seed(2))[:, 0].numpy()
    a, b = (0 - 0.9) / 0.3, (1 - 0.9) / 0.3
    assert kstest(samples, truncnorm(a, b, loc=0.9, scale=0.3).cdf).pvalue > 0.01


@settings(max_examples=60, deadline=None)
@given(
    s=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
    sigma=st.floats(1e-4, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_truncated_gaussian_samples_stay_in_unit_interval(s, sigma, seed):
    policy = TruncatedGaussianPolicy([3] * len(s), sigma_init=sigma)
    with torch.no_grad():
        policy.s.copy_(torch.tensor(s, dtype=torch.float64))
    samples = policy.sample(16, torch.Generator().manual_seed(seed))
    assert torch.isfinite(samples).all()
    assert (samples >= 0).all() and (samples <= 1).all()
    assert torch.isfinite(policy.log_prob(samples)).all()


def test_sigma_anneals_per_outer_step_with_floor():
    policy = TruncatedGaussianPolicy([1], sigma_init=0.1, sigma_decay=0.99, sigma_min=0.01)
    policy.anneal(10)
    assert policy.sigma == pytest.approx(0.1 * 0.99**10)
    policy.anneal(10_000)
    assert policy.sigma == 0.01


def test_bernoulli_score_is_eq_10_and_matches_autograd():
    policy = BernoulliPolicy(5, init=0.3)
    samples = policy.sample(3, torch.Generator().manual_seed(0))
    s = policy.s.detach()
    expected = samples / s - (1 - samples) / (1 - s)
    torch.testing.assert_close(policy.score(samples), expected)
    auto = torch.stack([torch.autograd.grad(lp, policy.s, retain_graph=True)[0] for lp in policy.log_prob(samples)])
    torch.testing.assert_close(auto, expected)


def _optimize(policy, cost_fn, steps, lr=0.05, k=8, seed=0):
    optimizer = torch.optim.Adam([policy.s], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        samples = policy.sample(k, generator)
        policy.s.grad = reinforce_gradient(cost_fn(samples), policy.score(samples))
        optimizer.step()
        policy.project_()
        if hasattr(policy, "anneal"):
            policy.anneal(step + 1)


def test_reinforce_with_self_critical_baseline_finds_known_optimum():
    target = torch.tensor([0.15, 0.8, 0.5], dtype=torch.float64)
    policy = TruncatedGaussianPolicy([1, 1, 1], init=0.5, sigma_init=0.2, sigma_decay=0.995, sigma_min=0.02)
    _optimize(policy, lambda r: ((r - target) ** 2).sum(-1), steps=600)
    np.testing.assert_allclose(policy.s.detach().numpy(), target.numpy(), atol=0.06)


def test_reinforce_bernoulli_keeps_good_items():
    good = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.float64)
    policy = BernoulliPolicy(6, init=0.5)
    _optimize(policy, lambda m: -(m * (2 * good - 1)).sum(-1), steps=300)
    s = policy.s.detach()
    assert s[good == 1].min() > 0.9 and s[good == 0].max() < 0.1
