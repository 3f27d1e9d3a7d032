"""Property tests: samplers, policies and budget accounting hold for any ratios, sizes, budgets and seeds.

tests/test_sources.py and tests/test_policies.py hold the properties of sample budgets and of the truncated
Gaussian's support; these cover token budgets, budget arithmetic, the search samplers' batches, nesting of the
selected subsets, the policies' bounds and the mixture artifact's agreement with the sampler.
"""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cads_hf import ComputeBudget, Mixture, SourceSet
from cads_hf.final_training import budget_sequence
from cads_hf.policies import BernoulliPolicy, TruncatedGaussianPolicy
from cads_hf.sources import SourceMixtureSampler, StratifiedSourceSampler, selected_indices

ratio = st.floats(0.0, 1.0, allow_nan=False)
sizes_and_ratios = st.lists(st.tuples(st.integers(1, 40), ratio), min_size=1, max_size=5)
seed = st.integers(0, 2**31 - 1)


def source_of(indices, sizes):
    return np.searchsorted(np.cumsum(sizes), np.asarray(indices), side="right")


def allowed_indices(sizes, ratios, seed_):
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return {int(offsets[j] + i) for j, idx in enumerate(selected_indices(sizes, ratios, seed_)) for i in idx}


def selects_something(sizes, ratios):
    return sum(round(r * n) for n, r in zip(sizes, ratios)) > 0


# ------------------------------------------------------------------------------------------------ token budgets
@settings(max_examples=60, deadline=None)
@given(data=sizes_and_ratios, seed_=seed, num_tokens=st.floats(1, 5000), draw=st.data())
def test_token_budget_is_spent_exactly_once_and_only_on_selected_examples(data, seed_, num_tokens, draw):
    sizes, ratios = [d[0] for d in data], [d[1] for d in data]
    assume(selects_something(sizes, ratios))
    lengths = np.array(draw.draw(st.lists(st.integers(1, 64), min_size=sum(sizes), max_size=sum(sizes))))
    sampler = SourceMixtureSampler(sizes, ratios, seed=seed_, lengths=lengths, num_tokens=num_tokens)
    order = list(sampler)
    drawn = lengths[order]
    assert len(order) == len(sampler) >= 1
    assert drawn.sum() >= num_tokens > drawn[:-1].sum()  # stops at the first example that reaches the budget
    assert set(order) <= allowed_indices(sizes, ratios, seed_)


@settings(max_examples=40, deadline=None)
@given(data=sizes_and_ratios, seed_=seed, amount=st.integers(1, 400), tokens=st.booleans())
def test_budget_sequence_spends_the_budget_of_either_unit(data, seed_, amount, tokens):
    sizes, ratios = [d[0] for d in data], [d[1] for d in data]
    assume(selects_something(sizes, ratios))
    lengths = (np.arange(sum(sizes)) % 7) + 1
    bounds = np.cumsum([0, *sizes])
    sources = SourceSet({f"s{j}": Dataset.from_dict({"length": lengths[a:b]}) for j, (a, b) in enumerate(zip(bounds, bounds[1:]))})
    budget = ComputeBudget(amount * (4 if tokens else 1), "tokens" if tokens else "samples")
    order = list(budget_sequence(sources, ratios, budget, seed=seed_))
    if tokens:
        assert lengths[order].sum() >= budget.amount > lengths[order][:-1].sum()
    else:
        assert len(order) == amount
    assert set(order) <= allowed_indices(sizes, ratios, seed_)


# -------------------------------------------------------------------------------------------- budget arithmetic
@settings(max_examples=100, deadline=None)
@given(
    amount=st.one_of(st.integers(1, 10**7), st.floats(1.0, 1e7)),
    subset=st.integers(1, 10**5),
    mean_tokens=st.floats(0.5, 4096),
    batch=st.integers(1, 4096),
)
def test_compute_budget_accounting(amount, subset, mean_tokens, batch):
    samples = ComputeBudget(amount)
    assert samples.num_samples() == int(amount)
    assert samples.epochs(subset) == pytest.approx(int(amount) / subset)
    assert samples.epochs(subset) * subset == pytest.approx(samples.num_samples())

    tokens = ComputeBudget(amount, "tokens")
    examples = tokens.num_samples(mean_tokens)
    assert examples == int(amount // mean_tokens)
    assert examples * mean_tokens <= amount < (examples + 1) * mean_tokens + 1e-6 * amount
    assert tokens.epochs(subset, mean_tokens) == pytest.approx(examples / subset)

    for budget, mean in ((samples, None), (tokens, mean_tokens)):
        if budget.num_samples(mean) < batch:
            with pytest.raises(ValueError, match=f"fewer than one global batch of {batch}"):
                budget.check_covers_batch(batch, mean)
        else:
            budget.check_covers_batch(batch, mean)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "100"])
def test_compute_budget_rejects_non_positive_or_non_finite(bad):
    with pytest.raises(ValueError, match="compute_budget must be a positive finite number"):
        ComputeBudget(bad)


def test_token_budget_needs_a_mean_length():
    with pytest.raises(ValueError, match="mean number of tokens"):
        ComputeBudget(100, "tokens").num_samples()
    with pytest.raises(ValueError, match="subset_size must be positive"):
        ComputeBudget(100).epochs(0)


