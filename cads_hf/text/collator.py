"""Batch collation: pad token sequences to the longest in the batch, pass integer features through."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .chat_format import IGNORE_INDEX


class InstructionCollator:
    """Pad ``input_ids`` (pad token), ``attention_mask`` (0) and ``labels`` (``label_pad_id``).

    Every other feature must hold one integer per example (``source_id``, ``example_id``,
    ``length``, ...) and comes back as a ``LongTensor`` of shape ``(batch,)``, so per-example
    bookkeeping survives collation. A missing ``attention_mask`` is built from the lengths.
    """

    def __init__(self, pad_token_id: int, label_pad_id: int = IGNORE_INDEX, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None; call add_chat_special_tokens(tokenizer) first")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be positive, got {pad_to_multiple_of}")
        self.pad_token_id = pad_token_id
        self.label_pad_id = label_pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_values = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": self.label_pad_id}
        batch = {}
        for key, pad_value in pad_values.items():
            if key == "attention_mask" and key not in features[0]:
                rows = [[1] * n for n in lengths]
            elif key in features[0]:
                rows = [f[key] for f in features]
            else:
                continue  # no labels at inference time
            batch[key] = _pad(rows, width, pad_value)
        for key in (k for k in features[0] if k not in pad_values):
            values = [f[key] for f in features]
            if not all(_is_integer(v) for v in values):
                raise TypeError(
                    f"feature {key!r} is neither a padded sequence nor one integer per example; "
                    "drop it from the dataset before training"
                )
            batch[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
        return batch


def _is_integer(value: Any) -> bool:
    # 0-d integer tensors appear when the dataset is formatted as torch.
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_floating_point() and not value.is_complex()
    return isinstance(value, numbers.Integral)


def _pad(rows: Sequence[Sequence[int]], width: int, pad_value: int) -> torch.Tensor:
    out = torch.full((len(rows), width), pad_value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out
