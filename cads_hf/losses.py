"""Per-example losses from model outputs: the primitive the selection objective is built on.

Trainer's own loss is a batch mean, possibly rescaled for gradient accumulation; the penalty is non-linear, so it
must see true per-example (and per-source) means. Each function returns, per example, the summed loss and the
number of terms it sums (tokens for a language model, 1 for a classifier), so that means stay exact when examples
are pooled across batches and processes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .sources import read_rows

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


def calibrated_logits(
    per_example_loss,
    outputs,
    labels: torch.Tensor,
    reduce=None,
    bounds: tuple[float, float] = (1e-2, 1e2),
    iterations: int = 30,
) -> tuple[dict, torch.Tensor]:
    """`outputs`' logits temperature-scaled: multiplied by the inverse temperature a* that minimizes the summed loss
    f(a) = sum per_example_loss(a * logits), and a* itself.

    f is convex in a (a linear term plus a log-sum-exp for cross-entropy), so a* is found by Newton's method on a,
    kept inside a bracket that shrinks by bisection whenever a Newton step would leave it; a* is clamped to `bounds`.
    The fit runs on detached logits: by the envelope theorem (df/da = 0 at a*), the gradient of the loss at the
    fixed a* is the gradient of the calibrated loss min_a f(a). `reduce` sums f' and f'' over processes, so that
    every process fits the same a* on the global batch. `per_example_loss` receives `{"logits": ...}`.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    detached = logits.detach().double()
    low, high = (math.log(b) for b in bounds)  # the bracket, in u = log a
    u = min(max(0.0, low), high)
    for _ in range(iterations):
        # Newton in u = log a (scale-free steps): f_u = a f_a, f_uu = a f_a + a^2 f_aa.
        a_value = math.exp(u)
        a = torch.tensor(a_value, dtype=torch.float64, requires_grad=True)
        f = per_example_loss({"logits": detached * a}, labels)[0].sum()
        (f_a,) = torch.autograd.grad(f, a, create_graph=True)
        (f_aa,) = torch.autograd.grad(f_a, a)
        f_a, f_aa = f_a.detach(), f_aa.detach()
        if reduce is not None:
            f_a, f_aa = reduce(torch.stack([f_a, f_aa]))
        slope, curvature = a_value * float(f_a), a_value * float(f_a) + a_value**2 * float(f_aa)
        if slope > 0:
            high = u
        else:
            low = u
        step = u - slope / curvature if curvature > 0 else math.nan
        u_next = step if low < step < high else (low + high) / 2
        if abs(u_next - u) < 1e-9:
            break
        u = u_next
    scale = torch.tensor(math.exp(u), dtype=logits.dtype, device=logits.device)
    return {"logits": logits * scale}, scale


def _batches(dataset, count: int, collate, batch_size: int, device, drop_columns: tuple[str, ...] = ()):
    """The first `count` rows of `dataset` in collated batches on `device`, as (model inputs, labels)."""
    for start in range(0, count, batch_size):
        batch = collate(read_rows(dataset, range(start, min(start + batch_size, count))))
        batch = {k: v.to(device) for k, v in batch.items() if k not in drop_columns}
        yield batch, batch.pop("labels")


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
        for batch, labels in _batches(dataset, count, collate, batch_size, device, drop_columns):
            sums, counts = per_example_loss(model(**batch), labels)
            total, terms = total + float(sums.sum()), terms + float(counts.sum())
    finally:
        model.train(was_training)
    return total / max(terms, 1.0), count


def dataset_gradient(
    model,
    dataset,
    collate,
    batch_size: int,
    device: torch.device | str = "cpu",
    per_example: bool = False,
    per_example_loss=example_losses,
) -> list[torch.Tensor]:
    """Gradient of `model`'s mean loss over `dataset`, in eval mode, one tensor per trainable parameter: the mean per
    term (token or example) as `dataset_loss` takes it, or with `per_example` per example (a sequence's loss summed
    over its tokens). The model's own `.grad` are left as they were."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    sums = [torch.zeros_like(p) for p in parameters]
    was_training = model.training
    model.eval()
    terms = 0.0
    try:
        for batch, labels in _batches(dataset, len(dataset), collate, batch_size, device):
            loss_sums, counts = per_example_loss(model(**batch), labels)
            grads = torch.autograd.grad(loss_sums.sum(), parameters, allow_unused=True)
            for total, grad in zip(sums, grads):
                if grad is not None:
                    total += grad
            terms += len(counts) if per_example else float(counts.sum())
    finally:
        model.train(was_training)
    return [total / max(terms, 1.0) for total in sums]
