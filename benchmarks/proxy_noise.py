"""proxy_noise: how much of a proxy's validation error is run-to-run noise, and does its tail mean pick better?

At 16 epochs of the scarce-clean images, a proxy of a mixture with noisy sources memorizes their labels, and its
validation error at the end of the run swings from one evaluation to the next (and between machines: the cached
16-epoch proxies were not reproduced on another CPU). This runs `select_by_proxies` exactly as noisy_sources' `proxy`
variant does, one budget, each seed, with a callback that also scores every proxy on the validation set at
`--tail_points` evenly spaced steps over the last `--tail` of its steps (the last one at its end; evaluation draws no
random numbers, so the selection is unchanged). Per candidate: the error extrapolated from the proxies' end points
(what the selection uses), from their tail means, and from a straight line fitted to each tail, read at its end.
Per seed: the candidate each picks, and its test accuracy read from noisy_sources_scarce's fixed-mixture runs (its
run cache), where the benchmark's grid holds that mixture. The tail errors are kept in the JSON; `--summarize`
recomputes the rest from them.

    python benchmarks/proxy_noise.py                 # 16 epochs, seeds 0-4 (~25 min)
    python benchmarks/proxy_noise.py --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import numpy as np
import torch
from common import RESULTS_DIR, VARIANTS, Stopwatch, read_cache, write_results
from noisy_sources import DESIGNS, make_task
from transformers import TrainerCallback

from cads_hf import CADSConfig, select_by_proxies
from cads_hf.proxy_selection import extrapolate_to_full_size
from cads_hf.vision import noise_source_name


class TailErrors(TrainerCallback):
    """Validation error at `points` evenly spaced steps over the last `tail` of each run, by run folder."""

    def __init__(self, validation_error, tail: float, points: int):
        self.validation_error, self.tail, self.points = validation_error, tail, points
        self.runs, self.steps, self.errors = {}, set(), []

    def on_train_begin(self, args, state, control, **kwargs):
        first = state.max_steps * (1 - self.tail)
        self.steps = {round(s) for s in np.linspace(first, state.max_steps, self.points)}
        self.errors = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            self.errors.append(self.validation_error(model))

    def on_train_end(self, args, state, control, **kwargs):
        self.runs[os.path.basename(args.output_dir)] = self.errors


def line_at_end(errors) -> float:
    """A straight line fitted (least squares) to evenly spaced errors, read at the last one."""
    slope, intercept = np.polyfit(np.arange(len(errors)), errors, 1)
    return float(slope * (len(errors) - 1) + intercept)


# How each rule reads a proxy's error from its tail: the end point is what select_by_proxies uses.
RULES = {"end": lambda errors: errors[-1], "tail_mean": statistics.mean, "tail_fit": line_at_end}


def summarize(results: dict) -> dict:
    """Each rule's extrapolated error per candidate, its pick per seed and that pick's test accuracy (the fixed
    mixture's run in noisy_sources_scarce's cache at this budget), and their means over seeds, from the tail errors."""
    design, budget = DESIGNS["scarce"], results["budget"]
    fixed = {
        (job[1], job[3]): result["by_budget"].get(str(budget))
        for job, result in read_cache(os.path.join(RESULTS_DIR, "noisy_sources_scarce.runs.jsonl")).items()
        if job[0] == "fixed"
    }
    names = [noise_source_name(p) for p in design["noise"]]
    grid = [str([float(x) for x in r]) for r in design["grid"]]
    for seed in results["seeds"]:
        for candidate in seed["candidates"].values():
            tails = {float(f): errors for f, errors in candidate["tail_errors"].items()}
            for rule, read in RULES.items():
                candidate[rule] = extrapolate_to_full_size({f: max(read(e), 1e-6) for f, e in tails.items()})
        for rule in RULES:
            chosen = min(seed["candidates"], key=lambda name: seed["candidates"][name][rule])
            ratios = str([float(name in chosen.split("+")) for name in names])
            score = fixed.get((ratios, seed["seed"]))
            seed[f"{rule}_pick"] = {"candidate": chosen, "test": None if score is None else score["test"]}
        oracle = max((fixed[(k, seed["seed"])] for k in grid if fixed.get((k, seed["seed"]))), key=lambda s: s["val"],
                     default=None)
        seed["oracle_test"] = None if oracle is None else oracle["test"]

    def mean_test(scores):
        return None if None in scores else statistics.mean(scores)

    results["mean_test"] = {
        **{f"{rule}_pick": mean_test([s[f"{rule}_pick"]["test"] for s in results["seeds"]]) for rule in RULES},
        "oracle": mean_test([s["oracle_test"] for s in results["seeds"]]),
    }
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=16)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tail", type=float, default=0.25, help="Share of each proxy's steps the tail covers.")
    parser.add_argument("--tail_points", type=int, default=8, help="Evaluations over the tail, the last at the end.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None)
    parser.add_argument("--summarize", default=None, help="A results JSON of this script: recompute the rules' picks "
                                                          "from its tail errors; run nothing.")
    options = parser.parse_args()
    if options.summarize:
        with open(options.summarize) as f:
            results = summarize(json.load(f))
        print("wrote", write_results("proxy_noise", results, options.summarize))
        return
    torch.set_num_threads(options.threads)
    design = DESIGNS["scarce"]
    budget = int(options.epochs * sum(design["sizes"]))
    variant = {k: v for k, v in VARIANTS["proxy"].items() if k != "selection"}
    seeds = []
    for seed in range(options.seeds):
        task = make_task(design, seed)
        probe = TailErrors(task.validation_error, options.tail, options.tail_points)
        args = CADSConfig(**task.args(f"/tmp/cads_bench/proxy_noise/{seed}", compute_budget=budget, **variant))
        watch = Stopwatch()
        mixture = select_by_proxies(task.model, task.sources, task.validation, args, task.validation_error,
                                    data_collator=task.collator, callbacks=[probe])
        fractions = mixture.config["proxy_fractions"]
        candidates = {
            name: {"tail_errors": {str(f): probe.runs[f"{name.replace('*', 'x')}-{f:g}"] for f in fractions}}
            for name in mixture.config["candidates"]
        }
        seeds.append({
            "seed": seed, "selection_s": watch(), "source_values": mixture.config["source_values"],
            "selection_errors_match": all(  # the probe's last evaluation is the selection's own
                abs(extrapolate_to_full_size({float(f): e[-1] for f, e in candidates[name]["tail_errors"].items()})
                    - error) < 1e-12
                for name, error in mixture.config["candidates"].items()
            ),
            "candidates": candidates,
        })
        print("seed", seed, "done", flush=True)
    results = summarize({
        "design": "scarce", "budget": budget, "epochs": options.epochs, "variant": VARIANTS["proxy"],
        "tail": options.tail, "tail_points": options.tail_points, "seeds": seeds,
    })
    suffix = "" if options.epochs == 16 else f"_{options.epochs:g}ep"
    print("wrote", write_results(f"proxy_noise{suffix}", results, options.output))


if __name__ == "__main__":
    main()
