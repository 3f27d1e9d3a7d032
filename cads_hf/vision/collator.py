"""Batch collation for vision sources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral

import numpy as np
import torch


class ImageCollator:
    """Collate examples of a vision source into model-ready tensors.

    * ``pixel_values`` -> stacked float tensor ``(B, C, H, W)``;
    * ``labels`` and every other integer feature (e.g. ``source_id``,
      ``example_id``, ``clean_label``) -> ``LongTensor``;
    * boolean features (e.g. ``is_noisy``) -> ``BoolTensor``;
    * anything else (strings, floats, arrays) is dropped, like
      ``transformers.DefaultDataCollator`` drops strings.

    Raises ``TypeError`` when ``pixel_values`` is not floating point: uint8
    pixels mean the dataset lost its ``NormalizePixels`` transform, and
    feeding them to a model unscaled would silently train on garbage.
    """

    def __call__(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])
        if not pixels.is_floating_point():
            raise TypeError(
                f"pixel_values has dtype {pixels.dtype}; expected float tensors from the dataset's "
                "NormalizePixels transform (see cads_hf.vision.transforms)"
            )
        batch = {"pixel_values": pixels}
        for key, value in features[0].items():
            if isinstance(value, torch.Tensor) and value.ndim == 0:
                value = value.item()
            if isinstance(value, (bool, np.bool_)):
                batch[key] = torch.tensor([bool(f[key]) for f in features], dtype=torch.bool)
            elif isinstance(value, Integral):
                batch[key] = torch.tensor([int(f[key]) for f in features], dtype=torch.long)
        return batch
