import math

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from cads_hf.losses import IGNORE_INDEX, calibrated_logits, dataset_gradient, example_losses


def double_losses(outputs, labels):
    """Per-example cross-entropy in float64 (next-token for 3-D logits): `example_losses` without its float32 cast,
    so that the fit can be checked to 1e-6."""
    logits = outputs["logits"].double()
    if logits.dim() == 2:
        losses = F.cross_entropy(logits, labels, reduction="none")
        return losses, torch.ones_like(labels)
    token = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none")
    return token.sum(1), (labels[:, 1:] != IGNORE_INDEX).sum(1)


def scipy_inverse_temperature(logits, labels):
    """a* = argmin_a sum loss(a * logits), by scipy's bounded scalar minimizer over log a."""
    total = lambda u: float(double_losses({"logits": logits * math.exp(u)}, labels)[0].sum())
    return math.exp(minimize_scalar(total, bounds=(math.log(1e-2), math.log(1e2)), method="bounded",
                                    options={"xatol": 1e-10}).x)


def classifier_batch(scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (200,), generator=g)
    logits = torch.randn(200, 10, generator=g) * 0.3
    logits[torch.arange(200), labels] += 0.8
    return (logits * scale).double(), labels


def causal_lm_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 50, (4, 12), generator=g)
    labels[:, :3] = IGNORE_INDEX  # a prompt the loss skips
    labels[0, 9:] = IGNORE_INDEX  # padding
    logits = torch.randn(4, 12, 50, generator=g)
    logits[:, :-1].scatter_add_(-1, labels[:, 1:].clamp_min(0)[..., None], torch.full((4, 11, 1), 2.0))
    return (logits * 3.0).double(), labels


@pytest.mark.parametrize("scale", [0.2, 1.0, 8.0])  # under-confident, about right, over-confident
def test_inverse_temperature_matches_scipy_for_a_classifier(scale):
    logits, labels = classifier_batch(scale)
    outputs, a = calibrated_logits(double_losses, {"logits": logits}, labels)
    assert float(a) == pytest.approx(scipy_inverse_temperature(logits, labels), rel=1e-6)
    # The library's float32 losses land within their rounding.
    _, a32 = calibrated_logits(example_losses, {"logits": logits.float()}, labels)
    assert float(a32) == pytest.approx(float(a), rel=1e-3)
    torch.testing.assert_close(outputs["logits"], logits * a)
    # Calibration only lowers the loss, and undoes a rescaling of the logits.
    calibrated = double_losses(outputs, labels)[0].sum()
    assert calibrated <= double_losses({"logits": logits}, labels)[0].sum()
    rescaled, _ = calibrated_logits(double_losses, {"logits": logits * 3.0}, labels)
    torch.testing.assert_close(double_losses(rescaled, labels)[0].sum(), calibrated, rtol=1e-9, atol=1e-9)


def test_inverse_temperature_matches_scipy_for_a_causal_lm_with_masked_positions():
    logits, labels = causal_lm_batch()
    _, a = calibrated_logits(double_losses, {"logits": logits}, labels)
    assert float(a) == pytest.approx(scipy_inverse_temperature(logits, labels), rel=1e-6)


def test_gradient_at_the_fitted_temperature_is_the_calibrated_losss_gradient():
    """Envelope theorem: differentiating through the logits at the fixed a* gives the derivative of
    min_a f(a, logits), which finite differences (refitting a* each time) measure."""
    logits, labels = classifier_batch(0.5, seed=1)
    logits = logits.requires_grad_(True)
    outputs, _ = calibrated_logits(double_losses, {"logits": logits}, labels)
    (grad,) = torch.autograd.grad(double_losses(outputs, labels)[0].sum(), logits)

    def calibrated_loss(z):
        return float(double_losses(calibrated_logits(double_losses, {"logits": z}, labels)[0], labels)[0].sum())

    eps = 1e-5
    for index in [(0, 0), (3, int(labels[3])), (17, 5), (199, 9)]:
        bump = torch.zeros_like(logits)
        bump[index] = eps
        numeric = (calibrated_loss(logits.detach() + bump) - calibrated_loss(logits.detach() - bump)) / (2 * eps)
        assert float(grad[index]) == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_reduce_fits_one_temperature_for_the_global_batch():
    """With `reduce` summing f' and f'' over shards, a shard gets the a* of the whole batch (what every process of a
    distributed search computes); here `reduce` adds the other shard's derivatives at the same a by hand."""
    logits, labels = classifier_batch(2.0, seed=2)
    _, whole = calibrated_logits(double_losses, {"logits": logits}, labels)
    (mine, my_labels), (other, other_labels) = (logits[:100], labels[:100]), (logits[100:], labels[100:])
    current = {}

    def shard_loss(outputs, labels):
        current["a"] = (outputs["logits"].detach() / mine)[0, 0].item()  # the a this evaluation uses
        return double_losses(outputs, labels)

    def reduce(derivatives):
        a = torch.tensor(current["a"], dtype=torch.float64, requires_grad=True)
        (f_a,) = torch.autograd.grad(double_losses({"logits": other * a}, other_labels)[0].sum(), a,
                                     create_graph=True)
        (f_aa,) = torch.autograd.grad(f_a, a)
        return derivatives + torch.stack([f_a.detach(), f_aa])

    _, sharded = calibrated_logits(shard_loss, {"logits": mine}, my_labels, reduce=reduce)
    assert float(sharded) == pytest.approx(float(whole), rel=1e-6)
    _, alone = calibrated_logits(double_losses, {"logits": mine}, my_labels)
    assert abs(float(alone) - float(whole)) > 1e-3  # the shard alone would fit another temperature


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = torch.nn.Embedding(7, 5), torch.nn.Linear(5, 7)

    def forward(self, input_ids):
        return {"logits": self.head(self.embed(input_ids))}


@pytest.mark.parametrize("per_example", [False, True])
def test_dataset_gradient_is_the_gradient_of_the_mean_loss_over_batches(per_example):
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": torch.randint(0, 7, (6,), generator=g)} for _ in range(5)]
    for row, prompt in zip(rows, [1, 2, 3, 1, 4]):  # sequences with different numbers of trained tokens
        row["labels"] = row["input_ids"].clone()
        row["labels"][:prompt] = IGNORE_INDEX
    collate = lambda batch: {key: torch.stack([row[key] for row in batch]) for key in batch[0]}
    model = TinyLM()
    model.head.weight.grad = torch.ones_like(model.head.weight)  # left as it was

    gradient = dataset_gradient(model, rows, collate, batch_size=2, per_example=per_example)
    whole = collate(rows)
    sums, counts = example_losses(model(input_ids=whole["input_ids"]), whole["labels"])
    mean = sums.sum() / (len(rows) if per_example else counts.sum())
    expected = torch.autograd.grad(mean, list(model.parameters()))
    for got, want in zip(gradient, expected):
        torch.testing.assert_close(got, want)
    assert torch.equal(model.head.weight.grad, torch.ones_like(model.head.weight)) and model.training
