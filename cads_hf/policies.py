"""Selection policies p(m | s): which data a sampled selection keeps, and the REINFORCE score of a sample.

Pure torch, no Trainer. Both policies hold their parameters `s` in a float64 leaf tensor so that a plain torch
optimizer can update them; `project_()` keeps them in bounds after each step.
"""

from __future__ import annotations

import math

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails (Phi(b) - Phi(a) = Phi(-a) - Phi(-b))."""
    flip = a > 0
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    return log_hi + torch.log1p(-torch.exp(torch.special.log_ndtr(lo) - log_hi))


class SelectionPolicy:
    """A distribution over selections with parameters `s` in [`low`, `high`]."""

    def __init__(self, s: torch.Tensor, low: float, high: float):
        self.low, self.high = low, high
        self.s = s.detach().to(torch.float64).clamp(low, high).requires_grad_(True)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, samples: torch.Tensor) -> torch.Tensor:
        """log p(sample_k | s) for each of the K samples, differentiable with respect to `s`."""
        raise NotImplementedError

    def subset_sizes(self, samples: torch.Tensor) -> torch.Tensor:
        """|m_k|: the number of examples each sampled selection keeps."""
        raise NotImplementedError

    def score(self, samples: torch.Tensor) -> torch.Tensor:
        """grad_s log p(sample_k | s), shape (K, len(s)), by autograd through `log_prob`.

        The coordinates of a sample are independent, so d log p_k / d s_j involves only sample k's own r_kj: one
        backward through s repeated per sample gives all K rows (a backward per sample cost 4% of a search step)."""
        s = self.s.detach().expand_as(samples).clone().requires_grad_(True)
        saved, self.s = self.s, s
        try:
            return torch.autograd.grad(self.log_prob(samples).sum(), s)[0]
        finally:
            self.s = saved

    @torch.no_grad()
    def project_(self) -> None:
        self.s.clamp_(self.low, self.high)

    def state_dict(self) -> dict:
        return {"s": self.s.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.s.copy_(state["s"])


class TruncatedGaussianPolicy(SelectionPolicy):
    """CADS-S (paper eq. 11): r_j ~ N(s_j, sigma^2) truncated to [0, 1], independently per source.

    A ratio r_j keeps the fraction r_j of source j, so |D_r| = sum_j r_j |D_j|. sigma anneals as
    sigma_t = max(sigma_0 * decay^t, sigma_min).
    """

    def __init__(
        self,
        source_sizes: list[int] | torch.Tensor,
        init: float = 0.5,
        sigma_init: float = 0.1,
        sigma_decay: float = 0.99,
        sigma_min: float = 0.0,
        min_ratio: float = 0.0,
    ):
        sizes = torch.as_tensor(source_sizes, dtype=torch.float64)
        super().__init__(torch.full_like(sizes, init), low=min_ratio, high=1.0)
        self.source_sizes = sizes
        self.sigma_init, self.sigma_decay, self.sigma_min = sigma_init, sigma_decay, sigma_min
        self.sigma = sigma_init

    def anneal(self, outer_step: int) -> None:
        self.sigma = max(self.sigma_init * self.sigma_decay**outer_step, self.sigma_min)

    def _bounds(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (0.0 - s) / self.sigma, (1.0 - s) / self.sigma

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # Inverse-CDF sampling, done in log space so that it stays exact when sigma is tiny.
        a, b = self._bounds(self.s.detach())
        u = torch.rand((num_samples, len(self.s)), generator=generator, dtype=torch.float64)
        log_cdf_a = torch.special.log_ndtr(a)
        log_mass = _log_ndtr_diff(a, b)
        log_target = torch.logaddexp(log_cdf_a.expand_as(u), torch.log(u.clamp_min(1e-300)) + log_mass)
        x = torch.special.ndtri(torch.exp(log_target).clamp(1e-300, 1 - 1e-16))
        return (self.s.detach() + self.sigma * x).clamp(0.0, 1.0)

    def log_prob(self, samples: torch.Tensor) -> torch.Tensor:
        a, b = self._bounds(self.s)
        z = (samples - self.s) / self.sigma
        per_source = -0.5 * z**2 - _LOG_SQRT_2PI - math.log(self.sigma) - _log_ndtr_diff(a, b)
        return per_source.sum(-1)

    def subset_sizes(self, samples: torch.Tensor) -> torch.Tensor:
        return samples @ self.source_sizes

    def state_dict(self) -> dict:
        return {**super().state_dict(), "sigma": self.sigma}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.sigma = state["sigma"]


class BernoulliPolicy(SelectionPolicy):
    """CADS-E and Bilevel-CADS (paper eq. 3): m_i ~ Bernoulli(s_i), independently per example.

    s stays in [eps, 1 - eps] so that the score m/s - (1 - m)/(1 - s) (eq. 10) is finite.
    """

    def __init__(self, num_examples: int, init: float = 0.5, eps: float = 1e-3):
        super().__init__(torch.full((num_examples,), float(init), dtype=torch.float64), low=eps, high=1.0 - eps)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand((num_samples, len(self.s)), generator=generator, dtype=torch.float64)
        return (u < self.s.detach()).to(torch.float64)

    def log_prob(self, samples: torch.Tensor) -> torch.Tensor:
        return (samples * torch.log(self.s) + (1 - samples) * torch.log1p(-self.s)).sum(-1)

    def score(self, samples: torch.Tensor) -> torch.Tensor:
        # Closed form (eq. 10): autograd over one score per example would cost K backward passes of size N.
        s = self.s.detach()
        return samples / s - (1 - samples) / (1 - s)

    def subset_sizes(self, samples: torch.Tensor) -> torch.Tensor:
        return samples.sum(-1)
