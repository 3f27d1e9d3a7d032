"""Evaluation helpers: metrics shipped with the package (loaded by path, so they work offline) and model scoring."""

from __future__ import annotations

import inspect
import os

import evaluate
import torch

from .sources import read_rows

METRICS_DIR = os.path.join(os.path.dirname(__file__), "metrics")


def load_metric(name: str) -> evaluate.EvaluationModule:
    """An `evaluate` metric shipped in `cads_hf/metrics/<name>/<name>.py`; `evaluate.load("accuracy")` would need
    the Hub."""
    path = os.path.join(METRICS_DIR, name, f"{name}.py")
    if not os.path.isfile(path):
        raise ValueError(f"No shipped metric {name!r}; available: {sorted(os.listdir(METRICS_DIR))}.")
    return evaluate.load(path)


@torch.no_grad()
def classification_accuracy(model, dataset, collate, batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Accuracy of a classifier (outputs with `logits`) on a labelled dataset, in eval mode."""
    metric = load_metric("accuracy")
    # Collators pass bookkeeping columns (source_id, clean_label...) through; give the model only what it takes.
    accepted = set(inspect.signature(model.forward).parameters) - {"labels"}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collate(read_rows(dataset, range(start, min(start + batch_size, len(dataset)))))
            labels = batch.pop("labels")
            inputs = {k: v.to(device) for k, v in batch.items() if k in accepted}
            logits = model(**inputs)["logits"]
            metric.add_batch(predictions=logits.argmax(-1).cpu(), references=labels)
    finally:
        model.train(was_training)
    return metric.compute()["accuracy"]
