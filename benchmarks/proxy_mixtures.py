"""proxy_mixtures: can scaled-down runs pick the mixture for a budget? (a candidate signal of accumulated harm)

The per-step rewards cannot see harm that builds up over a run (memorized noisy labels, repeated examples). A
cheap way to see it is to run the whole training on a smaller copy of the problem: cut every source to a fraction f
of its examples and train each candidate mixture for f x the budget. Every example is then repeated as often as in
the full run (same epochs), so memorization should show, at a cost of f of a final run per mixture. A proxy may also
cut the batch to f x 128, so that it takes as many optimizer steps as the full run (memorization needs steps as well
as epochs). Proxies at two fractions give a third selector: each mixture's validation error extrapolated to f = 1 as
a power law in f, which corrects for what cutting a source does to its value (75 clean images train a far weaker
model than 300).

This script tests that premise in two benchmarks, with their data, models and rules: the scarce-clean design of
noisy_sources.py (`--task scarce`) and instruct_mix.py (`--task instruct`), whose grid holds fractional mixtures
(GPT-4 plus a tenth, a quarter or half of Alpaca). For each proxy and budget it trains the benchmark's grid of
fixed mixtures (plus each source alone) on the proxies, picks the one with the lowest proxy validation error (one
minus the accuracy; the validation loss for text, as select_by_proxies uses by default; the validation set is not
cut), and scores that pick by the test score of the *full-size* run of the same mixture, beside the oracle's pick
(best full-size validation score). The full-size runs are the benchmark's own fixed-mixture runs, read from (or
added to) its cache in benchmarks/results.

    python benchmarks/proxy_mixtures.py --quick   # seed 0, the extrapolated proxies with steps kept (~5 min)
    python benchmarks/proxy_mixtures.py           # seeds 0-2, seven selectors from six proxies (~35 min)
    python benchmarks/proxy_mixtures.py --task instruct --quick  # seed 0, the quick grid and budgets (~1 min)
    python benchmarks/proxy_mixtures.py --task instruct          # seed 0, the full grid and budgets (~25 min)

Without the cache the full-size runs are trained too (images: about 3 minutes each, 10 per seed; text: about 10
minutes each, 7 per seed; two at a time).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from collections.abc import Callable

import instruct_mix
import noisy_sources
import torch
from common import RESULTS_DIR, fixed_mixture_run, mean_std, run_cached, write_results

from cads_hf.proxy_selection import extrapolate_to_full_size
from cads_hf.vision import noise_source_name


@dataclasses.dataclass
class Study:
    """A benchmark's problem as the proxies see it."""

    make_task: Callable  # seed -> Task
    batch: int
    learning_rate: float
    budgets: list
    budget_labels: dict  # budget -> how the README names it (epochs of the union for images)
    mixtures: dict  # key -> ratios; the benchmark's own keys, so its cached full-size runs are found
    grid: list  # keys of the benchmark's own grid of fixed mixtures (the rest are sources alone)
    full_size_job: Callable  # job -> result, exactly as the benchmark trains it
    full_size_cache: str
    error: Callable  # validation score -> positive error, lower is better
    source_sizes: dict


def scarce_study(quick: bool) -> Study:
    design = noisy_sources.DESIGNS["scarce"]
    union = sum(design["sizes"])
    budgets = [int(e * union) for e in design["epochs"]]
    names = [noise_source_name(p) for p in design["noise"]]
    grid = [[float(x) for x in r] for r in design["grid"]]
    singles = [[float(i == j) for j in range(len(names))] for i in range(len(names))]
    mixtures = {str(r): r for r in grid + singles}
    full_size_job = functools.partial(noisy_sources.run_job, "scarce", design, mixtures, budgets, 1.0, 1,
                                      "/tmp/cads_bench/proxy_full")
    return Study(
        functools.partial(noisy_sources.make_task, design), noisy_sources.BATCH, noisy_sources.LEARNING_RATE,
        budgets, dict(zip(budgets, design["epochs"])), mixtures, [str(r) for r in grid], full_size_job,
        f"{RESULTS_DIR}/noisy_sources_scarce.runs.jsonl", lambda accuracy: 1 - accuracy,
        dict(zip(names, design["sizes"])),
    )


def instruct_study(quick: bool) -> Study:
    grid, budgets = (instruct_mix.QUICK_GRID, instruct_mix.QUICK_BUDGETS) if quick else (instruct_mix.GRID, instruct_mix.BUDGETS)
    mixtures = {str(r): r for r in [[float(x) for x in r] for r in grid]}
    full_size_job = functools.partial(instruct_mix.run_job, mixtures, budgets, 1.0, "/tmp/cads_bench/proxy_full")
    _, splits = instruct_mix.prepared()
    return Study(
        instruct_mix.make_task, instruct_mix.BATCH, instruct_mix.LEARNING_RATE, budgets, {b: b for b in budgets},
        mixtures, list(mixtures), full_size_job, f"{RESULTS_DIR}/instruct_mix{'_quick' if quick else ''}.runs.jsonl",
        math.log,  # perplexity -> validation loss
        {name: len(split["train"]) for name, split in splits.items()},
    )


STUDIES = {"scarce": scarce_study, "instruct": instruct_study}


