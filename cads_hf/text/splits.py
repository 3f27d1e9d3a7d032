"""Deterministic train / validation / test split of a (tokenized) dataset."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence

import datasets
import numpy as np

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")


def split_dataset(
    dataset: datasets.Dataset,
    sizes: Sequence[int] | None = None,
    ratios: Sequence[float] = (0.9, 0.05, 0.05),
    seed: int = 0,
) -> datasets.DatasetDict:
    """Shuffle and split into ``train``/``validation``/``test``.

    ``sizes`` gives exact (train, validation, test) counts; otherwise ``ratios`` are used, with at
    least one example in every split whose ratio is positive.
    """
    n = len(dataset)
    if sizes is not None:
        counts = list(sizes)
        if len(counts) != 3 or any(not isinstance(c, numbers.Integral) or c < 0 for c in counts):
            raise ValueError(f"sizes must be three non-negative counts (train, validation, test), got {sizes}")
        if sum(counts) > n:
            raise ValueError(f"sizes {tuple(counts)} need {sum(counts)} examples but the dataset has {n}")
        if sum(counts) < n:
            logger.info("split_dataset: %d of %d examples fall outside the requested sizes", n - sum(counts), n)
    else:
        if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
            raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
        held_out = [max(1, round(n * r)) if r > 0 else 0 for r in ratios[1:]]
        counts = [n - sum(held_out), *held_out]
        if counts[0] < (1 if ratios[0] > 0 else 0):
            raise ValueError(f"cannot split {n} examples with ratios {tuple(ratios)}: too few examples")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *counts])
    return datasets.DatasetDict(
        {split: dataset.select(order[bounds[i] : bounds[i + 1]]) for i, split in enumerate(SPLIT_NAMES)}
    )
