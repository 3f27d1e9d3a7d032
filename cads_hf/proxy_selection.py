"""Proxy selection: choose the sources to train on for a budget from scaled-down runs of the whole training.

The per-step rewards of the search see what one step on a source does; they cannot see harm that builds up over a
run (memorized noisy labels, examples repeated many times). A proxy run sees it: a fresh model trained on every
source cut to a fraction f of its examples for f x the budget, with the batch cut by f as well, repeats each example
as often and takes as many optimizer steps as the full run. What cutting a source does to its value (a small clean
source cut further trains a much weaker model) is corrected by proxies at two or more fractions: each candidate's
validation error is extrapolated to full size as a power law in f.

By default the candidates need no prior knowledge of the sources. With one or two sources they are every subset
(`proxy_candidates="auto"`); beyond, where every subset would be too many runs, the unions of the k most valuable
sources, k = 1..J (J candidates for J sources). A source's value is how well a step on its examples (ones left out
of the union's largest proxy) would point down the validation loss of that proxy's model: the cosine between the
validation gradient and the mean gradient of the fresh examples. It orders sources by quality, not size (ordering
by each source's error when trained alone puts a large mediocre source before a small good one, and costs J more
candidates). The cosine, not the inner product: garbage (random answers, wrong labels) has high loss and large
gradients, and the inner product rewards their size. Or the caller names the candidate mixtures (a grid of ratios,
say, as one would hand to `interleave_datasets`) and the proxies rank them. The result is a `Mixture` of the chosen
candidate's ratios.

Two fractions extrapolate over a short range, and cannot see a mixture's error level off as repeated noisy labels get
memorized. Where the two best candidates come within `proxy_refine_margin` of each other, both are trained on one
more, larger proxy (`proxy_refine_fraction`) and ranked again by the power law fitted to all their fractions.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from transformers import set_seed

from .budget import ComputeBudget
from .config import CADSConfig
from .final_training import SequenceDataset, example_lengths, inner_run_overrides, train_on_mixture
from .losses import dataset_gradient, dataset_loss
from .mixture import Mixture
from .sources import CachedRows, SourceSet, selected_indices


def extrapolate_to_full_size(errors: Mapping[float, float]) -> float:
    """The error at fraction 1 of the power law err(f) = c f^-a fitted (least squares in log-log) to
    {fraction: error}; with two fractions the law passes through both, with one the error is returned as is."""
    if not errors:
        raise ValueError("No proxy error to extrapolate.")
    for fraction, error in errors.items():
        if not (0 < fraction <= 1 and math.isfinite(error) and error > 0):
            raise ValueError(f"Proxy at fraction {fraction} has error {error}: need 0 < f <= 1 and a positive error.")
    if len(errors) == 1:
        return float(next(iter(errors.values())))
    log_f, log_e = np.log(list(errors)), np.log(list(errors.values()))
    _, intercept = np.polyfit(log_f, log_e, 1)  # log err = intercept - a log f; at f = 1, log err = intercept
    return float(np.exp(intercept))


# Proxy fractions when none are given, largest first: the first whose proxies cost at most MAX_PROXY_SAMPLES final
# runs' samples over all candidates. Measured on two text sources: every subset (three candidates) at [0.25, 0.5]
# was within 1% of the best fixed mixture at all 4 budgets, for 1.6-1.9x the final run's wall time at the 3 budgets
# timed; the nested candidates (two) at [0.1, 0.25] at 2 budgets (worst 2.9%). With five image sources [0.25, 0.5]
# would cost 3.75 final runs' samples (README, "Which reward").
DEFAULT_PROXY_FRACTIONS = ([0.25, 0.5], [0.1, 0.25])
MAX_PROXY_SAMPLES = 2.25


def default_proxy_fractions(n_candidates: int) -> list[float]:
    """The largest of DEFAULT_PROXY_FRACTIONS whose proxies for `n_candidates` cost at most MAX_PROXY_SAMPLES final
    runs' samples, or the smallest."""
    for fractions in DEFAULT_PROXY_FRACTIONS:
        if n_candidates * sum(fractions) <= MAX_PROXY_SAMPLES:
            return list(fractions)
    return list(DEFAULT_PROXY_FRACTIONS[-1])


