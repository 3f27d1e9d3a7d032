"""The selection objective: rewards for sampled selections and the REINFORCE estimator. No Trainer inside.

One step of the search produces, from one forward pass, the mean training loss of each *unit* (a source for CADS-S,
an example of the batch for CADS-E) and the validation loss. A sampled selection k weighs the units by
`unit_weights[k]` (CADS-S: r_kj |D_j|; CADS-E: the mask bits) and keeps `subset_sizes[k]` examples. A reward turns
these into one cost J_k per sample (lower is better), differentiable in the losses so that the model's gradient
(eq. 8) follows by the chain rule, and the policy's gradient (eq. 9) by REINFORCE with a self-critical baseline
(eq. 12).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .surrogate import LossSurrogate


@dataclass
class StepStatistics:
    """What one step measured, identical on every rank (already all-reduced). A step that does not measure the
    reward (see `CADSConfig.selection_measure_interval`) has no validation loss and scores no samples."""

    unit_losses: torch.Tensor  # (U,) mean training loss of each unit
    val_loss: torch.Tensor | None  # () validation loss of the current model; None on a step that does not measure
    unit_weights: torch.Tensor  # (K, U) weight of each unit in sample k's training loss
    subset_sizes: torch.Tensor  # (K,) examples each sampled selection keeps
    unit_alignment: torch.Tensor | None = None  # (U,) <g_val, g_u> per unit, for rewards that ask for it
    model_weights: torch.Tensor | None = None  # (U,) weights of the selection the model trains on, if not the samples'

    @property
    def measured(self) -> bool:
        return self.val_loss is not None

    def train_losses(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """L_trn(theta, m): the training loss on each sampled selection (or on `weights`), a weighted mean of unit
        losses."""
        weights = (self.unit_weights if weights is None else weights).to(self.unit_losses.dtype)
        return (weights * self.unit_losses).sum(-1) / weights.sum(-1).clamp_min(1e-12)


class Reward:
    """Scores sampled selections. Subclasses implement `costs`; registering in `REWARDS` makes them selectable."""

    needs_surrogate: bool = False
    needs_alignment: bool = False
    # Whether `model_objective` depends on the validation loss: if so the validation forward is recomputed in the
    # backward (checkpointed), if not its graph is freed before the training forward; neither is held beside it.
    trains_on_validation: bool = True
    # Whether `model_objective` needs this step's costs or validation loss, so that every step must measure them.
    measures_every_step: bool = True
    trains_on_selection: bool = False  # the search samples D_s (seen / fresh units) instead of whole sources

    def costs(self, stats: StepStatistics) -> torch.Tensor:
        """J_k for each sample, shape (K,), differentiable in `stats.unit_losses` and `stats.val_loss`."""
        raise NotImplementedError

    def model_objective(self, stats: StepStatistics, costs: torch.Tensor | None) -> torch.Tensor:
        """What the model minimizes this step; by default the mean cost (the paper's joint objective, eq. 7).
        `costs` is None on a step that does not measure (only for rewards with `measures_every_step = False`)."""
        return costs.mean()


class PenaltyReward(Reward):
    """The paper's penalty objective (eq. 7): J_k = L_val(theta) + alpha (L_trn(theta, m_k) - l(|m_k|))^2."""

    needs_surrogate = True

    def __init__(self, surrogate: LossSurrogate, alpha: float = 1.0):
        self.surrogate, self.alpha = surrogate, alpha

    def costs(self, stats: StepStatistics) -> torch.Tensor:
        target = torch.as_tensor(
            self.surrogate(stats.subset_sizes.detach().cpu().numpy()),
            dtype=stats.unit_losses.dtype,
            device=stats.unit_losses.device,
        )
        return stats.val_loss + self.alpha * (stats.train_losses() - target) ** 2


class ValidationReward(Reward):
    """Validation-driven: J_k = -sum_u w_ku <g_val, g_u> / sum_u w_ku, the first-order drop in validation loss that
    one step on the sampled selection would bring (lower is better).

    The model trains on the sampled selections (not on the validation set), so its state, and with it each unit's
    alignment with the validation gradient, follows the run the selection will be used for: noisy data that
    helps early turns harmful once the model starts to memorize it.
    """

    needs_alignment = True
    trains_on_validation = False
    measures_every_step = False

    def costs(self, stats: StepStatistics) -> torch.Tensor:
        weights = stats.unit_weights.to(stats.unit_alignment.dtype)
        return -(weights * stats.unit_alignment).sum(-1) / weights.sum(-1).clamp_min(1e-12)

    def model_objective(self, stats: StepStatistics, costs: torch.Tensor | None) -> torch.Tensor:
        if stats.model_weights is not None:
            return stats.train_losses(stats.model_weights)
        return stats.train_losses().mean()


class HorizonReward(ValidationReward):
    """Validation-driven and budget-aware: the same score as `ValidationReward`, but the search trains the model on
    the current selection D_s itself and for the budget's length, so each example is repeated as often as the final
    run will repeat it.

    Each source is measured on two units: the examples D_s keeps (seen, possibly memorized) and those it leaves
    out (fresh). A sample that raises r_j above s_j is scored with source j's fresh examples, one that lowers it
    gives up seen ones. Small data that a large budget would memorize loses alignment as it is memorized, and the
    selection widens; noisy data whose gradients oppose validation narrows it.
    """

    trains_on_selection = True


REWARDS: dict[str, type[Reward]] = {
    "penalty": PenaltyReward,
    "validation": ValidationReward,
    "horizon": HorizonReward,
}


@dataclass
class ObjectiveEvaluation:
    """One step's costs and the gradients that the model and the policy need."""

    costs: torch.Tensor | None  # (K,) J_k, detached; None on a step that does not measure
    objective: torch.Tensor  # () the value the model minimizes
    unit_loss_grad: torch.Tensor  # (U,) d objective / d unit_losses
    val_loss_grad: torch.Tensor  # () d objective / d val_loss


def evaluate_objective(reward: Reward, stats: StepStatistics) -> ObjectiveEvaluation:
    """Costs of the K samples and the derivative of the model's objective with respect to the measured losses.

    The losses enter as detached leaves: the caller multiplies these derivatives into its own per-unit loss graph,
    which keeps the model's gradient exact (chain rule) while the non-linear penalty is computed once, on global
    per-unit means.
    """
    unit_losses = stats.unit_losses.detach().clone().requires_grad_(True)
    val_loss = stats.val_loss.detach().clone().requires_grad_(True) if stats.measured else None
    leaf_stats = replace(stats, unit_losses=unit_losses, val_loss=val_loss)
    costs = reward.costs(leaf_stats) if stats.measured else None
    objective = reward.model_objective(leaf_stats, costs)
    leaves = (unit_losses, val_loss) if stats.measured else (unit_losses,)
    grads = torch.autograd.grad(objective, leaves, allow_unused=True)
    unit_grad = grads[0]
    val_grad = grads[1] if stats.measured else None
    return ObjectiveEvaluation(
        costs=None if costs is None else costs.detach(),
        objective=objective.detach(),
        unit_loss_grad=torch.zeros_like(unit_losses) if unit_grad is None else unit_grad,
        val_loss_grad=torch.zeros((), dtype=unit_losses.dtype) if val_grad is None else val_grad,
    )


def reinforce_gradient(costs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """grad_s E[J] ~ mean_k (J_k - b) grad_s log p(m_k | s), with the self-critical baseline b = mean_k J_k (eq. 12)."""
    advantages = costs - costs.mean()
    return (advantages.to(scores.dtype)[:, None] * scores).mean(0)
