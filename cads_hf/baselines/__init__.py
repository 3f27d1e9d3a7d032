"""Baselines CADS is compared with: the exact bilevel search (Bilevel-CADS), PBCS, and static selections."""

from .bilevel import BilevelCADS
from .pbcs import PBCS, project_to_size
from .static import (
    BaselineRun,
    SourceComparison,
    best_single_source,
    full_dataset,
    random_subset,
    uniform_mixture,
)

__all__ = [
    "BaselineRun",
    "BilevelCADS",
    "PBCS",
    "SourceComparison",
    "best_single_source",
    "full_dataset",
    "project_to_size",
    "random_subset",
    "uniform_mixture",
]