# proxy_candidates="auto": every subset up to this many sources (3 candidates for two against 2 nested), nested beyond.
EVERY_SUBSET_MAX_SOURCES = 2


def every_subset(names: Sequence[str]) -> list[dict[str, float]]:
    """Every non-empty subset of `names`, the smaller first, as {source: 1.0} of those kept."""
    return [dict.fromkeys(kept, 1.0) for k in range(1, len(names) + 1) for kept in itertools.combinations(names, k)]


def nested_candidates(values: Mapping[str, float]) -> list[dict[str, float]]:
    """The unions of the k most valuable sources, k = 1..J (highest value first), as {source: 1.0} of those kept."""
    order = sorted(values, key=values.get, reverse=True)
    return [dict.fromkeys(order[:k], 1.0) for k in range(1, len(order) + 1)]


def inner_product(a: Sequence, b: Sequence) -> float:
    """<a, b> of two gradients given as one tensor per parameter."""
    return float(sum((x * y).sum() for x, y in zip(a, b)))


def cosine(a: Sequence, b: Sequence) -> float:
    """cos(a, b) of two gradients given as one tensor per parameter; 0 where one vanishes."""
    norm_a, norm_b = inner_product(a, a), inner_product(b, b)
    return inner_product(a, b) / math.sqrt(norm_a * norm_b) if norm_a > 0 and norm_b > 0 else 0.0


def source_gradients(
    trainer, sources: Mapping, examples: Sequence, eval_dataset, per_example: bool, max_validation: int
) -> tuple[list, dict[str, list]]:
    """g_val, the mean gradient of `trainer.model`'s validation loss over the first `max_validation` validation
    examples, and {source: g_j}, the mean gradient of the loss (per example, or per token) over `examples[j]`
    (indices into source j)."""
    args = trainer.args

    def gradient(dataset, split, per_example):
        collate = trainer._get_collator_with_removed_columns(trainer.data_collator, split)
        return dataset_gradient(trainer.model, dataset, collate, args.per_device_eval_batch_size, args.device,
                                per_example)

    validation = gradient(SequenceDataset(eval_dataset, range(min(len(eval_dataset), max_validation))), "validation", False)
    return validation, {
        name: gradient(SequenceDataset(source, indices), "training", per_example)
        for (name, source), indices in zip(sources.items(), examples)
    }


def source_values(
    trainer, sources: Mapping, examples: Sequence, eval_dataset, per_example: bool, max_validation: int
) -> dict[str, float]:
    """Each source's value to `trainer.model`: cos(g_val, g_j), the gradients of `source_gradients`."""
    validation, gradients = source_gradients(trainer, sources, examples, eval_dataset, per_example, max_validation)
    return {name: cosine(validation, g) for name, g in gradients.items()}


def candidate_name(kept: Mapping[str, float]) -> str:
    """'a+b+0.5*c': the sources kept (ratio above 0), with their ratio where it is not 1."""
    return "+".join(name if ratio == 1 else f"{ratio:g}*{name}" for name, ratio in kept.items() if ratio > 0)


def checked_candidates(candidates, names: list[str]) -> list[dict[str, float]]:
    """The caller's candidate mixtures as {source: ratio}, each checked: known sources, ratios in [0, 1], one above 0."""
    checked = []
    for number, candidate in enumerate(candidates):
        unknown = set(candidate) - set(names)
        if unknown:
            raise ValueError(f"candidates[{number}] names unknown source(s) {sorted(unknown)}; the sources are {names}.")
        ratios = {name: float(ratio) for name, ratio in candidate.items()}
        if not all(0 <= ratio <= 1 for ratio in ratios.values()) or not any(ratio > 0 for ratio in ratios.values()):
            raise ValueError(f"candidates[{number}] = {candidate}: ratios must lie in [0, 1], one of them above 0.")
        checked.append(ratios)
    if not checked:
        raise ValueError("candidates is empty: pass at least one mixture, or None for the default candidates.")
    return checked


