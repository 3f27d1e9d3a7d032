"""A tiny classification task with sources of known quality, shared by the core tests."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from torch import nn

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

    def __init__(self, seed: int = 0, hidden: int = 32):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(DIM, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES))

    def forward(self, features, labels=None):
        logits = self.net(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}