def proxy_job(make_task, mixtures, budgets, job):
    """One mixture trained on every source cut to fraction f, for f x each budget, at the given batch size and
    learning rate; validation and test unchanged."""
    torch.set_num_threads(1)
    key, fraction, batch, seed, learning_rate = job
    task = make_task(seed)
    sources = {name: data.select(range(math.ceil(fraction * len(data)))) for name, data in task.sources.items()}
    args = task.args
    task = dataclasses.replace(
        task, sources=sources, batch_size=batch,
        args=lambda output_dir, **extra: {**args(output_dir, **extra), "per_device_train_batch_size": batch,
                                            "learning_rate": learning_rate},
    )
    return fixed_mixture_run(task, mixtures[key], [int(fraction * b) for b in budgets],
                             f"/tmp/cads_bench/proxy_mixtures/{seed}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(STUDIES), default="scarce")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None, help="Seeds 0..n-1 (default: 3 for scarce, 1 for instruct).")
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    study = STUDIES[options.task](options.quick)
    # Selectors: the proxies (fraction of every source, batch size, learning rate) whose validation error,
    # extrapolated to full size where there are two, ranks the candidate mixtures (every mixture of the study, or
    # the benchmark's grid only). The batch cut with the data keeps the full run's number of steps; the learning
    # rate cut by sqrt(f) with it keeps Adam's gradient noise scale (the square-root scaling rule).
    full = [(f, study.batch, study.learning_rate) for f in (0.1, 0.25)]
    steps_kept = [(f, max(1, round(f * study.batch)), study.learning_rate) for f in (0.1, 0.25)]
    sqrt_lr = [(f, b, lr * math.sqrt(f)) for f, b, lr in steps_kept]
    everything = list(study.mixtures)
    selectors = {"f=0.1": (full[:1], everything), "f=0.25": (full[1:], everything),
                 "f=0.25, steps kept": (steps_kept[1:], everything),
                 "f=0.1+0.25 extrapolated": (full, everything),
                 "f=0.1+0.25 extrapolated, steps kept": (steps_kept, everything),
                 "f=0.1+0.25 extrapolated, steps kept, lr x sqrt(f)": (sqrt_lr, everything),
                 "f=0.1+0.25 extrapolated, steps kept, the grid only": (steps_kept, study.grid)}
    if options.task == "instruct":  # its grid holds every mixture of the study
        selectors = {label: selectors[label] for label in
                     ["f=0.25, steps kept", "f=0.1+0.25 extrapolated", "f=0.1+0.25 extrapolated, steps kept"]}
    if options.quick:
        selectors = {"f=0.1+0.25 extrapolated, steps kept": (steps_kept, everything)}
    proxies = list(dict.fromkeys(p for chosen, _ in selectors.values() for p in chosen))
    seeds = list(range(options.seeds or (3 if options.task == "scarce" and not options.quick else 1)))
    mixtures, budgets = study.mixtures, study.budgets

    # The full-size runs, exactly as the benchmark trains them (its cache, its job keys).
    full = run_cached([("fixed", key, None, s) for s in seeds for key in mixtures], study.full_size_job,
                      options.workers, study.full_size_cache, lambda job, _: print(f"done {job}", flush=True))
    name = "proxy_mixtures" + ("_instruct" if options.task == "instruct" else "") + ("_quick" if options.quick else "")
    proxy = run_cached([(key, f, batch, s, lr) for s in seeds for f, batch, lr in proxies for key in mixtures],
                       functools.partial(proxy_job, study.make_task, mixtures, budgets), options.workers,
                       f"{RESULTS_DIR}/{name}.runs.jsonl", lambda job, _: print(f"done {job}", flush=True))

    def full_score(key, seed, budget, split):
        return full[("fixed", key, None, seed)]["by_budget"][str(budget)][split]

    def full_error(key, seed, budget):
        return study.error(full_score(key, seed, budget, "val"))

    rows = []
    for budget in budgets:
        oracle = [min(mixtures, key=lambda k: full_error(k, s, budget)) for s in seeds]
        row = {"budget": budget, "label": study.budget_labels[budget],
               "oracle": {"chosen": oracle, **mean_std([full_score(k, s, budget, "test") for k, s in zip(oracle, seeds)])},
               "selectors": {}}
        for label, (chosen_proxies, candidates) in selectors.items():
            def predicted_error(key, seed):  # the library's extrapolation (select_by_proxies)
                return extrapolate_to_full_size({
                    f: study.error(proxy[(key, f, b, seed, lr)]["by_budget"][str(int(f * budget))]["val"])
                    for f, b, lr in chosen_proxies
                })

            chosen = [min(candidates, key=lambda k: predicted_error(k, s)) for s in seeds]
            row["selectors"][label] = {
                "proxies": [f"{f:g}:{b}:{lr:.2g}" for f, b, lr in chosen_proxies],
                "chosen": chosen,
                **mean_std([full_score(k, s, budget, "test") for k, s in zip(chosen, seeds)]),
                "agrees_with_oracle": sum(c == o for c, o in zip(chosen, oracle)),
                # Samples every mixture's proxies train, over one final run's (wall times are not compared: the
                # proxies and the full-size runs ran under different loads).
                "samples_over_final": len(candidates) * sum(f for f, _, _ in chosen_proxies),
            }
        rows.append(row)
    results = {"task": options.task, "sources": study.source_sizes, "seeds": seeds,
               "quick": options.quick, "selectors": list(selectors), "mixtures": list(mixtures), "rows": rows,
               "runs": f"{name}.runs.jsonl", "full_size_runs": study.full_size_cache.split("/")[-1]}
    print("wrote", write_results(name, results))


if __name__ == "__main__":
    main()
