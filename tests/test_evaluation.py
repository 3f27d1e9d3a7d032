import pytest
import torch

from cads_hf.evaluation import classification_accuracy, load_metric


def test_shipped_accuracy_metric_loads_offline():
    assert load_metric("accuracy").compute(predictions=[1, 2, 3, 4], references=[1, 2, 0, 4]) == {"accuracy": 0.75}
    with pytest.raises(ValueError, match="No shipped metric 'bleu'"):
        load_metric("bleu")


def test_classification_accuracy_ignores_bookkeeping_columns():
    class Fixed(torch.nn.Module):
        def forward(self, features, labels=None):
            return {"logits": features}

    rows = [{"features": [0.0, 1.0], "labels": 1, "source_id": 0}, {"features": [1.0, 0.0], "labels": 1, "source_id": 2}]
    collate = lambda batch: {k: torch.tensor([r[k] for r in batch]) for k in batch[0]}  # noqa: E731
    assert classification_accuracy(Fixed(), rows, collate, batch_size=1) == 0.5