# ---------------------------------------------------------------------------------- the search's sampler
@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=6),
    extra=st.integers(0, 20),
    num_samples=st.integers(1, 300),
    seed_=seed,
    epoch=st.integers(0, 5),
)
def test_stratified_batches_cover_every_source_evenly(sizes, extra, num_samples, seed_, epoch):
    n = len(sizes)
    batch = n + extra
    sampler = StratifiedSourceSampler(sizes, batch, num_samples=num_samples, seed=seed_)
    sampler.set_epoch(epoch)
    order = list(sampler)
    assert len(order) == len(sampler) == num_samples
    assert all(0 <= i < sum(sizes) for i in order)
    source = source_of(order, sizes)
    for start in range(0, num_samples, batch):
        counts = np.bincount(source[start : start + batch], minlength=n)
        if start + batch <= num_samples:  # a full batch measures every source, each floor or ceil of batch / n
            assert counts.min() >= batch // n and counts.max() <= -(-batch // n)
        else:
            assert counts.max() <= -(-batch // n)
    # Each source cycles through all of its examples before repeating one.
    for j, size in enumerate(sizes):
        drawn = np.asarray(order)[source == j]
        for lap in range(0, len(drawn), size):
            chunk = drawn[lap : lap + size]
            assert len(set(chunk.tolist())) == len(chunk)
    assert order == list(sampler)  # same seed and epoch, same sequence (every process computes it alike)


# ------------------------------------------------------------------------------------------ selected subsets
@settings(max_examples=80, deadline=None)
@given(data=st.lists(st.tuples(st.integers(1, 60), ratio, ratio), min_size=1, max_size=5), seed_=seed)
def test_selected_subsets_are_nested_and_match_the_mixture_artifact(data, seed_):
    sizes = [d[0] for d in data]
    low = [min(d[1], d[2]) for d in data]
    high = [max(d[1], d[2]) for d in data]
    assume(selects_something(sizes, low))
    small, large = selected_indices(sizes, low, seed_), selected_indices(sizes, high, seed_)
    for j in range(len(sizes)):
        assert set(small[j]) <= set(large[j])  # raising a ratio only adds examples
        assert len(set(large[j])) == len(large[j]) and all(0 <= i < sizes[j] for i in large[j])
    names = [f"source_{j}" for j in range(len(sizes))]
    mixture = Mixture(dict(zip(names, high)), compute_budget=100, source_sizes=dict(zip(names, sizes)), seed=seed_)
    assert mixture.selected_sizes() == {name: len(idx) for name, idx in zip(names, large)}
    assert Mixture(**json.loads(json.dumps(mixture.to_dict()))) == mixture


@settings(max_examples=60, deadline=None)
@given(data=sizes_and_ratios, seed_=seed, passes=st.integers(1, 3))
def test_each_pass_over_the_selection_draws_every_selected_example_once(data, seed_, passes):
    sizes, ratios = [d[0] for d in data], [d[1] for d in data]
    assume(selects_something(sizes, ratios))
    allowed = allowed_indices(sizes, ratios, seed_)
    order = list(SourceMixtureSampler(sizes, ratios, num_samples=passes * len(allowed), seed=seed_))
    for p in range(passes):
        assert sorted(order[p * len(allowed) : (p + 1) * len(allowed)]) == sorted(allowed)


# ------------------------------------------------------------------------------------------------- policies
@settings(max_examples=60, deadline=None)
@given(
    s=st.lists(ratio, min_size=1, max_size=6),
    sizes=st.data(),
    sigma=st.floats(1e-3, 1.0),
    min_ratio=st.floats(0.0, 0.5),
    step=st.lists(st.floats(-10, 10), min_size=6, max_size=6),
    seed_=seed,
)
def test_truncated_gaussian_keeps_s_in_bounds_and_subset_sizes_in_range(s, sizes, sigma, min_ratio, step, seed_):
    source_sizes = sizes.draw(st.lists(st.integers(1, 10**6), min_size=len(s), max_size=len(s)))
    policy = TruncatedGaussianPolicy(source_sizes, init=0.5, sigma_init=sigma, min_ratio=min_ratio)
    with torch.no_grad():
        policy.s.copy_(torch.tensor(s, dtype=torch.float64))
    policy.project_()
    assert (policy.s >= min_ratio).all() and (policy.s <= 1).all()
    samples = policy.sample(8, torch.Generator().manual_seed(seed_))
    sizes_k = policy.subset_sizes(samples)
    assert ((sizes_k >= 0) & (sizes_k <= sum(source_sizes) * (1 + 1e-12))).all()
    assert torch.isfinite(policy.score(samples)).all()
    optimizer = torch.optim.SGD([policy.s], lr=1.0)
    policy.s.grad = torch.tensor(step[: len(s)], dtype=torch.float64)
    optimizer.step()
    policy.project_()
    assert (policy.s >= min_ratio).all() and (policy.s <= 1).all()
    restored = TruncatedGaussianPolicy(source_sizes)
    restored.load_state_dict(policy.state_dict())
    assert torch.equal(restored.s, policy.s) and restored.sigma == policy.sigma


@settings(max_examples=60, deadline=None)
@given(
    s=st.lists(ratio, min_size=1, max_size=50),
    step=st.floats(-100, 100),
    seed_=seed,
)
def test_bernoulli_masks_are_binary_and_scores_finite_for_any_s(s, step, seed_):
    policy = BernoulliPolicy(len(s))
    with torch.no_grad():
        policy.s.copy_(torch.tensor(s, dtype=torch.float64))
    policy.project_()
    assert (policy.s >= policy.low).all() and (policy.s <= policy.high).all()
    masks = policy.sample(6, torch.Generator().manual_seed(seed_))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(policy.subset_sizes(masks), masks.sum(-1))
    assert torch.isfinite(policy.score(masks)).all() and torch.isfinite(policy.log_prob(masks)).all()
    with torch.no_grad():
        policy.s += step
    policy.project_()
    assert (policy.s >= policy.low).all() and (policy.s <= policy.high).all()
