"""Train a fresh model on a fixed selection for exactly a compute budget, with plain `transformers.Trainer`.

This is the run every comparison uses: the learned mixture, the static baselines, the surrogate's subset runs and
Bilevel-CADS's inner runs all go through it, so they all spend the budget the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from .budget import ComputeBudget
from .sources import SourceMixtureSampler, SourceSet, read_rows


class SequenceDataset(Dataset):
    """A dataset read in a given order: row i is `dataset[order[i]]`.

    Materializing the sampler's sequence lets a plain Trainer (with sequential sampling, one epoch) consume exactly
    the budget, and lets accelerate shard it across processes like any dataset.
    """

    def __init__(self, dataset, order: Sequence[int]):
        self.dataset, self.order = dataset, np.asarray(order, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int):
        return self.dataset[int(self.order[index])]

    def __getitems__(self, indices: Sequence[int]) -> list:
        return read_rows(self.dataset, self.order[np.asarray(indices, dtype=np.int64)])


def plain_training_args(args: TrainingArguments, **overrides) -> TrainingArguments:
    """The `TrainingArguments` part of `args` (a `CADSConfig` or any subclass), with overrides."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    values.update(overrides)
    return TrainingArguments(**values)


def inner_run_overrides(output_dir: str) -> dict:
    """Arguments of a run nested inside a search (surrogate points, bilevel inner runs): its own folder, no
    checkpoints, no reporting, no progress bar."""
    return {
        "output_dir": output_dir,
        "save_strategy": "no",
        "report_to": "none",
        "push_to_hub": False,
        "logging_strategy": "no",
        "log_level": "error",
    }


def example_lengths(source_set: SourceSet) -> np.ndarray:
    """Tokens per example: a `length` column, else the length of `input_ids` (read row by row for plain datasets)."""
    lengths = []
    for source in source_set.sources:
        columns = getattr(source, "column_names", None)
        if columns is not None and "length" in columns:
            lengths.append(np.asarray(source["length"]))
        elif columns is not None and "input_ids" in columns:
            lengths.append(np.array([len(ids) for ids in source["input_ids"]]))
        else:
            rows = (source[i] for i in range(len(source)))
            lengths.append(np.array([row["length"] if "length" in row else len(row["input_ids"]) for row in rows]))
    return np.concatenate(lengths)


def budget_sequence(
    source_set: SourceSet,
    ratios: Sequence[float],
    budget: ComputeBudget,
    seed: int,
) -> SourceMixtureSampler:
    """The sampler that spends `budget` on D_r."""
    if budget.unit == "tokens":
        return SourceMixtureSampler(
            source_set.sizes, ratios, seed=seed, lengths=example_lengths(source_set), num_tokens=budget.amount
        )
    return SourceMixtureSampler(source_set.sizes, ratios, num_samples=budget.num_samples(), seed=seed)


@contextlib.contextmanager
def long_lived_objects_frozen():
    """Leave the objects alive now out of garbage collection while the block runs (unless the caller froze some).

    `Trainer.train` starts with a full collection (accelerate's `free_memory`). Over the ~500k objects that importing
    torch and transformers creates it takes ~0.3 s, as long as a whole proxy run at a small budget; those objects
    outlive the run, so scanning them finds nothing. The run's own garbage is still collected.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def train_for_budget(
    model,
    dataset,
    order: Sequence[int],
    args: TrainingArguments,
    args_overrides: dict | None = None,
    **trainer_kwargs,
) -> Trainer:
    """Train `model` with a plain Trainer on `dataset` read in `order`, one pass: exactly len(order) examples."""
    plain_args = plain_training_args(
        args,
        **(args_overrides or {}),
        # One sequential pass with every batch kept: exactly len(order) examples, whatever the user's args say.
        train_sampling_strategy="sequential",
        num_train_epochs=1,
        max_steps=-1,
        dataloader_drop_last=False,
    )
    trainer = Trainer(model=model, args=plain_args, train_dataset=SequenceDataset(dataset, order), **trainer_kwargs)
    with long_lived_objects_frozen():
        trainer.train()
    return trainer


def train_on_mixture(
    model,
    sources: Mapping[str, Dataset] | SourceSet,
    ratios: Sequence[float] | Mapping[str, float],
    budget: ComputeBudget,
    args: TrainingArguments,
    **trainer_kwargs,
) -> Trainer:
    """Train a fresh `model` on D_r (the fraction r_j of each source) for exactly `budget`.

    `ratios` is a sequence in source order or a mapping from source name to ratio (for example `Mixture.ratios`).
    """
    source_set = sources if isinstance(sources, SourceSet) else SourceSet(sources)
    if isinstance(ratios, Mapping):
        missing = [name for name in source_set.names if name not in ratios]
        if missing:
            raise ValueError(f"No ratio given for source(s) {missing}.")
        ratios = [ratios[name] for name in source_set.names]
    sampler = budget_sequence(source_set, ratios, budget, seed=args.seed)
    return train_for_budget(model, source_set, list(sampler), args, **trainer_kwargs)


def train_on_examples(
    model,
    dataset,
    example_ids: Sequence[int],
    budget: ComputeBudget,
    args: TrainingArguments,
    **trainer_kwargs,
) -> Trainer:
    """Train `model` (or `model_init=` in `trainer_kwargs`) on the examples `example_ids` of `dataset` for exactly
    `budget`: reshuffled passes over them, cut where the budget is spent (`SourceMixtureSampler` with one source)."""
    if len(example_ids) == 0:
        raise ValueError("No example to train on: example_ids is empty.")
    view = SequenceDataset(dataset, example_ids)
    sequence = budget_sequence(SourceSet({"examples": view}), [1.0], budget, seed=args.seed)
    return train_for_budget(model, view, list(sequence), args, **trainer_kwargs)
