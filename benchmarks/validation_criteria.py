"""validation_criteria: which fixed mixture each validation criterion picks, in the scarce-clean design.

The search minimizes a validation *loss*; the benchmark's oracle picks the mixture with the best validation
*accuracy*. This script trains the scarce design's grid of fixed mixtures (noisy_sources.py, same data, model and
rules) and records, at every budget, three criteria on the 500 clean validation images: accuracy, cross-entropy (what
the search minimizes with `validation_calibration="none"`) and temperature-calibrated cross-entropy (with
`"temperature"`: the loss at the temperature that minimizes it on the set). For each criterion it reports the mixture
it picks per seed and that mixture's test accuracy; a criterion that picks what accuracy picks lets a loss-minimizing
search aim at the accuracy oracle.

    python benchmarks/validation_criteria.py             # 2 seeds, the scarce grid at 1 / 4 / 16 epochs (~15 min)
    python benchmarks/validation_criteria.py --quick     # 1 seed, three mixtures, 1 / 4 epochs (under a minute)
"""

from __future__ import annotations

import argparse
import functools
import json

import torch
import torch.nn.functional as F
from common import RESULTS_DIR, fixed_mixture_run, mean_std, run_cached, write_results
from noisy_sources import COLLATOR, DESIGNS, make_task

from cads_hf.losses import calibrated_logits, example_losses
from cads_hf.vision import noise_source_name

CRITERIA = {"accuracy": max, "cross_entropy": min, "calibrated_cross_entropy": min}


@torch.no_grad()
def criteria(model, dataset) -> dict:
    """Accuracy, cross-entropy and temperature-calibrated cross-entropy of `model` on all of `dataset`."""
    was_training = model.training
    model.eval()
    try:
        batch = COLLATOR([dataset[i] for i in range(len(dataset))])
        logits, labels = model(pixel_values=batch["pixel_values"])["logits"], batch["labels"]
    finally:
        model.train(was_training)
    with torch.enable_grad():  # the temperature fit differentiates in the inverse temperature
        calibrated, scale = calibrated_logits(example_losses, {"logits": logits}, labels)
    return {
        "accuracy": float((logits.argmax(-1) == labels).float().mean()),
        "cross_entropy": float(F.cross_entropy(logits, labels)),
        "calibrated_cross_entropy": float(F.cross_entropy(calibrated["logits"], labels)),
        "inverse_temperature": float(scale),
    }


def run_job(budgets, work, job):
    torch.set_num_threads(1)
    key, seed = job
    task = make_task(DESIGNS["scarce"], seed)
    accuracy = task.score  # the benchmark's own test metric
    task.score = lambda model, dataset: criteria(model, dataset) if dataset is task.validation else accuracy(model, dataset)
    return fixed_mixture_run(task, json.loads(key), budgets, f"{work}/fixed-{seed}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    design = DESIGNS["scarce"]
    grid = [[1, 0, 0, 0, 0], [1, 0.5, 0, 0, 0]] + [r for r in design["grid"][1:]]
    epochs, seeds = design["epochs"], list(range(options.seeds))
    if options.quick:
        grid, epochs, seeds = [grid[0], grid[2], grid[5]], epochs[:2], [0]
    union = sum(design["sizes"])
    budgets = [int(e * union) for e in epochs]
    keys = [json.dumps([float(x) for x in r]) for r in grid]
    name = "validation_criteria" + ("_quick" if options.quick else "")
    jobs = [(key, seed) for seed in seeds for key in keys]
    run = functools.partial(run_job, budgets, "/tmp/cads_bench/validation_criteria")
    done = run_cached(jobs, run, options.workers, f"{RESULTS_DIR}/{name}.runs.jsonl",
                      lambda job, _: print(f"done {job}", flush=True))
    rows = []
    for budget, e in zip(budgets, epochs):
        b = str(budget)
        row = {"budget": budget, "epochs": e, "validation": {}, "picks": {}}
        for key in keys:
            row["validation"][key] = {
                c: mean_std([done[(key, s)]["by_budget"][b]["val"][c] for s in seeds])
                for c in (*CRITERIA, "inverse_temperature")
            }
        for criterion, best in CRITERIA.items():
            chosen = [best(keys, key=lambda k: done[(k, s)]["by_budget"][b]["val"][criterion]) for s in seeds]
            row["picks"][criterion] = {
                "chosen": chosen,
                "test_accuracy": mean_std([done[(k, s)]["by_budget"][b]["test"] for k, s in zip(chosen, seeds)]),
            }
        rows.append(row)
    results = {"design": "scarce", "sources": dict(zip(map(noise_source_name, design["noise"]), design["sizes"])),
               "seeds": seeds, "quick": options.quick, "mixtures": keys, "rows": rows, "runs": f"{name}.runs.jsonl"}
    print("wrote", write_results(name, results))


if __name__ == "__main__":
    main()
