"""`LossSurrogate`: l(n), the training loss a model reaches on a random subset of n examples within the budget.

Paper §C: measured at a few subset sizes, fitted in log space, log(l + 1e-10), by a cubic spline (default) or a
line, and read back as l(n) = exp(f(n)). One surrogate belongs to one (model, data, budget) triple.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline

from .io import atomic_write_text, read_json

logger = logging.getLogger(__name__)

EPS = 1e-10
SURROGATE_NAME = "surrogate.json"


@dataclass
class LossSurrogate:
    """Compute-constrained training loss l(n) as a function of the subset size n.

    Args:
        sizes: subset sizes at which the loss was measured (distinct, any order).
        losses: the final training loss measured at each size.
        kind: `"spline"` (cubic spline through the log-losses) or `"loglinear"` (least-squares line).
        cost: compute spent collecting the points, in the budget's unit (for accounting).
    """

    sizes: list[float]
    losses: list[float]
    kind: str = "spline"
    cost: float = 0.0
    held_out_mse: float | None = field(default=None)

    def __post_init__(self):
        if len(self.sizes) != len(self.losses) or len(self.sizes) < 2:
            raise ValueError("LossSurrogate needs at least two (size, loss) points of equal length.")
        if self.kind not in ("spline", "loglinear"):
            raise ValueError(f"LossSurrogate.kind must be 'spline' or 'loglinear', got {self.kind!r}.")
        bad = [(n, v) for n, v in zip(self.sizes, self.losses) if not (math.isfinite(v) and v >= 0 and n > 0)]
        if bad:
            raise ValueError(f"LossSurrogate points must have size > 0 and a finite loss >= 0; bad points: {bad}.")
        order = np.argsort(self.sizes)
        self.sizes = [float(self.sizes[i]) for i in order]
        self.losses = [float(self.losses[i]) for i in order]
        if len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"LossSurrogate sizes must be distinct, got {self.sizes}.")
        self._fit = self._fit_log_curve(np.array(self.sizes), np.log(np.array(self.losses) + EPS), self.kind)
        if self.held_out_mse is None and len(self.sizes) >= 3:
            self.held_out_mse = self.leave_one_out_mse()

    @staticmethod
    def _fit_log_curve(x: np.ndarray, y: np.ndarray, kind: str) -> Callable[[np.ndarray], np.ndarray]:
        if kind == "spline" and len(x) >= 3:
            return CubicSpline(x, y)
        slope, intercept = np.polyfit(x, y, 1)
        return lambda n: slope * np.asarray(n) + intercept

    def __call__(self, n):
        """l(n); sizes outside the measured range are clamped to it (with a warning), never extrapolated."""
        n = np.asarray(n, dtype=np.float64)
        lo, hi = self.sizes[0], self.sizes[-1]
        if np.any((n < lo) | (n > hi)):
            logger.warning(
                "Surrogate queried at subset size(s) outside the measured range [%g, %g]; clamping.", lo, hi
            )
            n = np.clip(n, lo, hi)
        return np.exp(self._fit(n)) - EPS

    def leave_one_out_mse(self) -> float:
        """Mean squared error of l at each interior point when the curve is fitted without it."""
        x, y = np.array(self.sizes), np.array(self.losses)
        errors = []
        for i in range(1, len(x) - 1):  # the end points cannot be predicted without extrapolating
            keep = np.arange(len(x)) != i
            fit = self._fit_log_curve(x[keep], np.log(y[keep] + EPS), self.kind)
            errors.append((float(np.exp(fit(x[i]))) - EPS - y[i]) ** 2)
        return float(np.mean(errors)) if errors else float("nan")

    @classmethod
    def collect(
        cls,
        train_fn: Callable[[int], tuple[float, float]],
        sizes: Sequence[int],
        kind: str = "spline",
        progress: bool = True,
    ) -> LossSurrogate:
        """Measure l at each size. `train_fn(n)` trains a fresh model on a random subset of n examples for the whole
        budget and returns (final training loss, compute spent)."""

        def one_budget(n: int) -> tuple[dict, float]:
            loss, spent = train_fn(n)
            return {None: loss}, spent

        return cls.collect_sweep(one_budget, sizes, kind, progress)[None]

    @classmethod
    def collect_sweep(
        cls,
        train_fn: Callable[[int], tuple[dict, float]],
        sizes: Sequence[int],
        kind: str = "spline",
        progress: bool = True,
    ) -> dict:
        """One surrogate per budget from one set of runs. `train_fn(n)` returns ({budget: training loss}, compute
        spent); every surrogate records the whole cost of the shared runs."""
        from tqdm.auto import tqdm

        losses, cost = {}, 0.0
        for n in tqdm(list(sizes), desc="surrogate", disable=not progress):
            by_budget, spent = train_fn(int(n))
            for budget, loss in by_budget.items():
                losses.setdefault(budget, []).append(loss)
            cost += spent
        surrogates = {
            budget: cls(sizes=[float(n) for n in sizes], losses=values, kind=kind, cost=cost)
            for budget, values in losses.items()
        }
        for budget, surrogate in surrogates.items():
            logger.info(
                "Surrogate%s fitted on %d points; held-out MSE %s; cost %g.",
                "" if budget is None else f" for budget {budget:g}", len(sizes), surrogate.held_out_mse, cost,
            )
        return surrogates

    def to_dict(self) -> dict:
        return {
            "sizes": self.sizes,
            "losses": self.losses,
            "kind": self.kind,
            "cost": self.cost,
            "held_out_mse": self.held_out_mse,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LossSurrogate:
        return cls(**{k: data[k] for k in ("sizes", "losses", "kind", "cost", "held_out_mse") if k in data})

    def save(self, path: str) -> None:
        if os.path.isdir(path):
            path = os.path.join(path, SURROGATE_NAME)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str) -> LossSurrogate:
        if os.path.isdir(path):
            path = os.path.join(path, SURROGATE_NAME)
        return cls.from_dict(read_json(path, what="surrogate"))
