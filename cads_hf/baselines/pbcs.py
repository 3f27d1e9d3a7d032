"""PBCS, Probabilistic Bilevel Coreset Selection (Zhou et al., ICML 2022), as a baseline for CADS.

The same policy-gradient search as Bilevel-CADS, with the coreset size fixed: after every step s is projected onto
{sum_i s_i = k, 0 <= s_i <= 1}, so a sampled coreset has k examples in expectation. Each sampled coreset trains a
fresh model for the same budget C as every other method (a compute-matched comparison); its validation loss is the
cost, and REINFORCE uses the mean cost of the K samples as baseline (PBCS divides the sum by K - 1 rather than K, a
constant factor that Adam's normalization makes immaterial).
"""

from __future__ import annotations

import torch

from ..config import CADSConfig
from ..policies import BernoulliPolicy
from .bilevel import BilevelCADS


def project_to_size(
    s: torch.Tensor, k: float, low: float = 0.0, high: float = 1.0, tol: float = 1e-9, max_iter: int = 200
) -> torch.Tensor:
    """Euclidean projection of `s` onto {sum p = k, low <= p <= high}: p_i = clip(s_i - lam, low, high).

    sum_i clip(s_i - lam) falls monotonically from n * high to n * low as lam goes from min(s) - high to
    max(s) - low, so bisection on the shift lam finds the one where it equals k. (The PBCS code projects onto
    sum <= k and leaves s unshifted below k; here the size is fixed, as a coreset of size k.)
    """
    s = s.detach().to(torch.float64)
    n = len(s)
    if not n * low <= k <= n * high:
        raise ValueError(f"A size of {k} is out of reach for {n} scores in [{low}, {high}].")
    lo, hi = float(s.min()) - high, float(s.max()) - low
    for _ in range(max_iter):
        lam = 0.5 * (lo + hi)
        total = float((s - lam).clamp(low, high).sum())
        if abs(total - k) <= tol:
            break
        if total > k:
            lo = lam
        else:
            hi = lam
    return (s - lam).clamp(low, high)


class PBCS(BilevelCADS):
    """PBCS with a coreset of `coreset_size` examples; the arguments and the `history` are those of [`BilevelCADS`].

    s starts at k / n for every example (feasible, as in PBCS) instead of `args.ratio_init`. The scores stay in
    [eps, 1 - eps] with eps <= 1e-3 small enough for k to stay reachable, so the REINFORCE score stays finite.
    """

    method = "pbcs"

    def __init__(self, model_init, dataset, eval_dataset, args: CADSConfig, coreset_size: int, **trainer_kwargs):
        if not 0 < coreset_size < len(dataset):
            raise ValueError(f"coreset_size must be in (0, {len(dataset)}), got {coreset_size}.")
        self.coreset_size = coreset_size
        super().__init__(model_init, dataset, eval_dataset, args, **trainer_kwargs)

    def _make_policy(self) -> BernoulliPolicy:
        n, k = len(self.dataset), self.coreset_size
        return BernoulliPolicy(n, init=k / n, eps=min(1e-3, 0.5 * k / n, 0.5 * (n - k) / n))

    def _project(self) -> None:
        with torch.no_grad():
            self.policy.s.copy_(project_to_size(self.policy.s, self.coreset_size, self.policy.low, self.policy.high))

    def search_config(self) -> dict:
        return {**super().search_config(), "coreset_size": self.coreset_size}
