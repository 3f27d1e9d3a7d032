"""On-the-fly conversion of stored uint8 images into normalized float tensors.

Vision sources keep ``pixel_values`` as compact uint8 ``(C, H, W)`` arrays and
attach :class:`NormalizePixels` with ``Dataset.with_transform``, so the float
tensors a model sees are built per batch and never stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def _as_tuple(value: float | Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, Sequence) else (float(value),)


@dataclass(frozen=True)
class NormalizePixels:
    """Batch transform: uint8 ``pixel_values`` -> ``(x / 255 - mean) / std`` as float32 tensors.

    ``mean``/``std`` are a scalar or one value per channel. Columns other than
    ``pixel_values`` pass through unchanged, so reading e.g. only ``labels``
    from a transformed dataset works. The instance is a frozen dataclass so two
    sources with the same normalization compare equal (``concatenate_datasets``
    then keeps the transform) and it pickles into DataLoader workers.

    The default ``0.5 / 0.5`` maps pixels to ``[-1, 1]``; pass dataset statistics
    (e.g. MNIST ``0.1307 / 0.3081``) for the usual per-dataset normalization, or
    ``mean=0, std=1`` when the model normalizes its input itself.
    """

    mean: float | tuple[float, ...] = 0.5
    std: float | tuple[float, ...] = 0.5

    def __post_init__(self):
        object.__setattr__(self, "mean", _as_tuple(self.mean))
        object.__setattr__(self, "std", _as_tuple(self.std))
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"NormalizePixels needs matching mean/std lengths and std > 0, got {self}")

    def __call__(self, batch: dict) -> dict:
        if "pixel_values" not in batch:
            return batch
        stored = np.asarray(batch["pixel_values"])
        if not np.issubdtype(stored.dtype, np.integer):
            # Casting would silently truncate; float pixels mean something stored transformed values.
            raise TypeError(f"NormalizePixels expects stored uint8 pixel_values, got {stored.dtype}")
        pixels = torch.from_numpy(stored.astype(np.float32)).div_(255.0)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        # A (B, C, H, W) tensor, not a list: datasets indexes it per row when un-batching.
        return {**batch, "pixel_values": (pixels - mean) / std}
