"""Bilevel-CADS (paper §4.2, eq. 4-5): REINFORCE on per-example inclusion scores, each sampled subset scored by the
validation loss of a fresh model trained on it for the whole budget.

This is the exact, expensive baseline that CADS-E relaxes: every outer step trains K models for C each, so it costs
K x C (plus K evaluations) per step, by design. The cost and the subset size |m| of every step are recorded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from transformers import Trainer

from ..budget import ComputeBudget
from ..config import CADSConfig
from ..example_selection import ExampleSelection
from ..final_training import train_on_examples
from ..final_training import inner_run_overrides, plain_training_args
from ..objective import reinforce_gradient
from ..policies import BernoulliPolicy


class BilevelCADS:
    """Learns one Bernoulli score s_i per example of `dataset` by training a model per sampled subset.

    Each outer step draws K masks m_k ~ p(m|s) (eq. 3), trains a fresh model for exactly the budget C on each, takes
    its validation loss as the cost J_k, and moves s along the REINFORCE estimate of eq. 5 with the self-critical
    baseline (eq. 12): clipped, one Adam step, s kept in bounds.

    Args:
        model_init: a callable returning a fresh model, as `Trainer(model_init=...)`. Every inner run starts from
            `model_init()` under `args.seed` and reads its subset in a seeded order, so the K samples of a step
            differ only in their data (common random numbers: less variance in J_k - b).
        dataset: the training examples; its indices are the example ids.
        eval_dataset: the validation set; J_k is the `eval_loss` of the inner model on it.
        args: a [`CADSConfig`]: `compute_budget` and `budget_unit` (C), `num_ratio_samples` (K), `ratio_init` (s_0),
            `selection_learning_rate`, `selection_grad_clip`, `seed`, and every Trainer setting of the inner runs.
        **trainer_kwargs: passed to every inner `Trainer` (`data_collator`, `processing_class`, `callbacks`...).

    Attributes:
        history: one dict per outer step: `subset_size` (mean |m_k|), `subset_sizes`, `mean_reward` (mean J_k),
            `rewards`, `expected_size` (sum s after the step), `train_samples` (K x C), `eval_samples`, `cost`
            (their sum, in sample-usages; an evaluation forward counts as one), `total_cost`, `skipped`.
    """

    method = "bilevel-cads"

    def __init__(
        self,
        model_init: Callable,
        dataset,
        eval_dataset,
        args: CADSConfig,
        **trainer_kwargs,
    ):
        if not isinstance(args, CADSConfig):
            raise TypeError(f"{type(self).__name__} needs args=CADSConfig(...), got {type(args).__name__}.")
        if eval_dataset is None or len(eval_dataset) == 0:
            raise ValueError(f"{type(self).__name__} needs a non-empty validation set: its loss is the reward.")
        self.model_init, self.dataset, self.eval_dataset, self.args = model_init, dataset, eval_dataset, args
        self.trainer_kwargs = trainer_kwargs
        self.budget = ComputeBudget(args.compute_budget, args.budget_unit)
        self.policy = self._make_policy()
        self.optimizer = torch.optim.Adam([self.policy.s], lr=args.selection_learning_rate)
        self.history: list[dict] = []

    def _make_policy(self) -> BernoulliPolicy:
        return BernoulliPolicy(len(self.dataset), init=self.args.ratio_init)

    def _project(self) -> None:
        """Keep s feasible after an optimizer step."""
        self.policy.project_()

    @property
    def total_cost(self) -> float:
        """Sample-usages spent by the search so far (training and evaluation of every inner run)."""
        return self.history[-1]["total_cost"] if self.history else 0.0

    # ------------------------------------------------------------------------------------------------ the search
    def run(self, num_outer_steps: int, strategy: str = "sample", num_examples: int | None = None) -> ExampleSelection:
        """Run `num_outer_steps` outer steps and return the selection drawn from the learned scores."""
        for _ in range(num_outer_steps):
            self.step()
        return self.selection(strategy, num_examples)

    def step(self) -> dict:
        """One outer step: K inner runs, one update of s. Returns (and records) the step's statistics."""
        t = len(self.history)
        generator = torch.Generator().manual_seed(self.args.seed * 1_000_003 + t)
        masks = self.policy.sample(self.args.num_ratio_samples, generator)
        rewards, train_samples = [], 0
        for k, mask in enumerate(masks):
            output_dir = os.path.join(self.args.output_dir, self.method, f"step-{t}", f"sample-{k}")
            loss, spent = self._inner_run(mask.nonzero().flatten().tolist(), output_dir)
            rewards.append(loss)
            train_samples += spent
        costs = torch.tensor(rewards, dtype=torch.float64)
        # A diverged inner run (NaN loss) would poison s; skip the update and keep the record.
        skipped = not bool(torch.isfinite(costs).all())
        if not skipped:
            self._update(reinforce_gradient(costs, self.policy.score(masks)))
        eval_samples = len(masks) * len(self.eval_dataset)
        sizes = self.policy.subset_sizes(masks)
        record = {
            "step": t,
            "subset_size": float(sizes.mean()),
            "subset_sizes": sizes.tolist(),
            "mean_reward": float(costs.mean()),
            "rewards": rewards,
            "expected_size": float(self.policy.s.detach().sum()),
            "train_samples": train_samples,
            "eval_samples": eval_samples,
            "cost": train_samples + eval_samples,
            "total_cost": self.total_cost + train_samples + eval_samples,
            "skipped": skipped,
        }
        self.history.append(record)
        return record

    def _inner_run(self, example_ids: Sequence[int], output_dir: str) -> tuple[float, int]:
        """Validation loss of a fresh model trained on `example_ids` for the budget, and the examples it trained on.

        An empty subset trains nothing: its model is the initial one (Train(empty, C) = theta_0).
        """
        overrides = inner_run_overrides(output_dir)
        if not example_ids:
            trainer = Trainer(
                model_init=self.model_init, args=plain_training_args(self.args, **overrides), **self.trainer_kwargs
            )
            spent = 0
        else:
            trainer = train_on_examples(
                None,
                self.dataset,
                example_ids,
                self.budget,
                self.args,
                args_overrides=overrides,
                model_init=self.model_init,
                **self.trainer_kwargs,
            )
            spent = len(trainer.train_dataset)  # one sequential pass over the budget's sequence
        return float(trainer.evaluate(self.eval_dataset)["eval_loss"]), spent

    def _update(self, grad: torch.Tensor) -> None:
        self.policy.s.grad = grad.to(self.policy.s.dtype)
        if self.args.selection_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([self.policy.s], self.args.selection_grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._project()

    # ---------------------------------------------------------------------------------------------------- result
    def search_config(self) -> dict:
        """The settings that define this search, recorded in the artifact."""
        fields = (
            "compute_budget", "budget_unit", "num_ratio_samples", "ratio_init", "selection_learning_rate",
            "selection_grad_clip", "seed", "learning_rate", "per_device_train_batch_size",
        )
        return {name: getattr(self.args, name) for name in fields}

    def selection(self, strategy: str = "sample", num_examples: int | None = None) -> ExampleSelection:
        """The subset drawn from the current scores (see `ExampleSelection.from_scores`)."""
        return ExampleSelection.from_scores(
            self.policy.s,
            compute_budget=self.budget.amount,
            budget_unit=self.budget.unit,
            strategy=strategy,
            num_examples=num_examples,
            seed=self.args.seed,
            method=self.method,
            reward="validation_loss",
            config=self.search_config(),
            metrics={"search_cost": self.total_cost, "outer_steps": len(self.history)},
        )
