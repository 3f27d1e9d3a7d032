"""`ComputeBudget`: how much training the final run may do, and how to account for it."""

from __future__ import annotations

import math
from dataclasses import dataclass

UNITS = ("samples", "tokens")


@dataclass(frozen=True)
class ComputeBudget:
    """A compute budget C in `unit`s: `"samples"` (one forward+backward of one example) or `"tokens"`.

    For a subset of n examples, a budget of C samples is C / n epochs (paper §4.3: K = C / |m|).
    """

    amount: float
    unit: str = "samples"

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"budget unit must be one of {UNITS}, got {self.unit!r}.")
        if not (isinstance(self.amount, (int, float)) and math.isfinite(self.amount) and self.amount > 0):
            raise ValueError(f"compute_budget must be a positive finite number, got {self.amount!r}.")

    def num_samples(self, mean_tokens_per_example: float | None = None) -> int:
        """Examples the budget pays for; a token budget needs the mean length of the examples it will see."""
        if self.unit == "samples":
            return int(self.amount)
        if not mean_tokens_per_example or mean_tokens_per_example <= 0:
            raise ValueError("A token budget needs the mean number of tokens per example to count examples.")
        return int(self.amount // mean_tokens_per_example)

    def epochs(self, subset_size: float, mean_tokens_per_example: float | None = None) -> float:
        """Passes over a subset of `subset_size` examples that the budget pays for."""
        if subset_size <= 0:
            raise ValueError(f"subset_size must be positive, got {subset_size}.")
        return self.num_samples(mean_tokens_per_example) / subset_size

    def check_covers_batch(self, global_batch_size: int, mean_tokens_per_example: float | None = None) -> None:
        """Reject a budget too small for a single optimizer step, before any training starts."""
        samples = self.num_samples(mean_tokens_per_example)
        if samples < global_batch_size:
            raise ValueError(
                f"compute_budget={self.amount:g} {self.unit} pays for {samples} examples, fewer than one global "
                f"batch of {global_batch_size} (per-device batch x processes x gradient accumulation); "
                "raise compute_budget or lower the batch size."
            )
