"""Static baselines: fixed selections, each trained by a fresh model for exactly the compute budget.

Random subset of a given size, a uniform mixture (the same fraction of every source; 1 = all data), each source
alone (the best one chosen on validation loss), and the full dataset. They spend the budget through the same
`train_on_mixture` / `train_on_examples` path as the learned selections, so every comparison is compute-matched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from transformers import EvalPrediction, Trainer

from ..budget import ComputeBudget
from ..config import CADSConfig
from ..evaluation import load_metric
from ..final_training import train_on_examples
from ..final_training import train_on_mixture
from ..sources import SourceSet


@dataclass
class BaselineRun:
    """One baseline's trained model and its results.

    `metrics` holds what `Trainer.evaluate` reports on the validation set (`eval_loss`, and `eval_accuracy` for a
    classifier) and `train_samples`, the examples the run trained on. `trainer` is None for the runs that lost in
    `best_single_source` (freed as it goes).
    """

    name: str
    metrics: dict[str, float]
    trainer: Trainer | None = None
    example_ids: list[int] | None = None


@dataclass
class SourceComparison:
    """Every source trained alone for the budget; `best` has the lowest validation loss and keeps its trainer."""

    best: str
    runs: dict[str, BaselineRun]

    @property
    def best_run(self) -> BaselineRun:
        return self.runs[self.best]


def _argmax_logits(logits, labels):
    # Keep only predicted classes: gathering full logits of a language model would not fit in memory.
    logits = logits[0] if isinstance(logits, tuple) else logits
    return logits.argmax(-1)


def _accuracy(prediction: EvalPrediction) -> dict[str, float]:
    """`compute_metrics`: the shipped accuracy metric when there is one predicted class per example (a classifier),
    nothing for token predictions."""
    predictions, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
    if predictions.ndim != 1 or predictions.shape != labels.shape:
        return {}
    return load_metric("accuracy").compute(predictions=predictions, references=labels)


def _evaluated_run(name: str, trainer: Trainer, eval_dataset, **extra) -> BaselineRun:
    metrics = trainer.evaluate(eval_dataset)
    metrics["train_samples"] = len(trainer.train_dataset)  # one sequential pass over the budget's sequence
    return BaselineRun(name=name, metrics=metrics, trainer=trainer, **extra)


def _trainer_kwargs(args: CADSConfig, name: str, trainer_kwargs: dict) -> dict:
    """Each baseline trains in its own folder under `args.output_dir` and reports accuracy, unless the caller
    brings its own `compute_metrics` (which then sees the full logits)."""
    accuracy = (
        {}
        if "compute_metrics" in trainer_kwargs
        else {"compute_metrics": _accuracy, "preprocess_logits_for_metrics": _argmax_logits}
    )
    return {"args_overrides": {"output_dir": os.path.join(args.output_dir, name)}, **accuracy, **trainer_kwargs}


def _budget(args: CADSConfig) -> ComputeBudget:
    return ComputeBudget(args.compute_budget, args.budget_unit)


def random_subset(
    model_init: Callable, dataset, eval_dataset, args: CADSConfig, subset_size: int, **trainer_kwargs
) -> BaselineRun:
    """A uniformly random subset of `subset_size` examples (seeded by `args.seed`), trained on for the budget.

    `dataset` is one dataset or a mapping of named sources (drawn from as one pool).
    """
    pool = SourceSet(dataset) if isinstance(dataset, Mapping) else dataset
    if not 1 <= subset_size <= len(pool):
        raise ValueError(f"subset_size must be in [1, {len(pool)}], got {subset_size}.")
    ids = np.sort(np.random.default_rng([args.seed, 4099]).choice(len(pool), size=subset_size, replace=False))
    name = f"random-{subset_size}"
    trainer = train_on_examples(
        None, pool, ids, _budget(args), args, model_init=model_init, **_trainer_kwargs(args, name, trainer_kwargs)
    )
    return _evaluated_run(name, trainer, eval_dataset, example_ids=ids.tolist())


def _mixture_run(
    name: str, model_init: Callable, sources: Mapping, ratios: dict, eval_dataset, args: CADSConfig, trainer_kwargs
) -> BaselineRun:
    trainer = train_on_mixture(
        None, sources, ratios, _budget(args), args, model_init=model_init, **_trainer_kwargs(args, name, trainer_kwargs)
    )
    return _evaluated_run(name, trainer, eval_dataset)


def uniform_mixture(
    model_init: Callable,
    sources: Mapping,
    eval_dataset,
    args: CADSConfig,
    ratio: float = 1.0,
    name: str = "uniform",
    **trainer_kwargs,
) -> BaselineRun:
    """The same ratio for every source (1.0: all the data), trained on for the budget."""
    return _mixture_run(name, model_init, sources, dict.fromkeys(sources, ratio), eval_dataset, args, trainer_kwargs)


def full_dataset(model_init: Callable, dataset, eval_dataset, args: CADSConfig, **trainer_kwargs) -> BaselineRun:
    """All the data (one dataset, or every source in full), trained on for the budget."""
    sources = dataset if isinstance(dataset, Mapping) else {"train": dataset}
    return uniform_mixture(model_init, sources, eval_dataset, args, ratio=1.0, name="full", **trainer_kwargs)


def best_single_source(
    model_init: Callable, sources: Mapping, eval_dataset, args: CADSConfig, **trainer_kwargs
) -> SourceComparison:
    """Each source alone for the budget; the one with the lowest validation loss wins.

    Every source's metrics are reported; only the winner keeps its trained `Trainer`, so at most two models are
    held at once.
    """
    runs: dict[str, BaselineRun] = {}
    best = None
    for name in sources:
        ratios = {source: float(source == name) for source in sources}
        run = _mixture_run(f"source-{name}", model_init, sources, ratios, eval_dataset, args, trainer_kwargs)
        runs[name] = run
        if best is None or run.metrics["eval_loss"] < runs[best].metrics["eval_loss"]:
            best, loser = name, best
        else:
            loser = name
        if loser is not None:
            runs[loser].trainer = None  # free its model: only the winner's is kept
    return SourceComparison(best=best, runs=runs)
