"""ImageCollator: stacking, integer/bool pass-through, guard against unnormalized pixels."""

import numpy as np
import pytest
import torch

from cads_hf.vision import ImageCollator, synthetic_digits, with_label_noise


def test_collates_dataset_rows_with_extra_integer_columns():
    dataset = with_label_noise(synthetic_digits(8, seed=0), 0.5, num_classes=10, seed=0)
    dataset = dataset.add_column("source_id", [3] * 8).add_column("example_id", np.arange(8))
    rows = [dataset[i] for i in range(5)]
    batch = ImageCollator()(rows)
    assert set(batch) == {"pixel_values", "labels", "clean_label", "is_noisy", "source_id", "example_id"}
    assert batch["pixel_values"].shape == (5, 1, 28, 28) and batch["pixel_values"].dtype == torch.float32
    torch.testing.assert_close(batch["pixel_values"][2], rows[2]["pixel_values"])
    for key in ("labels", "clean_label", "source_id", "example_id"):
        assert batch[key].dtype == torch.long
        assert batch[key].tolist() == [row[key] for row in rows]
    assert batch["is_noisy"].dtype == torch.bool
    assert batch["is_noisy"].tolist() == [row["is_noisy"] for row in rows]


def test_numpy_and_tensor_scalars_become_long_and_strings_are_dropped():
    rows = [
        {"pixel_values": np.zeros((1, 4, 4), np.float32), "labels": np.int64(i), "source_id": torch.tensor(i), "path": "x"}
        for i in range(3)
    ]
    batch = ImageCollator()(rows)
    assert set(batch) == {"pixel_values", "labels", "source_id"}
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 2]
    assert batch["source_id"].dtype == torch.long and batch["source_id"].tolist() == [0, 1, 2]


def test_rejects_unnormalized_uint8_pixels():
    raw = synthetic_digits(2, seed=0).with_format(None)
    rows = [{**raw[i], "pixel_values": np.asarray(raw[i]["pixel_values"], dtype=np.uint8)} for i in range(2)]
    with pytest.raises(TypeError, match="NormalizePixels"):
        ImageCollator()(rows)
