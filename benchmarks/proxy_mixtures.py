"""proxy_mixtures: can scaled-down runs pick the mixture for a budget? (a candidate signal of accumulated harm)

The per-step rewards cannot see harm that builds up over a run (memorized noisy labels, repeated examples). A
cheap way to see it is to run the whole training on a smaller copy of the problem: cut every source to a fraction f
of its examples and train each candidate mixture for f x the budget. Every example is then repeated as often as in
the full run (same epochs), so memorization should show, at a cost of f of a final run per mixture. A proxy may also
cut the batch to f x 128, so that it takes as many optimizer steps as the full run (memorization needs steps as well
as epochs). Proxies at two fractions give a third selector: each mixture's validation error extrapolated to f = 1 as
a power law in f, which corrects for what cutting a source does to its value (75 clean images train a far weaker
model than 300).

This script tests that premise in the scarce-clean design of noisy_sources.py (same data, model and rules). For each
proxy and budget it trains the design's grid of fixed mixtures (plus each source alone) on the proxies, picks
the one with the best proxy validation accuracy (the clean validation set is not cut), and scores that pick by the
test accuracy of the *full-size* run of the same mixture, beside the oracle's pick (best full-size validation
accuracy). The full-size runs are noisy_sources.py's own fixed-mixture runs, read from (or added to) its cache
benchmarks/results/noisy_sources_scarce.runs.jsonl.

    python benchmarks/proxy_mixtures.py --quick   # seed 0, the extrapolated proxies with steps kept (~5 min)
    python benchmarks/proxy_mixtures.py           # seeds 0-2, five selectors from four proxies (~25 min)

Without the cache the full-size runs are trained too (about 3 minutes each, 10 per seed, two at a time).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math

import torch
from common import RESULTS_DIR, fixed_mixture_run, mean_std, run_cached, write_results
from noisy_sources import BATCH, DESIGNS, make_task
from noisy_sources import run_job as full_size_job

from cads_hf.proxy_selection import extrapolate_to_full_size
from cads_hf.vision import noise_source_name


def proxy_job(mixtures, epochs, union, job):
    """One mixture trained on every source cut to fraction f, for f x each budget, at the given batch size;
    validation and test unchanged."""
    torch.set_num_threads(1)
    key, fraction, batch, seed = job
    task = make_task(DESIGNS["scarce"], seed)
    sources = {name: data.select(range(math.ceil(fraction * len(data)))) for name, data in task.sources.items()}
    budgets = [int(e * union * fraction) for e in epochs]
    args = task.args
    task = dataclasses.replace(
        task, sources=sources, batch_size=batch,
        args=lambda output_dir, **extra: {**args(output_dir, **extra), "per_device_train_batch_size": batch},
    )
    return fixed_mixture_run(task, mixtures[key], budgets, f"/tmp/cads_bench/proxy_mixtures/{seed}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    design = DESIGNS["scarce"]
    # Selectors: the proxies (fraction of every source, batch size) whose validation accuracy, extrapolated to full
    # size where there are two, ranks the mixtures. The batch cut with the data keeps the full run's number of steps.
    steps_kept = [(0.1, round(0.1 * BATCH)), (0.25, round(0.25 * BATCH))]
    selectors = {"f=0.1": [(0.1, BATCH)], "f=0.25": [(0.25, BATCH)], "f=0.25, steps kept": steps_kept[1:],
                 "f=0.1+0.25 extrapolated": [(0.1, BATCH), (0.25, BATCH)],
                 "f=0.1+0.25 extrapolated, steps kept": steps_kept}
    if options.quick:
        selectors = {"f=0.1+0.25 extrapolated, steps kept": steps_kept}
    proxies = list(dict.fromkeys(p for chosen in selectors.values() for p in chosen))
    seeds = [0] if options.quick else list(range(options.seeds))
    epochs, union = design["epochs"], sum(design["sizes"])
    budgets = [int(e * union) for e in epochs]
    names = [noise_source_name(p) for p in design["noise"]]
    singles = [[float(i == j) for j in range(len(names))] for i in range(len(names))]
    mixtures = {str(r): r for r in [[float(x) for x in r] for r in design["grid"]] + singles}

    # The full-size runs, exactly as noisy_sources.py trains them (its cache, its job keys).
    full_run = functools.partial(full_size_job, "scarce", design, mixtures, budgets, 1.0, 1, "/tmp/cads_bench/proxy_full")
    full = run_cached([("fixed", key, None, s) for s in seeds for key in mixtures], full_run, options.workers,
                      f"{RESULTS_DIR}/noisy_sources_scarce.runs.jsonl", lambda job, _: print(f"done {job}", flush=True))
    name = "proxy_mixtures" + ("_quick" if options.quick else "")
    proxy = run_cached([(key, f, batch, s) for s in seeds for f, batch in proxies for key in mixtures],
                       functools.partial(proxy_job, mixtures, epochs, union), options.workers,
                       f"{RESULTS_DIR}/{name}.runs.jsonl", lambda job, _: print(f"done {job}", flush=True))

    def full_score(key, seed, budget, split):
        return full[("fixed", key, None, seed)]["by_budget"][str(budget)][split]

    rows = []
    for budget, e in zip(budgets, epochs):
        oracle = [max(mixtures, key=lambda k: full_score(k, s, budget, "val")) for s in seeds]
        row = {"budget": budget, "epochs": e,
               "oracle": {"chosen": oracle, **mean_std([full_score(k, s, budget, "test") for k, s in zip(oracle, seeds)])},
               "selectors": {}}
        for label, chosen_proxies in selectors.items():
            def predicted_error(key, seed):  # the library's extrapolation (select_by_proxies), on 1 - accuracy
                return extrapolate_to_full_size({
                    f: 1 - proxy[(key, f, b, seed)]["by_budget"][str(int(e * union * f))]["val"]
                    for f, b in chosen_proxies
                })

            chosen = [min(mixtures, key=lambda k: predicted_error(k, s)) for s in seeds]
            row["selectors"][label] = {
                "proxies": [f"{f:g}:{b}" for f, b in chosen_proxies],
                "chosen": chosen,
                **mean_std([full_score(k, s, budget, "test") for k, s in zip(chosen, seeds)]),
                "agrees_with_oracle": sum(c == o for c, o in zip(chosen, oracle)),
                # Samples every mixture's proxies train, over one final run's (wall times are not compared: the
                # proxies and the full-size runs ran under different loads).
                "samples_over_final": len(mixtures) * sum(f for f, _ in chosen_proxies),
            }
        rows.append(row)
    results = {"design": "scarce", "sources": dict(zip(names, design["sizes"])), "seeds": seeds,
               "quick": options.quick, "selectors": list(selectors), "mixtures": list(mixtures), "rows": rows,
               "runs": f"{name}.runs.jsonl", "full_size_runs": "noisy_sources_scarce.runs.jsonl"}
    print("wrote", write_results(name, results))


if __name__ == "__main__":
    main()