def select_by_proxies(
    model_init: Callable,
    sources: Mapping,
    eval_dataset,
    args: CADSConfig,
    validation_error: Callable | None = None,
    candidates: Sequence[Mapping[str, float]] | None = None,
    **trainer_kwargs,
) -> Mixture:
    """Choose which sources to train on for `args.compute_budget` by proxy runs (module docstring).

    Args:
        model_init: returns the model to train, freshly initialized; it is called after `set_seed(args.seed)`, as
            `Trainer` calls its `model_init`, so every candidate starts from the same weights.
        sources: source name -> dataset.
        eval_dataset: the validation set (not cut).
        args: the budget (`compute_budget`, `budget_unit`), the batch size, the seed and the proxies
            (`proxy_candidates`; `proxy_fractions`, by default `default_proxy_fractions` of the number of candidates;
            `proxy_refine_fraction`, `proxy_refine_margin`, `proxy_keep_steps`, `proxy_cache_rows`,
            `proxy_value_examples`).
        validation_error: `(model) -> float`, positive, lower is better; defaults to the validation loss. For a
            classifier scored on accuracy pass one minus the accuracy.
        candidates: the mixtures to compare, each {source name: ratio in [0, 1]} (a source left out gets 0); by
            default those of `args.proxy_candidates` (module docstring).
        trainer_kwargs: passed to each proxy's `Trainer` (`data_collator`, `processing_class`, ...).
    Returns:
        A `Mixture` with the chosen candidate's ratios (0 for the sources it leaves out); `config["candidates"]`
        holds every candidate's extrapolated error by `candidate_name` (and, for the nested candidates,
        `config["source_values"]` each source's value, a cosine; where the two best were refined,
        `config["refined"]` their errors extrapolated from every fraction, which decide between them), and
        `metrics["proxy_samples_over_final"]` the proxies' cost.
    """
    if args.compute_budget is None:
        raise ValueError("select_by_proxies needs args.compute_budget: the budget of the final run.")
    source_set = SourceSet(sources)
    names = source_set.names
    kind = args.proxy_candidates
    if kind == "auto":
        kind = "subsets" if len(names) <= EVERY_SUBSET_MAX_SOURCES else "nested"
    if candidates is not None:
        candidates = checked_candidates(candidates, names)
    elif kind == "subsets":
        candidates = every_subset(names)
    fractions = args.proxy_fractions or default_proxy_fractions(len(names) if candidates is None else len(candidates))
    budget = ComputeBudget(args.compute_budget, args.budget_unit)
    if args.proxy_cache_rows:
        # Every candidate reads the same cut rows (the smaller cut is the start of the larger), and every proxy the
        # validation set: read each row once. Half of a small proxy's time went to reading rows.
        readers = [CachedRows(source) for source in source_set.sources]
        eval_dataset = CachedRows(eval_dataset)
    else:
        readers = source_set.sources
    mean_tokens = float(example_lengths(source_set).mean()) if budget.unit == "tokens" else None

    def proxy(fraction: float) -> tuple:
        """(fraction, the sources cut to it, its budget, its per-device batch size)."""
        batch = args.per_device_train_batch_size
        if args.proxy_keep_steps:
            batch = max(1, round(fraction * batch))
        proxy_budget = ComputeBudget(fraction * budget.amount, budget.unit)
        try:
            proxy_budget.check_covers_batch(batch * args.gradient_accumulation_steps * args.world_size, mean_tokens)
        except ValueError as error:
            raise ValueError(f"proxy_fractions: the proxy at fraction {fraction} is too small. {error}") from None
        kept = selected_indices(source_set.sizes, [fraction] * len(names), seed=args.seed)
        cut = {}
        for name, source, indices in zip(names, readers, kept):
            if len(indices) == 0:
                raise ValueError(
                    f"proxy_fractions: fraction {fraction} keeps no example of source {name!r} ({len(source)} "
                    "examples); raise the smallest fraction."
                )
            cut[name] = SequenceDataset(source, indices)
        return fraction, cut, proxy_budget, batch

    proxies = [proxy(fraction) for fraction in sorted(fractions)]

    def validation_loss(trainer) -> float:
        # Read through the proxy Trainer's own collator and column filter, so that validation columns the model does
        # not take are dropped as they are for training.
        collate = trainer._get_collator_with_removed_columns(trainer.data_collator, "validation")
        return dataset_loss(trainer.model, eval_dataset, collate, args.per_device_eval_batch_size, args.device)[0]

    def proxy_errors(kept: dict[str, float], runs: list) -> tuple[dict[float, float], object]:
        """The candidate's validation error on each proxy of `runs`, by fraction, and the Trainer of the last."""
        ratios = [kept.get(name, 0.0) for name in names]
        errors = {}
        for fraction, cut, proxy_budget, batch in runs:
            run_dir = os.path.join(args.output_dir, "proxies", f"{candidate_name(kept).replace('*', 'x')}-{fraction:g}")
            overrides = {**inner_run_overrides(run_dir), "per_device_train_batch_size": batch}
            set_seed(args.seed)  # as Trainer does before `model_init`: every candidate starts from the same weights
            trainer = train_on_mixture(
                model_init(), cut, ratios, proxy_budget, args, args_overrides=overrides, **trainer_kwargs
            )
            errors[fraction] = validation_loss(trainer) if validation_error is None else validation_error(trainer.model)
        return errors, trainer

    def extrapolated(kept: dict[str, float], errors: dict[float, float]) -> float:
        try:
            return extrapolate_to_full_size(errors)
        except ValueError as error:  # a NaN or non-positive error: say which candidate
            raise ValueError(f"Candidate {candidate_name(kept)}: {error}") from None

    values = None
    largest = max(fractions)
    if candidates is None:
        union_errors, union_proxy = proxy_errors(dict.fromkeys(names, 1.0), proxies)  # proxies end with the largest
        # Value is measured on the examples the union's largest proxy did not train on: its cut is the start of the
        # same permutation. A source too small to leave any out is measured on all of its examples.
        cut = next(cut for fraction, cut, _, _ in proxies if fraction == largest)
        fresh = []
        for name, permutation in zip(names, selected_indices(source_set.sizes, [1.0] * len(names), seed=args.seed)):
            left_out = permutation[len(cut[name]):] if len(cut[name]) < len(permutation) else permutation
            fresh.append(left_out[: args.proxy_value_examples])
        values = source_values(union_proxy, dict(zip(names, readers)), fresh, eval_dataset,
                               per_example=budget.unit == "samples", max_validation=args.proxy_value_examples)
        candidates = nested_candidates(values)  # the last is the union, already run
        errors = [proxy_errors(kept, proxies)[0] for kept in candidates[:-1]] + [union_errors]
    else:
        errors = [proxy_errors(kept, proxies)[0] for kept in candidates]
    predicted = [extrapolated(kept, e) for kept, e in zip(candidates, errors)]
    contenders = sorted(range(len(candidates)), key=predicted.__getitem__)[:2]
    refine = args.proxy_refine_fraction
    refined = {}  # candidate number -> error extrapolated from every fraction, for the two refined
    if (refine is not None and refine > largest and len(contenders) == 2
            and predicted[contenders[1]] <= (1 + args.proxy_refine_margin) * predicted[contenders[0]]):
        extra = [proxy(refine)]
        for number in contenders:
            more = {**errors[number], **proxy_errors(candidates[number], extra)[0]}
            refined[number] = extrapolated(candidates[number], more)
    chosen = min(refined, key=refined.get) if refined else contenders[0]
    refinement = {"refined": {candidate_name(candidates[n]): e for n, e in refined.items()},
                  "proxy_refine_fraction": refine} if refined else {}
    kept, error = candidates[chosen], refined.get(chosen, predicted[chosen])
    return Mixture(
        ratios={name: kept.get(name, 0.0) for name in names},
        source_sizes=dict(zip(names, source_set.sizes)),
        compute_budget=float(budget.amount),
        budget_unit=budget.unit,
        seed=args.seed,
        reward="proxy",
        config={
            "proxy_fractions": list(fractions),
            "proxy_keep_steps": args.proxy_keep_steps,
            "candidates": {candidate_name(c): e for c, e in zip(candidates, predicted)},
            **({} if values is None else {"source_values": values}),
            **refinement,
        },
        metrics={
            "predicted_validation_error": error,
            "proxy_samples_over_final": len(candidates) * float(sum(fractions)) + len(refined) * (refine or 0.0),
        },
    )
