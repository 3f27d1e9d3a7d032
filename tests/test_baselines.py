import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toy import CountingCollator, noisy_fifth
from test_example_selection import make_args as search_args
from toy import ToyClassifier, toy_sources
from transformers import default_data_collator

from cads_hf.baselines import (
    PBCS,
    BilevelCADS,
    best_single_source,
    full_dataset,
    project_to_size,
    random_subset,
    uniform_mixture,
)
from cads_hf.evaluation import classification_accuracy


def model_init():
    return ToyClassifier()


BUDGET = 70  # not a multiple of the batch size: the last batch is cut at the budget
K = 2


def make_args(tmp_path, **overrides):
    values = dict(compute_budget=BUDGET, per_device_train_batch_size=16, per_device_eval_batch_size=32, num_ratio_samples=K)
    return search_args(tmp_path, **{**values, **overrides})


# ------------------------------------------------------------------------------------------- PBCS projection
scores = st.lists(st.floats(-1.0, 2.0), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(values=scores, fraction=st.floats(0.0, 1.0), eps=st.sampled_from([0.0, 1e-3]))
def test_projection_keeps_the_size_and_the_bounds(values, fraction, eps):
    s = torch.tensor(values, dtype=torch.float64)
    n = len(s)
    k = n * eps + fraction * n * (1 - 2 * eps)
    p = project_to_size(s, k, low=eps, high=1 - eps)
    assert abs(float(p.sum()) - k) <= 1e-6
    assert float(p.min()) >= eps and float(p.max()) <= 1 - eps
    # A shift-and-clip: the order of the scores is kept, and projecting again changes nothing.
    order = torch.argsort(s)
    assert torch.all(p[order][1:] >= p[order][:-1])
    assert torch.allclose(project_to_size(p, k, low=eps, high=1 - eps), p, atol=1e-8)


def test_projection_rejects_an_unreachable_size():
    with pytest.raises(ValueError, match="out of reach"):
        project_to_size(torch.full((4,), 0.5), 4.5)


# ------------------------------------------------------------------------------------------- Bilevel / PBCS
def _check_search(search, history, collator, eval_size):
    assert len(history) == 2
    for record in history:
        assert record["train_samples"] == K * BUDGET  # K fresh models, each trained for exactly C
        assert record["eval_samples"] == K * eval_size
        assert record["cost"] == K * (BUDGET + eval_size)
        assert record["subset_size"] == pytest.approx(np.mean(record["subset_sizes"]))
        assert np.isfinite(record["mean_reward"]) and not record["skipped"]
    assert [r["total_cost"] for r in history] == [K * (BUDGET + eval_size), 2 * K * (BUDGET + eval_size)]
    assert collator.rows == search.total_cost  # what the inner Trainers really saw


def test_bilevel_cads_costs_k_budgets_per_outer_step(tmp_path):
    dataset, validation, _ = noisy_fifth(40, seed=0, val_size=20)
    collator = CountingCollator()
    search = BilevelCADS(model_init, dataset, validation, make_args(tmp_path), data_collator=collator)
    selection = search.run(2)
    _check_search(search, search.history, collator, len(validation))
    assert not torch.allclose(search.policy.s.detach(), torch.full((40,), 0.5, dtype=torch.float64))
    assert selection.method == "bilevel-cads" and selection.dataset_size == 40
    assert selection.metrics["search_cost"] == search.total_cost


def test_pbcs_keeps_the_coreset_size_and_costs_k_budgets_per_outer_step(tmp_path):
    dataset, validation, _ = noisy_fifth(40, seed=0, val_size=20)
    collator = CountingCollator()
    search = PBCS(model_init, dataset, validation, make_args(tmp_path), coreset_size=10, data_collator=collator)
    assert torch.allclose(search.policy.s.detach(), torch.full((40,), 0.25, dtype=torch.float64))
    sums = []
    for _ in range(2):
        search.step()
        sums.append(float(search.policy.s.detach().sum()))
    _check_search(search, search.history, collator, len(validation))
    assert sums == pytest.approx([10.0, 10.0], abs=1e-6)
    assert [r["expected_size"] for r in search.history] == pytest.approx([10.0, 10.0], abs=1e-6)
    assert len(search.selection("top_k", num_examples=10)) == 10


def test_inner_runs_are_reproducible_and_an_empty_subset_scores_the_untrained_model(tmp_path):
    dataset, validation, _ = noisy_fifth(40, seed=0, val_size=20)
    search = BilevelCADS(model_init, dataset, validation, make_args(tmp_path))
    # Same init and data order in every inner run: two runs on the same subset agree, other subsets differ.
    ids = list(range(0, 40, 3))
    first, second = search._inner_run(ids, str(tmp_path / "a")), search._inner_run(ids, str(tmp_path / "b"))
    assert first == second and first[1] == BUDGET
    assert search._inner_run(list(range(1, 40, 3)), str(tmp_path / "c"))[0] != first[0]
    loss, spent = search._inner_run([], str(tmp_path / "empty"))
    features, labels = torch.tensor(validation["features"]), torch.tensor(validation["labels"])
    with torch.no_grad():
        untrained = float(model_init()(features, labels)["loss"])
    assert spent == 0
    assert loss == pytest.approx(untrained, rel=1e-5)


# ------------------------------------------------------------------------------------------- static baselines
def _sources():
    return toy_sources(sizes=(30, 30, 30), noise=(0.0, 0.5, 1.0), val_size=20)


@pytest.mark.parametrize("baseline", ["random", "uniform", "half", "full"])
def test_static_baseline_trains_for_exactly_the_budget(tmp_path, baseline):
    sources, validation = _sources()
    collator = CountingCollator()
    common = dict(eval_dataset=validation, args=make_args(tmp_path), data_collator=collator)
    run = {
        "random": lambda: random_subset(model_init, sources, subset_size=25, **common),
        "uniform": lambda: uniform_mixture(model_init, sources, **common),
        "half": lambda: uniform_mixture(model_init, sources, ratio=0.5, **common),
        "full": lambda: full_dataset(model_init, sources["noise_0"], **common),
    }[baseline]()
    assert collator.rows == BUDGET + len(validation)  # the training sequence, then one evaluation
    assert run.metrics["train_samples"] == BUDGET
    assert run.trainer.state.global_step == 5
    assert {"eval_loss", "eval_accuracy", "train_samples"} <= set(run.metrics)
    direct = classification_accuracy(run.trainer.model, validation, default_data_collator)
    assert run.metrics["eval_accuracy"] == pytest.approx(direct)
    if baseline == "random":
        assert len(run.example_ids) == 25 and len(set(run.example_ids)) == 25


def test_best_single_source_reports_every_source_and_keeps_the_winner(tmp_path):
    sources, validation = _sources()
    collator = CountingCollator()
    comparison = best_single_source(
        model_init, sources, validation, make_args(tmp_path, learning_rate=3e-2), data_collator=collator
    )
    assert collator.rows == 3 * (BUDGET + len(validation))
    losses = {name: run.metrics["eval_loss"] for name, run in comparison.runs.items()}
    assert set(losses) == set(sources)
    assert comparison.best == min(losses, key=losses.get)
    assert comparison.best != "noise_100"  # random labels cannot win on a clean validation set
    assert [name for name, run in comparison.runs.items() if run.trainer is not None] == [comparison.best]
