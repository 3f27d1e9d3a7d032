"""`ExampleSelection`: the examples of one dataset that a search chose for a compute budget, as a small artifact.

The example-level counterpart of [`Mixture`]: CADS-E, Bilevel-CADS and PBCS learn one score s_i per example, and
their result is the subset drawn from those scores (a Bernoulli sample, or the top k) together with the budget a
fresh model must spend on it. On disk it is one readable `example_selection.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from .artifact import HubArtifact
from .final_training import train_on_examples
from .policies import BernoulliPolicy

SELECTION_NAME = "example_selection.json"
STRATEGIES = ("sample", "top_k")


@dataclass
class ExampleSelection(HubArtifact):
    """The examples to train on, by index into one dataset, for exactly `compute_budget`.

    Args:
        example_ids: indices of the chosen examples in the dataset (stored sorted, without repeats).
        dataset_size: number of examples of the dataset the ids index (checked before training).
        scores: the learned inclusion probability s_i of every example, when the selection came from scores.
        strategy: how `example_ids` were drawn from `scores`: `"sample"` (m_i ~ Bernoulli(s_i)) or `"top_k"`.
        method: the search that produced it (`"cads-e"`, `"bilevel-cads"`, `"pbcs"`, `"random"`...).
        compute_budget, budget_unit, seed, ...: keyword-only, see [`HubArtifact`]; `seed` is the seed of the draw.
    """

    example_ids: list[int]
    dataset_size: int
    scores: list[float] | None = None
    strategy: str | None = None
    method: str | None = None

    file_name: ClassVar[str] = SELECTION_NAME
    required_fields: ClassVar[tuple[str, ...]] = ("example_ids", "dataset_size", "compute_budget")
    description: ClassVar[str] = "example selection"

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.dataset_size, (int, np.integer)) and self.dataset_size >= 1):
            raise ValueError(f"dataset_size must be a positive integer, got {self.dataset_size!r}.")
        ids = np.asarray(self.example_ids)
        if ids.ndim != 1 or len(ids) == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError("example_ids must be a non-empty list of integer example indices.")
        if ids.min() < 0 or ids.max() >= self.dataset_size:
            raise ValueError(f"example_ids must lie in [0, {self.dataset_size}), got {ids.min()}..{ids.max()}.")
        unique = np.unique(ids)
        if len(unique) != len(ids):
            raise ValueError(f"example_ids repeat {len(ids) - len(unique)} example(s); each example is chosen once.")
        self.example_ids = unique.tolist()
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float64)
            if scores.shape != (self.dataset_size,) or not np.all((scores >= 0) & (scores <= 1)):
                raise ValueError(f"scores must hold {self.dataset_size} probabilities in [0, 1], one per example.")
            self.scores = scores.tolist()
        if self.strategy not in (None, *STRATEGIES):
            raise ValueError(f"strategy must be one of {STRATEGIES} or None, got {self.strategy!r}.")

    def __len__(self) -> int:
        return len(self.example_ids)

    @classmethod
    def from_scores(
        cls,
        scores: torch.Tensor | Sequence[float],
        compute_budget: float,
        budget_unit: str = "samples",
        strategy: str = "sample",
        num_examples: int | None = None,
        seed: int = 0,
        **metadata,
    ) -> ExampleSelection:
        """Draw the subset from learned scores s.

        `"sample"` keeps each example i with probability s_i (the policy itself, eq. 3), seeded by `seed`;
        `"top_k"` keeps the `num_examples` highest scores (default: round(sum s), the expected sample size).
        """
        s = torch.as_tensor(scores, dtype=torch.float64).detach().flatten()
        if strategy == "sample":
            if num_examples is not None:
                raise ValueError("num_examples fixes the size of a 'top_k' selection; a sample's size is random.")
            policy = BernoulliPolicy(len(s))
            policy.load_state_dict({"s": s})
            mask = policy.sample(1, torch.Generator().manual_seed(seed))[0]
            ids = mask.nonzero().flatten()
            if len(ids) == 0:
                raise ValueError("Sampling the scores selected no example; use strategy='top_k' for a fixed size.")
        elif strategy == "top_k":
            k = int(round(float(s.sum()))) if num_examples is None else int(num_examples)
            if not 1 <= k <= len(s):
                raise ValueError(f"num_examples must be in [1, {len(s)}], got {k}.")
            # A stable sort keeps ties in index order, so the choice is deterministic.
            ids = torch.sort(-s, stable=True).indices[:k]
        else:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
        return cls(
            example_ids=ids.tolist(),
            dataset_size=len(s),
            compute_budget=compute_budget,
            budget_unit=budget_unit,
            scores=s.tolist(),
            strategy=strategy,
            seed=seed,
            **metadata,
        )

    def model_card(self) -> str:
        """A README card: YAML metadata (budget, unit, method, dataset and subset sizes, base model, tags) and prose."""
        from huggingface_hub import ModelCard, ModelCardData

        data = ModelCardData(
            tags=["cads", "data-selection", "coreset"],
            base_model=self.base_model,
            compute_budget=self.compute_budget,
            budget_unit=self.budget_unit,
            method=self.method,
            dataset_size=self.dataset_size,
            selected_examples=len(self),
        )
        content = (
            f"---\n{data.to_yaml()}\n---\n\n"
            f"# Learned example selection ({self.method or 'CADS'})\n\n"
            f"{len(self)} of {self.dataset_size} examples chosen by [cads_hf](https://github.com/) for a compute budget "
            f"of {self.compute_budget:g} {self.budget_unit}: train on them for exactly that budget. The ids index the "
            f"dataset's rows in order; they are in `{SELECTION_NAME}`.\n\n"
            "```python\nfrom cads_hf import ExampleSelection\n"
            "selection = ExampleSelection.from_pretrained(\"<this repo>\")\n```\n"
        )
        return str(ModelCard(content))


def train_on_selection(
    model, dataset, selection: ExampleSelection, args: TrainingArguments, **trainer_kwargs
) -> Trainer:
    """Train a fresh `model` on `selection` of `dataset` for exactly the selection's budget."""
    if len(dataset) != selection.dataset_size:
        raise ValueError(
            f"The selection indexes a dataset of {selection.dataset_size} examples, but this one has {len(dataset)}."
        )
    return train_on_examples(model, dataset, selection.example_ids, selection.budget, args, **trainer_kwargs)
