"""`CADSTrainer`: a `transformers.Trainer` whose loss is the CADS objective and which learns what data to select.

Each step draws a batch stratified over sources, measures per-source (CADS-S) or per-example (CADS-E) losses and
the validation loss in one forward pass each, scores K sampled selections with the configured reward, trains the
model on the mean objective (eq. 8) and the selection parameters s by REINFORCE (eq. 9) with their own Adam. With
`selection_measure_interval` n > 1, only one step in n measures and scores; the others just train the model.
The trainer wraps `super()`; the math lives in `policies`, `objective` and `surrogate`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import SchedulerType

from .budget import ComputeBudget
from .config import CADSConfig
from .final_training import (
    SequenceDataset,
    budget_sequence,
    example_lengths,
    inner_run_overrides,
    train_on_examples,
)
from .io import atomic_torch_save, checkpoint_problem, last_complete_checkpoint
from .losses import calibrated_logits, dataset_loss, example_losses
from .example_selection import ExampleSelection
from .mixture import Mixture
from .objective import REWARDS, PenaltyReward, Reward, StepStatistics, evaluate_objective, reinforce_gradient
from .policies import BernoulliPolicy, TruncatedGaussianPolicy
from .sources import SOURCE_ID, SelectionAwareSampler, SourceSet, StratifiedSourceSampler, selection_ranks
from .surrogate import SURROGATE_NAME, LossSurrogate

logger = logging.getLogger(__name__)

EXAMPLE_ID = "example_id"
SELECTION_STATE_NAME = "selection_state.pt"
# Finite-difference steps along the unit validation gradient (`CADSConfig.alignment_probe`), small against weight
# norms and large against rounding. One-sided differences need the smaller step, their error being first order in
# it: on a CNN late in the scarce-clean benchmark, one-sided at 1e-2 flipped the sign of a noisy source's alignment.
ONE_SIDED_STEP = 1e-3
CENTRAL_STEP = 1e-2
# The surrogate's final training loss is read on at most this many examples of each subset.
SURROGATE_EVAL_EXAMPLES = 2048


class _RngState:
    """The random state (CPU and the model's accelerator) at one moment, to replay a forward's dropout masks."""

    def __init__(self, model):
        device = next(model.parameters()).device
        self._device = device if device.type == "cuda" else None
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state(device) if self._device is not None else None

    @contextlib.contextmanager
    def replayed(self):
        """Runs the block from this state, then puts back the state it interrupted."""
        devices = [self._device] if self._device is not None else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.set_rng_state(self._cpu)
            if self._device is not None:
                torch.cuda.set_rng_state(self._cuda, self._device)
            yield


class _TaggedSourceSet(SourceSet):
    """A `SourceSet` whose rows also carry their global index, which CADS-E needs to read its mask bits."""

    def __getitem__(self, index: int) -> dict:
        return {**super().__getitem__(index), EXAMPLE_ID: int(index)}

    def __getitems__(self, indices) -> list[dict]:
        return [{**row, EXAMPLE_ID: int(index)} for row, index in zip(super().__getitems__(indices), indices)]


@dataclass
class _UnitTotals:
    """Loss sums per unit: this process's (differentiable) and all processes' totals (detached)."""

    local_sums: torch.Tensor
    global_sums: torch.Tensor
    global_counts: torch.Tensor
    local_slice: slice

    def global_means(self) -> torch.Tensor:
        measured = self.global_counts > 0
        return torch.where(measured, self.global_sums / self.global_counts.clamp_min(1), torch.zeros_like(self.global_sums))

    def linearize(self, grad_of_means: torch.Tensor) -> torch.Tensor:
        """sum_u d(objective)/d(mean_u) * (this process's share of mean_u): its gradient is this process's part of
        the objective's gradient."""
        coefficients = grad_of_means[self.local_slice] / self.global_counts[self.local_slice].clamp_min(1).cpu()
        return (coefficients.to(self.local_sums.device, self.local_sums.dtype) * self.local_sums).sum()


class _LossAtSteps(TrainerCallback):
    """Reads `read(model)` when a run reaches the given optimizer steps: {step: key} -> `losses[key]`."""

    def __init__(self, steps: dict[int, float], read: Callable):
        self.steps, self.read, self.losses = steps, read, {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            self.losses[self.steps[state.global_step]] = self.read(model)


class SelectionAbort(RuntimeError):
    """Raised when `nonfinite_loss="stop"` and a step's loss is NaN or infinite."""


class CADSTrainer(Trainer):
    """Learns source ratios (CADS-S) or example scores (CADS-E) for a compute budget while training a model.

    Args:
        model: the model to search with (a `PreTrainedModel` or an `nn.Module` returning `logits`).
        args: a [`CADSConfig`].
        sources: named training sources, `{name: dataset}`; CADS-E also accepts a single dataset.
        eval_dataset: the validation set whose loss the selection minimizes (required).
        surrogate: a fitted [`LossSurrogate`] for the penalty reward; collected before the search when omitted.
        reward: a [`Reward`] instance overriding `args.reward`.
        per_example_loss: `fn(outputs, labels) -> (loss_sums, term_counts)`; by default derived from the logits
            (causal LM or classifier, see `cads_hf.losses`).
        **kwargs: everything else `transformers.Trainer` takes (`data_collator`, `processing_class`, `callbacks`...).
    """

    def __init__(
        self,
        model=None,
        args: CADSConfig | None = None,
        sources: Mapping | None = None,
        eval_dataset=None,
        surrogate: LossSurrogate | None = None,
        reward: Reward | None = None,
        per_example_loss: Callable | None = None,
        **kwargs,
    ):
        if not isinstance(args, CADSConfig):
            raise TypeError(f"CADSTrainer needs args=CADSConfig(...), got {type(args).__name__}.")
        if "train_dataset" in kwargs:
            raise TypeError("CADSTrainer takes `sources={name: dataset}` instead of `train_dataset`.")
        if args.compute_budget is None:
            raise ValueError("CADSConfig.compute_budget must be set: the compute of the final training run.")
        if eval_dataset is None or len(eval_dataset) == 0:
            raise ValueError("CADSTrainer needs a non-empty validation set (`eval_dataset`): the selection minimizes its loss.")
        if args.selection_level == "example" and not isinstance(sources, Mapping):
            sources = {"train": sources}
        self.source_set = _TaggedSourceSet(sources)
        # Checked before Trainer creates output_dir, so that a rejected set-up writes nothing.
        self.budget = ComputeBudget(args.compute_budget, args.budget_unit)
        mean_tokens = float(example_lengths(self.source_set).mean()) if args.budget_unit == "tokens" else None
        self.budget.check_covers_batch(
            args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps, mean_tokens
        )
        self._initial_model_state = copy.deepcopy(model.state_dict()) if model is not None else None
        super().__init__(model=model, args=args, train_dataset=self.source_set, eval_dataset=eval_dataset, **kwargs)
        # Our loss is a per-batch mean: let Trainer divide it by the gradient accumulation steps.
        self.loss_is_scaled_for_ga = False

        self.per_example_loss = per_example_loss or example_losses
        if args.selection_level == "source":
            self.policy = TruncatedGaussianPolicy(
                self.source_set.sizes, args.ratio_init, args.sigma_init, args.sigma_decay, args.sigma_min, args.min_ratio
            )
        else:
            self.policy = BernoulliPolicy(len(self.source_set), init=args.ratio_init)
        self.selection_optimizer = torch.optim.Adam([self.policy.s], lr=args.selection_learning_rate)
        reward_cls = type(reward) if reward is not None else REWARDS[args.reward]
        if args.selection_measure_interval > 1 and reward_cls.measures_every_step:
            raise ValueError(
                f"selection_measure_interval={args.selection_measure_interval} needs a reward whose model objective "
                f"needs no measurement; {reward_cls.__name__} measures every step."
            )
        half = {p.dtype for p in model.parameters() if p.requires_grad} - {torch.float32, torch.float64}
        if args.alignment_probe == "one_sided" and half:
            raise ValueError(
                f"alignment_probe='one_sided' needs full-precision trainable weights, got {sorted(map(str, half))}: "
                "a step of 1e-3 drowns in their rounding. Use alignment_probe='central'."
            )
        # Rewards that train on the selection measure each source twice: its selected (seen) and left-out examples.
        self._split_units = args.selection_level == "source" and reward_cls.trains_on_selection
        self._ranks = torch.as_tensor(selection_ranks(self.source_set.sizes, args.seed)) if self._split_units else None
        self.surrogate = surrogate
        self._reward_override = reward
        self.reward: Reward | None = None
        self._selection_grad = torch.zeros_like(self.policy.s)  # REINFORCE gradients summed since the last update
        self._selection_measurements = 0  # the micro-steps that summed into it
        self._s_sum = torch.zeros_like(self.policy.s)  # s summed over the outer steps the averaging keeps
        self._s_count = 0
        self._s_history = {0: self.policy.s.detach().clone()}  # s after t optimizer steps, for the last few t
        self._selection_metrics: dict[str, list[float]] = defaultdict(list)
        self._selection_counters = {"outer_steps": 0, "optimizer_steps": 0, "skipped_steps": 0, "micro_steps": 0}
        self._val_collator = None

    # ----------------------------------------------------------------------------------------------------- set-up
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        # The selection tags must survive Trainer's column pruning; compute_loss pops them before the forward.
        for column in (SOURCE_ID, EXAMPLE_ID):
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def _get_train_sampler(self, train_dataset=None):
        if self._split_units:
            return SelectionAwareSampler(
                self.source_set.sizes,
                self.args.per_device_train_batch_size,
                ratios=self._sampling_ratios,
                seed=self.args.seed,
            )
        return StratifiedSourceSampler(
            self.source_set.sizes, self.args.per_device_train_batch_size, seed=self.args.seed
        )

    def _build_reward(self) -> Reward:
        if self._reward_override is not None:
            return self._reward_override
        reward_cls = REWARDS[self.args.reward]
        if reward_cls is PenaltyReward:
            return PenaltyReward(self.surrogate, self.args.penalty_alpha)
        return reward_cls()

    def train(self, resume_from_checkpoint=None, **kwargs):
        resume_from_checkpoint = self._resolve_checkpoint(resume_from_checkpoint)
        self._check_inputs()
        if self._reward_override is None and REWARDS[self.args.reward].needs_surrogate and self.surrogate is None:
            checkpoint = resume_from_checkpoint
            if checkpoint is not None and os.path.isfile(os.path.join(checkpoint, SURROGATE_NAME)):
                self.surrogate = LossSurrogate.load(checkpoint)
            else:
                self.surrogate = self.collect_surrogate()
        self.reward = self._build_reward()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _resolve_checkpoint(self, resume_from_checkpoint) -> str | None:
        """The checkpoint to resume from. `True` takes the last *complete* one in `output_dir` (a run killed while
        saving leaves an incomplete one behind, which Trainer would pick); a given folder must be complete."""
        if resume_from_checkpoint is True:
            return last_complete_checkpoint(self.args.output_dir)
        if not resume_from_checkpoint:
            return None
        problem = "no such folder"
        if os.path.isdir(resume_from_checkpoint):
            problem = checkpoint_problem(resume_from_checkpoint)
        if problem is not None:
            raise ValueError(f"Cannot resume from {resume_from_checkpoint}: {problem}.")
        return resume_from_checkpoint

    def _check_inputs(self) -> None:
        """Collate one row of every source and of the validation set before training, so that a missing column or
        a row the collator rejects fails now, naming its dataset, rather than at the first step."""
        forward = inspect.signature(self.accelerator.unwrap_model(self.model).forward).parameters.values()
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        required = [p.name for p in forward if p.default is p.empty and p.kind in named]
        collator = self._get_collator_with_removed_columns(self.data_collator, "training")
        starts = zip(self.source_set.names, self.source_set.offsets)
        rows = [(f"source {name!r}", self.source_set[int(start)]) for name, start in starts]
        for what, row in [*rows, ("the validation set", self.eval_dataset[0])]:
            try:
                batch = collator([row])
            except Exception as err:
                raise ValueError(f"The rows of {what} cannot be collated: {type(err).__name__}: {err}") from err
            missing = [name for name in dict.fromkeys(["labels", *required]) if name not in batch]
            if missing:
                raise ValueError(
                    f"Batches of {what} lack {missing}, which the loss or the model's forward needs; "
                    f"they hold {sorted(batch)}."
                )

    def collect_surrogate(self) -> LossSurrogate:
        """Fit l(n) (paper §C): for each configured fraction, train a fresh copy of the initial model on a random
        subset of that size for the whole budget and record its final training loss on the subset."""
        return self.collect_surrogate_sweep([self.budget.amount])[self.budget.amount]

    def collect_surrogate_sweep(self, budgets: Sequence[float]) -> dict[float, LossSurrogate]:
        """l(n) for several budgets (in `budget_unit`s) from the runs of the largest alone: {budget: surrogate}.

        A run's example sequence for a budget is the start of its sequence for any larger one, so with a constant
        learning rate the model a run for a smaller budget ends with is the one the largest budget's run passes
        through at that step (to within a last, partial batch); the subset loss is read there. The runs cost what
        the largest budget's surrogate alone costs, sum(budgets) / max(budgets) times less than one collection per
        budget; each surrogate's `cost` is that shared cost. Pass them to `CADSTrainer(surrogate=...)`.
        """
        if self._initial_model_state is None:
            raise ValueError("Collecting a surrogate needs the model passed to CADSTrainer (or pass `surrogate=`).")
        budgets = sorted({float(b) for b in budgets})
        if len(budgets) > 1 and self.args.lr_scheduler_type != SchedulerType.CONSTANT:
            raise ValueError(
                "A surrogate sweep reads the smaller budgets off the largest budget's runs, which is exact only with "
                f"lr_scheduler_type='constant' (got {self.args.lr_scheduler_type.value!r}): a decaying schedule "
                "depends on the run's length. Collect one surrogate per budget instead."
            )
        total = len(self.source_set)
        batch = self.args.per_device_train_batch_size
        sizes = sorted({max(batch, min(total, int(round(f * total)))) for f in self.args.surrogate_fractions})
        if len(sizes) < 2:
            raise ValueError(
                f"surrogate_fractions {self.args.surrogate_fractions} give fewer than two distinct subset sizes for "
                f"{total} examples and batch size {batch}; widen the fractions."
            )
        largest = ComputeBudget(budgets[-1], self.budget.unit)
        rng = np.random.default_rng([self.args.seed, 7919])
        partial = set()  # smaller budgets whose runs would end with a partial batch

        def train_fn(size: int) -> tuple[dict[float, float], float]:
            subset = np.sort(rng.choice(total, size=size, replace=False))
            view = SequenceDataset(self.source_set, subset)
            collator = self._get_collator_with_removed_columns(self.data_collator, "surrogate")
            evaluated = []

            def subset_loss(model) -> float:
                loss, count = dataset_loss(
                    model, view, collator, self.args.per_device_eval_batch_size, self.args.device,
                    self.per_example_loss, max_examples=SURROGATE_EVAL_EXAMPLES, drop_columns=(SOURCE_ID, EXAMPLE_ID),
                )
                evaluated.append(count)
                return loss

            ends = {b: self._run_end(view, ComputeBudget(b, largest.unit)) for b in budgets[:-1]}
            partial.update(b for b, (_, whole) in ends.items() if not whole)
            reader = _LossAtSteps({step: b for b, (step, _) in ends.items()}, subset_loss)
            model = copy.deepcopy(self.model)
            model.load_state_dict(self._initial_model_state)
            trainer = train_on_examples(
                model,
                self.source_set,
                subset,
                largest,
                self.args,
                args_overrides=inner_run_overrides(os.path.join(self.args.output_dir, "surrogate", f"subset-{size}")),
                data_collator=self.data_collator,
                processing_class=self.processing_class,
                callbacks=[reader],
            )
            losses = {**reader.losses, largest.amount: subset_loss(trainer.model)}
            spent = largest.amount if largest.unit == "tokens" else float(largest.num_samples())
            return losses, spent + sum(evaluated)

        surrogates = LossSurrogate.collect_sweep(
            train_fn, sizes, kind=self.args.surrogate_kind, progress=not self.args.disable_tqdm
        )
        if partial:
            logger.warning(
                "Surrogate sweep: budget(s) %s are not a whole number of batches; a run for them ends with a partial "
                "batch, so their points are read one partial batch off.", sorted(partial)
            )
        return surrogates

    def _run_end(self, dataset, budget: ComputeBudget) -> tuple[int, bool]:
        """The optimizer step at which a run on `dataset` for exactly `budget` (`train_on_examples`) ends, and
        whether its last batch is whole."""
        examples = len(budget_sequence(SourceSet({"examples": dataset}), [1.0], budget, seed=self.args.seed))
        per_batch = self.args.per_device_train_batch_size * self.args.world_size
        batches = math.ceil(examples / per_batch)
        steps = math.ceil(batches / self.args.gradient_accumulation_steps)
        return steps, examples % per_batch == 0 and batches % self.args.gradient_accumulation_steps == 0

    # ------------------------------------------------------------------------------------------------ the step
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        source_ids = inputs.pop(SOURCE_ID)
        example_ids = inputs.pop(EXAMPLE_ID)
        labels = inputs.pop("labels")
        unit_ids = self._unit_ids(source_ids, example_ids)
        unwrapped = self.accelerator.unwrap_model(model)
        measures = self._measures_step()
        # Validation before the training forward: unless the model trains on it, its graph is freed first; if it
        # does, the forward is recomputed in the backward. The two graphs are never held at once (peak memory stays
        # near a plain step's).
        keeps_val_graph = measures and self.reward.trains_on_validation
        val_sum = val_totals = alignment = direction = None
        if measures:
            with torch.set_grad_enabled(keeps_val_graph or self.reward.needs_alignment):
                val_sum, val_count = self._validation_loss(unwrapped, recompute=keeps_val_graph)
            val_totals = self.accelerator.reduce(
                torch.stack([val_sum.detach().double(), val_count.double()]), reduction="sum"
            )
            if self.reward.needs_alignment:
                val_share = val_sum / val_totals[1].to(val_sum)
                one_sided = self.args.alignment_probe == "one_sided"
                direction = self._validation_direction(
                    unwrapped, val_share, keeps_val_graph, ONE_SIDED_STEP if one_sided else CENTRAL_STEP
                )
                if not one_sided:
                    alignment = self._central_alignment(unwrapped, inputs, labels, unit_ids, direction)
                    direction = None
            if not keeps_val_graph:
                val_sum = val_sum.detach()
        rng_before_forward = _RngState(unwrapped) if direction is not None else None
        outputs = model(**inputs)
        loss_sums, counts = self.per_example_loss(outputs, labels)
        units = self._aggregate(loss_sums, counts, unit_ids)
        if direction is not None:
            # One-sided: the training forward is the reference, and the shifted forward replays its random state so
            # that dropout (or any stochastic layer) draws the same noise in both.
            with rng_before_forward.replayed():
                shifted, _ = self._shifted_losses(unwrapped, inputs, labels, direction)
            del direction
            derivative = (shifted.double() - loss_sums.detach().double()) / ONE_SIDED_STEP
            alignment = self._aggregate(derivative, counts, unit_ids).global_means().cpu()

        generator = torch.Generator().manual_seed(self.args.seed * 1_000_003 + self._selection_counters["micro_steps"])
        self._selection_counters["micro_steps"] += 1
        samples = self.policy.sample(self.args.num_ratio_samples, generator)
        measured = (units.global_counts > 0).cpu()
        model_weights = None
        if self._split_units:
            s = self.policy.s.detach()
            sizes = self.policy.source_sizes
            unit_weights = torch.stack([torch.minimum(samples, s), (samples - s).clamp_min(0)], -1).flatten(1)
            unit_weights = unit_weights * sizes.repeat_interleave(2) * measured
            model_weights = torch.stack([s, torch.zeros_like(s)], -1).flatten() * sizes.repeat_interleave(2) * measured
        elif self.args.selection_level == "source":
            unit_weights = samples * self.policy.source_sizes * measured
        else:
            unit_weights = samples[:, self.accelerator.gather(example_ids).cpu()] * measured
        stats = StepStatistics(
            unit_losses=units.global_means().cpu(),
            val_loss=(val_totals[0] / val_totals[1]).cpu() if measures else None,
            unit_weights=unit_weights,
            subset_sizes=self.policy.subset_sizes(samples),
            unit_alignment=alignment,
            model_weights=model_weights,
        )
        evaluation = evaluate_objective(self.reward, stats)
        finite = [units.global_sums, evaluation.costs, val_totals, alignment]
        if not all(torch.isfinite(t).all() for t in finite if t is not None):
            return self._skip_nonfinite_step(model)

        # Chain rule through the global means: d objective / d theta, exact for any number of processes. DDP
        # averages gradients over processes, so each process's share is scaled back up by the process count.
        linearized = units.linearize(evaluation.unit_loss_grad)
        if evaluation.val_loss_grad != 0:
            if not keeps_val_graph:
                raise RuntimeError(
                    f"{type(self.reward).__name__}.model_objective depends on the validation loss; "
                    "set its `trains_on_validation = True`."
                )
            linearized = linearized + (evaluation.val_loss_grad / val_totals[1].cpu()).to(val_sum) * val_sum
        linearized = linearized * self.accelerator.num_processes
        loss = evaluation.objective.to(linearized.device, linearized.dtype) + (linearized - linearized.detach())

        if measures:
            self._selection_grad += reinforce_gradient(evaluation.costs, self.policy.score(samples))
            self._selection_measurements += 1
        self._record_step(stats, evaluation)
        return (loss, outputs) if return_outputs else loss

    def _unit_ids(self, source_ids: torch.Tensor, example_ids: torch.Tensor) -> torch.Tensor:
        """The unit each example of the batch counts for: its source, or (split units) 2 * source + 1 when the
        current selection leaves the example out. CADS-E units are the examples themselves."""
        if not self._split_units:
            return source_ids
        kept = torch.round(self.policy.s.detach() * self.policy.source_sizes).to(torch.long).to(source_ids.device)
        fresh = self._ranks.to(source_ids.device)[example_ids] >= kept[source_ids]
        return 2 * source_ids + fresh.long()

    def _aggregate(self, sums: torch.Tensor, counts: torch.Tensor, unit_ids: torch.Tensor) -> _UnitTotals:
        """Per-unit loss sums of this process (with their graph) and their totals over all processes.

        Units are sources (CADS-S: sums pooled by unit, then all-reduced) or the examples of the global batch
        (CADS-E: gathered, this process's examples at its own offset)."""
        if self.args.selection_level == "source":
            n = len(self.source_set.sizes) * (2 if self._split_units else 1)
            local = torch.zeros(n, device=sums.device, dtype=sums.dtype).index_add(0, unit_ids, sums)
            local_counts = torch.zeros(n, device=sums.device, dtype=torch.float64).index_add(0, unit_ids, counts.double())
            return _UnitTotals(
                local,
                self.accelerator.reduce(local.detach().double(), reduction="sum"),
                self.accelerator.reduce(local_counts, reduction="sum"),
                slice(0, n),
            )
        start = self.accelerator.process_index * len(sums)
        return _UnitTotals(
            sums,
            self.accelerator.gather(sums.detach().double()),
            self.accelerator.gather(counts.double()),
            slice(start, start + len(sums)),
        )

    def _validation_direction(self, unwrapped, val_share: torch.Tensor, keep_graph: bool, length: float) -> dict:
        """The validation gradient (all-reduced), scaled to `length`, as one tensor per trainable parameter.
        A zero gradient gives a zero step and zero alignments; a non-finite one is caught as NaN."""
        named = [(name, p) for name, p in unwrapped.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        grads = torch.autograd.grad(val_share, params, retain_graph=keep_graph, allow_unused=True)
        flat = [(torch.zeros_like(p) if g is None else g).reshape(-1).float() for p, g in zip(params, grads)]
        step = self.accelerator.reduce(torch.cat(flat), reduction="sum")
        del grads, flat  # one flat copy of the gradient is all the probes need (peak memory)
        step.mul_(length / step.norm().clamp_min(1e-30))
        return {name: chunk.view_as(p) for (name, p), chunk in zip(named, step.split([p.numel() for p in params]))}

    @torch.no_grad()
    def _shifted_losses(self, unwrapped, inputs, labels, direction: dict, sign: float = 1.0):
        """Per-example losses of the model moved by `sign * direction`, in the model's current mode.

        Shifted copies, not in-place edits: the parameters stay those autograd has seen. Buffers are copied too, so
        that a batch-norm layer in training mode does not update its running statistics twice."""
        moved = {name: b.clone() for name, b in unwrapped.named_buffers()}
        moved.update(
            {name: p + sign * direction[name].to(p.dtype) for name, p in unwrapped.named_parameters() if name in direction}
        )
        outputs = torch.func.functional_call(unwrapped, moved, args=(), kwargs=inputs, strict=False)
        return self.per_example_loss(outputs, labels)

    def _central_alignment(self, unwrapped, inputs, labels, unit_ids, direction: dict) -> torch.Tensor:
        """<g_val, g_u> for every unit by central differences, both forwards in eval mode so that dropout does not
        swamp the difference."""
        was_training = unwrapped.training
        unwrapped.eval()
        try:
            (plus, counts), (minus, _) = (
                self._shifted_losses(unwrapped, inputs, labels, direction, sign) for sign in (1.0, -1.0)
            )
        finally:
            unwrapped.train(was_training)
        derivative = (plus.double() - minus.double()) / (2 * CENTRAL_STEP)
        return self._aggregate(derivative, counts, unit_ids).global_means().cpu()

    def _validation_loss(self, model, recompute: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss sum and term count of this process's share of a validation batch, drawn deterministically from
        the step counter so that a resumed run sees the same batches.

        `recompute`: the model trains on this loss (penalty reward), so its graph would be held through the training
        forward; instead only the batch is kept and the forward is recomputed during the backward (peak memory near
        a plain step's, for one more validation forward). Not with temperature calibration, whose fit differentiates
        inside the forward."""
        if self._val_collator is None:
            self._val_collator = self._get_collator_with_removed_columns(self.data_collator, "selection validation")
        size = len(self.eval_dataset)
        per_process = min(self.args.selection_eval_batch_size, size)
        total = per_process * self.accelerator.num_processes
        passes, offset = divmod(self._selection_counters["micro_steps"] * total, size)
        # Two consecutive shuffled passes, so a batch that runs past the end of one pass continues into the next.
        order = np.concatenate(
            [np.random.default_rng([self.args.seed, 104729, passes + i]).permutation(size) for i in range(2)]
        )
        start = offset + self.accelerator.process_index * per_process
        rows = [self.eval_dataset[int(i)] for i in order[start : start + per_process]]
        batch = self._prepare_inputs(self._val_collator(rows))
        for column in (SOURCE_ID, EXAMPLE_ID):
            batch.pop(column, None)
        labels = batch.pop("labels")
        calibrate = self.args.validation_calibration == "temperature"

        def loss_of_batch():
            # In eval mode, as `Trainer.evaluate` measures it: no dropout noise (or its cost) in the direction the
            # probes follow, and batch-norm statistics never see validation data.
            was_training = model.training
            model.eval()
            try:
                outputs = model(**batch)
            finally:
                model.train(was_training)
            if calibrate:
                outputs, _ = calibrated_logits(
                    self.per_example_loss, outputs, labels, reduce=lambda t: self.accelerator.reduce(t, reduction="sum")
                )
            sums, counts = self.per_example_loss(outputs, labels)
            return sums.sum(), counts.sum()

        if recompute and not calibrate and torch.is_grad_enabled():
            return checkpoint(loss_of_batch, use_reentrant=False)
        return loss_of_batch()

    def _skip_nonfinite_step(self, model):
        if self.args.nonfinite_loss == "stop":
            raise SelectionAbort(
                f"Non-finite loss at step {self.state.global_step}; set nonfinite_loss='skip' to skip such steps."
            )
        self._selection_counters["skipped_steps"] += 1
        logger.warning("Non-finite loss at step %d: model and selection updates skipped.", self.state.global_step)
        # Zero gradients for every parameter keeps all processes in step (DDP expects a backward everywhere).
        zero = sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
        return zero

    def training_step(self, model, inputs, num_items_in_batch=None):
        skipped_before = self._selection_counters["skipped_steps"]
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._selection_counters["skipped_steps"] > skipped_before:
            self._selection_grad.zero_()
            self._selection_measurements = 0
        if self.accelerator.sync_gradients:
            self._selection_counters["optimizer_steps"] += 1
            step = self._selection_counters["optimizer_steps"]
            if step % self.args.selection_update_interval == 0:
                self._update_selection()
            self._s_history[step] = self.policy.s.detach().clone()
            self._s_history.pop(step - 3, None)
        return loss

    def _sampling_ratios(self, batch_index: int) -> list[float]:
        """The ratios the search samples batch `batch_index` with: s as it was after the optimizer step that
        precedes the batch's step (accelerate draws one batch ahead), fixed by the index rather than by when the
        batch happens to be drawn, so that a resumed run draws the very batches an uninterrupted one does.
        Batches a resume skips get the oldest s kept; they are discarded."""
        step = max(batch_index - 1, 0) // self.args.gradient_accumulation_steps
        kept = self._s_history.get(step, self._s_history[min(self._s_history)])
        return kept.tolist()

    def _measures_step(self) -> bool:
        """Whether this optimizer step measures the reward: one in every `selection_measure_interval`."""
        return self._selection_counters["optimizer_steps"] % self.args.selection_measure_interval == 0

    def _update_selection(self) -> None:
        if self._selection_measurements == 0:  # nothing measured since the last update: wait for the next window
            return
        grad = self._selection_grad / self._selection_measurements
        self._selection_grad = torch.zeros_like(self.policy.s)
        self._selection_measurements = 0
        if not torch.isfinite(grad).all() or not grad.any():
            return
        if self.args.selection_grad_clip > 0:
            norm = grad.norm()
            if norm > self.args.selection_grad_clip:
                grad = grad * (self.args.selection_grad_clip / norm)
        self.policy.s.grad = grad
        self.selection_optimizer.step()
        self.selection_optimizer.zero_grad(set_to_none=True)
        self.policy.project_()
        self._selection_counters["outer_steps"] += 1
        if self._averages_step():
            self._s_sum += self.policy.s.detach()
            self._s_count += 1
        if isinstance(self.policy, TruncatedGaussianPolicy):
            self.policy.anneal(self._selection_counters["outer_steps"])

    def _averages_step(self) -> bool:
        """Whether s after this update counts towards the reported average: every update ("mean") or those in the
        second half of the search ("tail")."""
        if self.args.selection_averaging == "tail":
            return self._selection_counters["optimizer_steps"] > self.state.max_steps // 2
        return True

    def _record_step(self, stats: StepStatistics, evaluation) -> None:
        metrics = self._selection_metrics
        metrics["selection/objective"].append(float(evaluation.objective))
        metrics["selection/train_loss"].append(float(stats.train_losses().mean()))
        metrics["selection/subset_size"].append(float(stats.subset_sizes.mean()))
        if stats.measured:
            metrics["selection/val_loss"].append(float(stats.val_loss))

    # ------------------------------------------------------------------------------------------------- logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: flush what the steps since the last one measured
            for key, values in self._selection_metrics.items():
                logs[key] = float(np.mean(values))
            self._selection_metrics.clear()
            logs.update(self.selection_summary())
        super().log(logs, start_time)

    def selection_summary(self) -> dict[str, float]:
        """Current ratios (CADS-S) or score statistics (CADS-E), sigma and the skip count, as flat log keys."""
        s = self.policy.s.detach()
        summary = {"selection/skipped_steps": float(self._selection_counters["skipped_steps"])}
        if isinstance(self.policy, TruncatedGaussianPolicy):
            summary.update({f"selection/ratio/{name}": float(v) for name, v in zip(self.source_set.names, s)})
            summary["selection/sigma"] = float(self.policy.sigma)
        else:
            summary.update({"selection/score_mean": float(s.mean()), "selection/expected_size": float(s.sum())})
        return summary

    # ---------------------------------------------------------------------------------------------- checkpoints
    def selection_state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.selection_optimizer.state_dict(),
            "counters": dict(self._selection_counters),
            "pending_grad": self._selection_grad.clone(),
            "pending_measurements": self._selection_measurements,
            "s_sum": self._s_sum.clone(),
            "s_count": self._s_count,
            "s_history": {step: s.clone() for step, s in self._s_history.items()},
        }

    def load_selection_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.selection_optimizer.load_state_dict(state["optimizer"])
        self._selection_counters.update(state["counters"])
        self._selection_grad = state["pending_grad"].clone()
        self._selection_measurements = state["pending_measurements"]
        self._s_sum = state["s_sum"].clone()
        self._s_count = state["s_count"]
        self._s_history = {int(step): s.clone() for step, s in state["s_history"].items()}

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            atomic_torch_save(self.selection_state_dict(), os.path.join(output_dir, SELECTION_STATE_NAME))
            if self.surrogate is not None:
                self.surrogate.save(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, SELECTION_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint {checkpoint} has no {SELECTION_STATE_NAME}; it was not written by CADSTrainer.")
        try:
            state = torch.load(path, weights_only=False)
        except Exception as err:
            raise ValueError(f"{path} is corrupted or truncated ({err}); resume from an earlier checkpoint") from err
        self.load_selection_state_dict(state)

    # ---------------------------------------------------------------------------------------------------- result
    def _provenance(self) -> dict:
        """What every result artifact records about the search that produced it."""
        return dict(
            compute_budget=self.budget.amount,
            budget_unit=self.budget.unit,
            seed=self.args.seed,
            reward=self.args.reward if self._reward_override is None else type(self._reward_override).__name__,
            surrogate=self.surrogate.to_dict() if self.surrogate is not None else None,
            config=_selection_config(self.args),
            base_model=getattr(getattr(self.model, "config", None), "_name_or_path", None) or None,
        )

    def learned_s(self) -> torch.Tensor:
        """The selection parameters the result reports: the final s, or its average over the outer steps that
        `selection_averaging` keeps."""
        if self.args.selection_averaging != "last" and self._s_count > 0:
            return self._s_sum / self._s_count
        return self.policy.s.detach()

    def mixture(self, **metadata) -> Mixture:
        """The learned selection as a [`Mixture`] artifact (CADS-S ratios per source)."""
        if not isinstance(self.policy, TruncatedGaussianPolicy):
            raise ValueError("mixture() describes source ratios; CADS-E results come from `example_selection()`.")
        return Mixture(
            ratios={name: float(v) for name, v in zip(self.source_set.names, self.learned_s())},
            source_sizes=dict(zip(self.source_set.names, self.source_set.sizes)),
            **self._provenance(),
            **metadata,
        )

    def example_selection(self, strategy: str = "sample", num_examples: int | None = None, **metadata) -> ExampleSelection:
        """The learned CADS-E scores as an [`ExampleSelection`]: a Bernoulli sample (seeded by `args.seed`) or, with
        `strategy="top_k"`, the `num_examples` highest. Ids index the sources concatenated in order."""
        if not isinstance(self.policy, BernoulliPolicy):
            raise ValueError("example_selection() describes example scores (CADS-E); CADS-S results come from `mixture()`.")
        return ExampleSelection.from_scores(
            self.learned_s(), strategy=strategy, num_examples=num_examples, method="cads-e", **self._provenance(), **metadata
        )


def _selection_config(args: CADSConfig) -> dict:
    fields = (
        "selection_level", "reward", "penalty_alpha", "num_ratio_samples", "sigma_init", "sigma_decay", "sigma_min",
        "selection_learning_rate", "selection_grad_clip", "selection_update_interval", "selection_measure_interval", "ratio_init", "min_ratio",
        "surrogate_fractions", "surrogate_kind", "alignment_probe", "validation_calibration", "selection_averaging", "max_steps", "num_train_epochs", "per_device_train_batch_size",
        "learning_rate",
    )
    return {name: getattr(args, name) for name in fields}
