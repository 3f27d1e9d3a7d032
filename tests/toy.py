"""A tiny classification task with sources of known quality, shared by the core tests."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import default_data_collator

NUM_CLASSES = 4
DIM = 8


def _cluster_data(n: int, rng: np.random.Generator, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, NUM_CLASSES, size=n)
    features = centers[labels] + rng.normal(scale=1.0, size=(n, DIM))
    return features.astype(np.float32), labels


def toy_sources(sizes=(300, 300, 300), noise=(0.0, 0.5, 1.0), seed: int = 0, val_size: int = 200):
    """Sources whose labels are replaced by random ones with probability `noise[j]`, and a clean validation set."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(NUM_CLASSES, DIM))
    sources = {}
    for size, p in zip(sizes, noise):
        x, y = _cluster_data(size, rng, centers)
        flip = rng.random(size) < p
        y = np.where(flip, rng.integers(0, NUM_CLASSES, size=size), y)
        sources[f"noise_{int(p * 100)}"] = Dataset.from_dict({"features": x.tolist(), "labels": y.tolist()})
    x, y = _cluster_data(val_size, rng, centers)
    validation = Dataset.from_dict({"features": x.tolist(), "labels": y.tolist()})
    return sources, validation


class ToyClassifier(nn.Module):
    """An MLP with the Trainer-facing interface: features + labels in, loss + logits out."""

    def __init__(self, seed: int = 0, hidden: int = 32, dropout: float = 0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(DIM, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, NUM_CLASSES)
        )

    def forward(self, features, labels=None):
        logits = self.net(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


class CountingCollator:
    """`default_data_collator` that counts the rows it batches (and sums their `length` column, which it drops)."""

    def __init__(self):
        self.rows, self.tokens = 0, 0

    def __call__(self, features):
        self.rows += len(features)
        self.tokens += sum(row.get("length", 0) for row in features)
        return default_data_collator([{k: v for k, v in row.items() if k != "length"} for row in features])


def noisy_fifth(n: int, seed: int, val_size: int = 100):
    """A clean toy dataset in which a known fifth of the examples carries a wrong label."""
    sources, validation = toy_sources(sizes=(n,), noise=(0.0,), seed=seed, val_size=val_size)
    dataset = next(iter(sources.values()))
    rng = np.random.default_rng([seed, 5])
    wrong = np.zeros(n, dtype=bool)
    wrong[rng.permutation(n)[: n // 5]] = True
    labels = np.array(dataset["labels"])
    labels[wrong] = (labels[wrong] + rng.integers(1, NUM_CLASSES, wrong.sum())) % NUM_CLASSES
    return Dataset.from_dict({"features": dataset["features"], "labels": labels.tolist()}), validation, wrong
