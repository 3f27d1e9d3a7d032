"""Per-example losses from model outputs: the primitive the selection objective is built on.

Trainer's own loss is a batch mean, possibly rescaled for gradient accumulation; the penalty is non-linear, so it
must see true per-example (and per-source) means. Each function returns, per example, the summed loss and the
number of terms it sums (tokens for a language model, 1 for a classifier), so that means stay exact when examples
are pooled across batches and processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def causal_lm_example_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy per sequence; positions labelled -100 (prompt, padding) are excluded."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    mask = shift_labels != IGNORE_INDEX
    return (token_losses * mask).sum(1), mask.sum(1)


def classification_example_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy per example of a classifier; one term per example."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    return losses, torch.ones_like(losses, dtype=torch.long)


def example_losses(outputs, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on the shape of the logits: (batch, sequence, vocab) is a causal LM, (batch, classes) a classifier."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    if logits.dim() == 3:
        return causal_lm_example_losses(logits, labels)
    if logits.dim() == 2:
        return classification_example_losses(logits, labels)
    raise ValueError(
        f"Cannot derive per-example losses from logits of shape {tuple(logits.shape)}; pass "
        "`per_example_loss=` to CADSTrainer."
    )
