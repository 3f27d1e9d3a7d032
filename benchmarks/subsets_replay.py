"""subsets_replay: every subset of the two text sources as candidates (`proxy_25_50_subsets`), from the nested runs.

A `proxy_25_50_subsets` run of instruct_mix.py at 20,000 samples takes about two hours a seed on 2 CPU cores. It
differs from the nested `proxy_25_50` run, already in the run cache, by one candidate: the source the value ranked
second, alone. Each proxy starts from `set_seed(seed)` and cuts the sources by the seed, whatever the other
candidates, so a candidate's extrapolated error is the same in both runs. This script checks that where both were run
(every candidate the two share, to the last digit), trains only the missing candidate's proxies at the asked budget,
picks the lowest extrapolated error among all three, and scores the pick with the cached fixed-mixture run of that
mixture at the budget (a fixed mixture's run is scored at every budget on the way; noisy_sources.py says why that is
the run a final run on the mixture would be). Its selection cost is the nested run's proxies plus the missing
candidate's, over the nested run's final run: these ran at different times, so it is an estimate, not a timing.

    python benchmarks/subsets_replay.py                   # 20,000 samples, seeds 0-2, two at a time (~25 min)
    python benchmarks/subsets_replay.py --budget 2000 --seeds 1 --workers 1 \
        --output /tmp/replay_2000.json                    # the check: replays a candidate a subsets run trained
"""

from __future__ import annotations

import argparse
import functools
import os

import torch
from common import RESULTS_DIR, VARIANTS, Stopwatch, read_cache, run_cached, selection_config, summarize, write_results
from instruct_mix import FILES, GRID, make_task, prepared

from cads_hf import select_by_proxies
from cads_hf.proxy_selection import candidate_name, every_subset

NESTED, SUBSETS = "proxy_25_50", "proxy_25_50_subsets"
CACHE = os.path.join(RESULTS_DIR, "instruct_mix.runs.jsonl")


def kept(name: str) -> frozenset:
    """The sources a candidate's name keeps ('a+b' and 'b+a' are the same candidate)."""
    return frozenset(name.split("+"))


def same_errors(reference: dict, other: dict) -> bool:
    """Whether every candidate of `other` ({name: extrapolated error}) has its error in `reference`."""
    errors = {kept(name): error for name, error in reference.items()}
    return all(errors[kept(name)] == error for name, error in other.items())


def shared_errors_match(done: dict) -> dict:
    """{budget-seed: whether every candidate of a cached nested run has the subsets run's error, where both exist}."""
    return {
        f"{budget}-{seed}": same_errors(result["candidates"], done[(kind, NESTED, budget, seed)]["candidates"])
        for (kind, variant, budget, seed), result in done.items()
        if variant == SUBSETS and (kind, NESTED, budget, seed) in done
    }


def replayed_errors_match(done: dict, replays: dict) -> dict:
    """{budget-seed: whether the replayed candidates' errors are those of the cached subsets run}, where both exist."""
    return {
        f"{budget}-{seed}": same_errors(done[("cads", SUBSETS, budget, seed)]["candidates"], replay["candidates"])
        for (_, budget, seed), replay in replays.items()
        if ("cads", SUBSETS, budget, seed) in done
    }


def missing_candidate_run(tried: dict, job) -> dict:
    """Train the proxies of every subset the nested run of (budget, seed) did not try (`tried[seed]`, its candidates'
    names); their extrapolated errors."""
    torch.set_num_threads(1)
    _, budget, seed = job
    task = make_task(seed)
    missing = [c for c in every_subset(list(task.sources)) if frozenset(c) not in {kept(name) for name in tried[seed]}]
    config = selection_config(task, budget, VARIANTS[SUBSETS], 1.0, f"/tmp/cads_bench/subsets_replay/{budget}-{seed}")
    watch = Stopwatch()
    mixture = select_by_proxies(task.model, task.sources, task.validation, config, task.validation_error, missing,
                                data_collator=task.collator)
    return {"candidates": mixture.config["candidates"], "proxies_s": watch()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    if not os.path.isfile(CACHE):
        print(f"subsets_replay: no run cache {CACHE}; run instruct_mix.py first.")
        return
    done = read_cache(CACHE)
    seeds = list(range(options.seeds))
    nested = {seed: done.get(("cads", NESTED, options.budget, seed)) for seed in seeds}
    absent = [seed for seed, result in nested.items() if result is None]
    if absent:
        print(f"subsets_replay: instruct_mix.py --variants {NESTED} has not run budget {options.budget}, "
              f"seeds {absent}.")
        return
    jobs = [("replay", options.budget, seed) for seed in seeds]
    replays = os.path.join(RESULTS_DIR, "subsets_replay.runs.jsonl")
    tried = {seed: list(result["candidates"]) for seed, result in nested.items()}
    added = run_cached(jobs, functools.partial(missing_candidate_run, tried), options.workers, replays)
    names = list(FILES)

    def ratios_of(candidate: str) -> dict:
        return {name: float(name in kept(candidate)) for name in names}

    grid = [str([float(x) for x in ratios]) for ratios in GRID]
    fixed = {key: {seed: done[("fixed", key, None, seed)] for seed in seeds} for key in grid}
    replayed, per_seed = {}, []
    for job in jobs:
        seed = job[2]
        errors = {**nested[seed]["candidates"], **added[job]["candidates"]}
        pick = min(errors, key=errors.get)
        ratios = ratios_of(pick)
        runs = fixed[str(list(ratios.values()))][seed]["by_budget"][str(options.budget)]
        cost = nested[seed]["search_s"] + added[job]["proxies_s"]
        replayed[seed] = {"test": runs["test"], "ratios": ratios, "search_s": cost, "final_s": nested[seed]["final_s"]}
        per_seed.append({"seed": seed, "candidates": {candidate_name(ratios_of(n)): e for n, e in errors.items()},
                         "pick": candidate_name(ratios), "test": runs["test"],
                         "nested_pick_test": nested[seed]["test"]})
    union = sum(len(split["train"]) for split in prepared()[1].values())
    rows = summarize(fixed, {SUBSETS: {str(options.budget): replayed}}, [options.budget], seeds, names, grid,
                     [str([1.0, 0.0]), str([0.0, 1.0])], union, lower_is_better=True)
    results = {
        "budget": options.budget, "seeds": seeds, "variants": {SUBSETS: VARIANTS[SUBSETS]},
        "errors_match_where_both_ran": shared_errors_match(done),
        # Every replay in its cache, not only this budget's.
        "replayed_errors_match_where_both_ran": replayed_errors_match(done, read_cache(replays)),
        "per_seed": per_seed, "rows": rows,
        "runs": "subsets_replay.runs.jsonl",
    }
    print("wrote", write_results(f"instruct_mix_{options.budget}_subsets_replay", results, options.output))


if __name__ == "__main__":
    main()
