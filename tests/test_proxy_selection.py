"""Proxy selection: the power-law extrapolation, the candidates, the proxies' data, budget and batch, and a real run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from toy import ToyClassifier, toy_sources

import cads_hf.proxy_selection as proxy_selection
from cads_hf import CADSConfig, select_by_proxies
from cads_hf.proxy_selection import (
    candidate_name,
    default_proxy_fractions,
    every_subset,
    extrapolate_to_full_size,
    nested_candidates,
)


def config(tmp_path, **overrides) -> CADSConfig:
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=32, learning_rate=1e-2, lr_scheduler_type="constant",
        report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no", compute_budget=9000, seed=0,
        proxy_fractions=[0.1, 0.25], proxy_candidates="nested", proxy_refine_fraction=None,
    )
    return CADSConfig(**{**values, **overrides})


def test_extrapolation_recovers_a_power_law_and_fits_more_points_by_least_squares():
    c, a = 0.3, 0.4
    assert extrapolate_to_full_size({f: c * f**-a for f in (0.1, 0.25)}) == pytest.approx(c, rel=1e-12)
    points = {0.05: 0.9, 0.1: 0.5, 0.3: 0.35}
    slope, intercept = np.polyfit(np.log(list(points)), np.log(list(points.values())), 1)
    assert extrapolate_to_full_size(points) == pytest.approx(math.exp(intercept))
    assert extrapolate_to_full_size({0.25: 0.42}) == 0.42
    with pytest.raises(ValueError, match="fraction 0.25 has error 0"):
        extrapolate_to_full_size({0.1: 0.3, 0.25: 0.0})


def test_nested_candidates_add_sources_most_valuable_first():
    assert nested_candidates({"a": 0.3, "b": 0.1, "c": 0.2}) == [{"a": 1.0}, {"a": 1.0, "c": 1.0}, {"a": 1.0, "c": 1.0, "b": 1.0}]
    assert candidate_name({"b": 1.0, "c": 0.5, "a": 0.0}) == "b+0.5*c"
    assert [candidate_name(kept) for kept in every_subset(["a", "b", "c"])] == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]


def test_auto_candidates_are_every_subset_for_two_sources_and_nested_beyond(tmp_path, monkeypatch):
    """Two sources: A alone, B alone and both, with no values measured, so B alone is tried although A is the more
    valuable (the nested candidates would be A and A+B). Three sources: the nested candidates, ordered by value."""
    errors = {(1.0, 0.0): 0.3, (0.0, 1.0): 0.1, (1.0, 1.0): 0.2}  # B alone is best at every fraction
    trained = []

    def fake_train_on_mixture(model, cut, ratios, budget, args, args_overrides, **kwargs):
        trained.append(budget.amount / 9000)
        return SimpleNamespace(model=tuple(ratios))

    monkeypatch.setattr(proxy_selection, "train_on_mixture", fake_train_on_mixture)
    monkeypatch.setattr(proxy_selection, "source_values", lambda *args, **kwargs: {"A": 2.0, "B": 1.0, "C": 0.0})
    auto = config(tmp_path, proxy_candidates="auto", proxy_fractions=None)
    two = {"A": list(range(400)), "B": list(range(400))}
    mixture = select_by_proxies(lambda: None, two, None, auto, validation_error=lambda model: errors[model[:2]])
    assert list(mixture.config["candidates"]) == ["A", "B", "A+B"] and mixture.ratios == {"A": 0.0, "B": 1.0}
    assert "source_values" not in mixture.config
    assert mixture.config["proxy_fractions"] == [0.25, 0.5] and mixture.metrics["proxy_samples_over_final"] == 2.25
    assert sorted(trained) == [0.25] * 3 + [0.5] * 3

    three = {**two, "C": list(range(400))}
    mixture = select_by_proxies(lambda: None, three, None, auto, validation_error=lambda model: 1.0)
    assert list(mixture.config["candidates"]) == ["A", "A+B", "A+B+C"] and "source_values" in mixture.config
    subsets = config(tmp_path, proxy_candidates="subsets", proxy_fractions=None)
    mixture = select_by_proxies(lambda: None, three, None, subsets, validation_error=lambda model: 1.0)
    assert len(mixture.config["candidates"]) == 7 and mixture.config["proxy_fractions"] == [0.1, 0.25]


def test_proxies_cut_data_budget_and_batch_and_the_extrapolation_decides(tmp_path, monkeypatch):
    """A small clean source A and a large noisy one B. At the larger proxy A + B beats A alone, but A's error falls
    faster with size, so at full size A alone is predicted best (0.139 against 0.143), and chosen."""
    sources = {"A": list(range(40)), "B": list(range(400))}
    errors = {  # (kept ratios, fraction) -> validation error of the proxy
        ((1.0, 0.0), 0.1): 0.5, ((1.0, 0.0), 0.25): 0.3,
        ((0.0, 1.0), 0.1): 0.3, ((0.0, 1.0), 0.25): 0.27,
        ((1.0, 1.0), 0.1): 0.25, ((1.0, 1.0), 0.25): 0.2,
    }
    calls, measured = [], []

    def fake_train_on_mixture(model, cut, ratios, budget, args, args_overrides, **kwargs):
        fraction = budget.amount / 9000
        calls.append({"cut": {k: set(v.order) for k, v in cut.items()}, "ratios": tuple(ratios),
                      "fraction": fraction, "batch": args_overrides["per_device_train_batch_size"]})
        return SimpleNamespace(model=(tuple(ratios), round(fraction, 6)))

    def fake_source_values(trainer, sources, examples, eval_dataset, per_example, max_validation):
        measured.append({"model": trainer.model, "examples": dict(zip(sources, map(set, examples))),
                         "per_example": per_example, "max_validation": max_validation})
        return {"A": 2.0, "B": 1.0}

    monkeypatch.setattr(proxy_selection, "train_on_mixture", fake_train_on_mixture)
    monkeypatch.setattr(proxy_selection, "source_values", fake_source_values)
    draws = []  # what an unseeded model initialization would draw, once per proxy run
    mixture = select_by_proxies(lambda: draws.append(float(torch.rand(()))), sources, None,
                                config(tmp_path, proxy_value_examples=50), validation_error=errors.get)
    assert len(draws) == 4 and len(set(draws)) == 1  # every candidate starts from the same weights
    assert mixture.ratios == {"A": 1.0, "B": 0.0}
    assert mixture.config["candidates"]["A"] == pytest.approx(0.3 * (0.3 / 0.5) ** (math.log(4) / math.log(2.5)))
    assert list(mixture.config["candidates"]) == ["A", "A+B"]  # most valuable first, then the union
    assert mixture.config["candidates"]["A"] < mixture.config["candidates"]["A+B"]
    assert mixture.config["source_values"] == {"A": 2.0, "B": 1.0}
    assert len(calls) == 4 and mixture.metrics["proxy_samples_over_final"] == pytest.approx(2 * 0.35)
    for call in calls:
        f = call["fraction"]
        assert {k: len(v) for k, v in call["cut"].items()} == {"A": round(40 * f), "B": round(400 * f)}
        assert call["batch"] == round(32 * f)  # as many steps as the full run
    # The union runs first; its largest proxy's model is measured on examples that proxy did not train on.
    assert [c["ratios"] for c in calls[:2]] == [(1.0, 1.0)] * 2
    (value,) = measured
    assert value["model"] == ((1.0, 1.0), 0.25) and value["per_example"] and value["max_validation"] == 50
    assert {k: len(v) for k, v in value["examples"].items()} == {"A": 30, "B": 50}
    assert all(not (value["examples"][k] & calls[1]["cut"][k]) for k in sources)

    # Values the other way round: B alone, then the union.
    monkeypatch.setattr(proxy_selection, "source_values", lambda *args, **kwargs: {"A": 1.0, "B": 2.0})
    mixture = select_by_proxies(lambda: None, sources, None, config(tmp_path), validation_error=errors.get)
    assert list(mixture.config["candidates"]) == ["B", "B+A"] and mixture.ratios == {"A": 1.0, "B": 1.0}

    calls.clear()
    select_by_proxies(lambda: None, sources, None, config(tmp_path, proxy_keep_steps=False), validation_error=errors.get)
    assert {call["batch"] for call in calls} == {32}

    # The caller's candidates instead: only they are trained (A + 0.5 B on half of the cut B), and the best wins.
    calls.clear()
    half = {**errors, ((1.0, 0.5), 0.1): 0.3, ((1.0, 0.5), 0.25): 0.15}
    mixture = select_by_proxies(lambda: None, sources, None, config(tmp_path), validation_error=half.get,
                                candidates=[{"A": 1.0}, {"A": 1.0, "B": 0.5}, {"B": 1.0, "A": 1.0}])
    assert mixture.ratios == {"A": 1.0, "B": 0.5}
    assert list(mixture.config["candidates"]) == ["A", "A+0.5*B", "B+A"]
    assert {call["ratios"] for call in calls} == {(1.0, 0.0), (1.0, 0.5), (1.0, 1.0)} and len(calls) == 6

    nan_for_b = {**errors, ((0.0, 1.0), 0.25): float("nan")}
    with pytest.raises(ValueError, match="Candidate B: Proxy at fraction 0.25 has error nan"):
        select_by_proxies(lambda: None, sources, None, config(tmp_path), validation_error=nan_for_b.get)


def test_close_contenders_are_refined_by_a_larger_proxy(tmp_path, monkeypatch):
    """A small clean source A and a noisy B (the errors of seed 1 at 16 epochs of the scarce-clean images). From 10%
    and 25%, A + B (0.073) is predicted just below A alone (0.075): within the 10% margin, so both take a 50% proxy,
    where A + B levels off (its noisy labels memorized) and A keeps falling; the fit through all three fractions puts
    A alone first (0.094 against 0.113). B alone, third, is not refined."""
    errors = {
        ((1.0, 0.0), 0.1): 0.384, ((1.0, 0.0), 0.25): 0.2, ((1.0, 0.0), 0.5): 0.148,
        ((1.0, 1.0), 0.1): 0.216, ((1.0, 1.0), 0.25): 0.14, ((1.0, 1.0), 0.5): 0.146,
        ((0.0, 1.0), 0.1): 0.3, ((0.0, 1.0), 0.25): 0.25,
    }
    calls = []

    def fake_train_on_mixture(model, cut, ratios, budget, args, args_overrides, **kwargs):
        calls.append((tuple(ratios), round(budget.amount / 9000, 6)))
        return SimpleNamespace(model=calls[-1])

    monkeypatch.setattr(proxy_selection, "train_on_mixture", fake_train_on_mixture)
    sources = {"A": list(range(40)), "B": list(range(400))}
    candidates = [{"A": 1.0}, {"B": 1.0}, {"A": 1.0, "B": 1.0}]
    two_point = {kept: extrapolate_to_full_size({f: errors[(kept, f)] for f in (0.1, 0.25)})
                 for kept in [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]}
    assert two_point[(1.0, 1.0)] < two_point[(1.0, 0.0)] <= 1.1 * two_point[(1.0, 1.0)] < two_point[(0.0, 1.0)]

    refining = config(tmp_path, proxy_refine_fraction=0.5)
    mixture = select_by_proxies(lambda: None, sources, None, refining, validation_error=errors.get, candidates=candidates)
    assert mixture.ratios == {"A": 1.0, "B": 0.0}
    assert sorted(call for call in calls if call[1] == 0.5) == [((1.0, 0.0), 0.5), ((1.0, 1.0), 0.5)]
    three_point = {kept: extrapolate_to_full_size({f: errors[(kept, f)] for f in (0.1, 0.25, 0.5)})
                   for kept in [(1.0, 0.0), (1.0, 1.0)]}
    assert mixture.config["refined"] == {"A": three_point[(1.0, 0.0)], "A+B": three_point[(1.0, 1.0)]}
    assert mixture.metrics["predicted_validation_error"] == three_point[(1.0, 0.0)]
    assert mixture.metrics["proxy_samples_over_final"] == pytest.approx(3 * 0.35 + 2 * 0.5)
    assert mixture.config["candidates"]["A+B"] == two_point[(1.0, 1.0)]  # the two-point errors stay on record

    # Outside the margin, or with no fraction above the proxies', nothing more is trained and the two points decide.
    for unrefined in (config(tmp_path, proxy_refine_fraction=0.5, proxy_refine_margin=0.01),
                      config(tmp_path, proxy_refine_fraction=0.25)):
        calls.clear()
        mixture = select_by_proxies(lambda: None, sources, None, unrefined, validation_error=errors.get,
                                    candidates=candidates)
        assert mixture.ratios == {"A": 1.0, "B": 1.0} and "refined" not in mixture.config and len(calls) == 6


def test_unset_fractions_are_the_largest_that_cost_at_most_2_25_final_runs(tmp_path, monkeypatch):
    assert default_proxy_fractions(1) == default_proxy_fractions(3) == [0.25, 0.5]  # 3 x 0.75 = 2.25
    assert default_proxy_fractions(4) == default_proxy_fractions(5) == [0.1, 0.25]  # 4 x 0.75 = 3; 5 x 0.35
    assert default_proxy_fractions(9) == [0.1, 0.25]  # none fits: the smallest
    budgets = []

    def fake_train_on_mixture(model, cut, ratios, budget, args, args_overrides, **kwargs):
        budgets.append(budget.amount / 9000)
        return SimpleNamespace(model=None)

    monkeypatch.setattr(proxy_selection, "train_on_mixture", fake_train_on_mixture)
    monkeypatch.setattr(proxy_selection, "source_values", lambda *args, **kwargs: {"A": 1.0, "B": 0.0})
    sources = {"A": list(range(400)), "B": list(range(400))}
    unset = config(tmp_path, proxy_fractions=None)
    mixture = select_by_proxies(lambda: None, sources, None, unset, validation_error=lambda m: 1.0)
    assert sorted(set(budgets)) == [0.25, 0.5] and mixture.config["proxy_fractions"] == [0.25, 0.5]
    assert mixture.metrics["proxy_samples_over_final"] == 1.5
    grid = [{"A": 1.0}, {"B": 1.0}, {"A": 1.0, "B": 0.5}, {"A": 0.5, "B": 1.0}]  # four named candidates
    mixture = select_by_proxies(lambda: None, sources, None, unset, validation_error=lambda m: 1.0, candidates=grid)
    assert mixture.config["proxy_fractions"] == [0.1, 0.25]


def test_token_budgets_are_checked_and_cut_in_tokens(tmp_path, monkeypatch):
    from datasets import Dataset

    sources = {"A": Dataset.from_dict({"length": [10] * 40}), "B": Dataset.from_dict({"length": [30] * 40})}
    budgets = []

    def fake_train_on_mixture(model, cut, ratios, budget, args, args_overrides, **kwargs):
        budgets.append((budget.amount, budget.unit))
        return SimpleNamespace(model=None)

    monkeypatch.setattr(proxy_selection, "train_on_mixture", fake_train_on_mixture)
    units = []  # a source's value is measured per token under a token budget
    monkeypatch.setattr(proxy_selection, "source_values",
                        lambda *args, per_example, **kwargs: units.append(per_example) or {"A": 1.0, "B": 0.0})
    select_by_proxies(lambda: None, sources, None, config(tmp_path, budget_unit="tokens"), validation_error=lambda m: 1.0)
    assert set(budgets) == {(900.0, "tokens"), (2250.0, "tokens")} and units == [False]
    # 20 tokens per example on average: 0.1 x 400 tokens pays for 2 examples, fewer than the proxy's batch of 3.
    with pytest.raises(ValueError, match="proxy_fractions: the proxy at fraction 0.1 is too small"):
        select_by_proxies(lambda: None, sources, None, config(tmp_path, budget_unit="tokens", compute_budget=400),
                          validation_error=lambda m: 1.0)


def test_selects_the_clean_sources_on_a_real_run(tmp_path):
    sources, validation = toy_sources(sizes=(300, 300, 300), noise=(0.0, 0.2, 1.0))
    validation = validation.add_column("note", [0] * len(validation))  # not a model input: dropped, as in training
    mixture = select_by_proxies(lambda: ToyClassifier(seed=0), sources, validation, config(tmp_path))
    assert mixture.ratios["noise_0"] == 1.0 and mixture.ratios["noise_100"] == 0.0
    values = mixture.config["source_values"]
    assert values["noise_0"] > values["noise_20"] > 0 > values["noise_100"]  # pure noise opposes validation
    assert list(mixture.config["candidates"]) == ["noise_0", "noise_0+noise_20", "noise_0+noise_20+noise_100"]
    assert all(error > 0 for error in mixture.config["candidates"].values())


def test_cached_rows_change_no_choice_and_read_each_row_once(tmp_path):
    """The proxies read every row of the cut sources and of validation once, not once per candidate and repeat, and
    the selection is the same to the last digit as without the cache."""
    from datasets import Dataset

    reads = []

    class Counted(Dataset):
        def __getitems__(self, keys):
            reads.extend(keys)
            return super().__getitems__(keys)

    sources, validation = toy_sources(sizes=(300, 300, 300), noise=(0.0, 0.2, 1.0))
    sources = {name: Counted(source.data) for name, source in sources.items()}
    validation = Counted(validation.data)
    results, rows_read = [], []
    for cache in (False, True):
        reads.clear()
        mixture = select_by_proxies(lambda: ToyClassifier(seed=0), sources, validation,
                                    config(tmp_path, proxy_cache_rows=cache))
        results.append((mixture.ratios, mixture.config["candidates"], mixture.config["source_values"]))
        rows_read.append(len(reads))
    assert results[0] == results[1]
    # Budget 9,000 over 900 examples: 10 passes. Cached, at most the 25% cut (225 rows), the value pass's examples
    # (3 x 225 left out) and validation (200) are read, once each.
    assert rows_read[1] <= 225 + 3 * 225 + 200 < rows_read[0] / 5


def test_source_value_is_the_cosine_so_large_gradients_do_not_buy_rank():
    """A copy of the validation set (cosine 1) against the same examples scaled up tenfold: larger gradients in
    nearly the same direction, so a larger inner product with the validation gradient but a smaller cosine."""
    from transformers import default_data_collator

    _, validation = toy_sources(sizes=(1,), noise=(0.0,), val_size=64)
    features = torch.tensor(validation["features"])
    scaled = validation.map(lambda row: {"features": [10 * x for x in row["features"]]})
    model = ToyClassifier(seed=0)
    trainer = SimpleNamespace(
        model=model, data_collator=default_data_collator,
        args=SimpleNamespace(per_device_eval_batch_size=16, device="cpu"),
        _get_collator_with_removed_columns=lambda collate, split: collate,
    )
    sources = {"scaled": scaled, "copy": validation}
    values = proxy_selection.source_values(trainer, sources, [range(64), range(64)], validation, True, 64)

    def gradient(inputs):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs)["logits"], torch.tensor(validation["labels"])).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g_val, g_scaled = gradient(features), gradient(10 * features)
    assert values["copy"] == pytest.approx(1.0, abs=1e-5)
    assert values["scaled"] == pytest.approx(float(torch.nn.functional.cosine_similarity(g_val, g_scaled, 0)), rel=1e-4)
    assert g_val @ g_scaled > g_val @ g_val and values["scaled"] < values["copy"]  # the inner product ranks it first
    assert nested_candidates(values)[0] == {"copy": 1.0}


def test_bad_proxy_settings_name_the_argument_or_source(tmp_path):
    sources, validation = toy_sources(sizes=(300, 3), noise=(0.0, 0.2))
    with pytest.raises(ValueError, match="proxy_fractions"):
        config(tmp_path, proxy_fractions=[0.5, 1.0])
    with pytest.raises(ValueError, match="proxy_candidates"):
        config(tmp_path, proxy_candidates="every")
    with pytest.raises(ValueError, match="proxy_fractions: the proxy at fraction 0.1 is too small"):
        select_by_proxies(lambda: ToyClassifier(), {"noise_0": sources["noise_0"]}, validation,
                          config(tmp_path, compute_budget=20))
    with pytest.raises(ValueError, match="fraction 0.1 keeps no example of source 'noise_20' \\(3 examples\\)"):
        select_by_proxies(lambda: ToyClassifier(), sources, validation, config(tmp_path))
    for bad, message in [([{"noise_0": 1.0, "clean": 1.0}], "candidates\\[0\\] names unknown source\\(s\\) \\['clean'\\]"),
                         ([{"noise_0": 0.0}], "candidates\\[0\\] = .*one of them above 0"),
                         ([{"noise_0": 1.5}], "ratios must lie in \\[0, 1\\]"), ([], "candidates is empty")]:
        with pytest.raises(ValueError, match=message):
            select_by_proxies(lambda: ToyClassifier(), {"noise_0": sources["noise_0"]}, validation, config(tmp_path),
                              candidates=bad)
    with pytest.raises(ValueError, match="compute_budget"):
        select_by_proxies(lambda: ToyClassifier(), {"noise_0": sources["noise_0"]}, validation,
                          config(tmp_path, compute_budget=None))
