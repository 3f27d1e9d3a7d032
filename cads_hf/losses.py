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


@torch.no_grad()
def dataset_loss(
    model,
    dataset,
    collate,
    batch_size: int,
    device: torch.device | str = "cpu",
    per_example_loss=example_losses,
    max_examples: int | None = None,
    drop_columns: tuple[str, ...] = (),
) -> tuple[float, int]:
    """Mean loss per term (token or example) of `model` over `dataset` (or its first `max_examples` rows), in eval
    mode; returns (mean loss, examples read). exp of it is the perplexity of a language model."""
    was_training = model.training
    model.eval()
    count = len(dataset) if max_examples is None else min(len(dataset), max_examples)
    total, terms = 0.0, 0.0
    try:
        for start in range(0, count, batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, count))])
            batch = {k: v.to(device) for k, v in batch.items() if k not in drop_columns}
            labels = batch.pop("labels")
            sums, counts = per_example_loss(model(**batch), labels)
            total, terms = total + float(sums.sum()), terms + float(counts.sum())
    finally:
        model.train(was_training)
    return total / max(terms, 1.0), count
