"""surrogate_sweep: one set of surrogate runs serving a whole budget sweep (`CADSTrainer.collect_surrogate_sweep`).

The penalty reward needs l(n) for its budget: fresh models trained on random subsets of n examples for the whole
budget. With a constant learning rate, a run for a smaller budget ends with the model that the largest budget's run
passes through (the example sequence of a budget is the start of a larger one's), so a sweep reads every smaller
budget off the largest budget's runs. This benchmark collects the surrogates of a sweep both ways and reports:
  saving      compute (the surrogates' `cost`: sample usages, plus the examples read to measure the losses) and wall
              time of one collection per budget, over the sweep's;
  agreement   the largest relative and absolute differences between the sweep's measured points and the separate
              collection's, per budget. The budgets are whole numbers of batches, where the two are the same model
              up to float noise; for any other budget the run for it ends with a partial batch that the sweep's run
              does not have, and on small, memorized subsets (losses near 0) one batch moves the loss by a
              large fraction of itself (measured here first: 23% at 5,000 samples = 39.06 batches).
Data: a pool of 2,000 images cut (seeded) from the 10,000 MNIST test images in ../shared/data/vision/mnist (synthetic
seven-segment digits where absent), the paper's small CNN, Adam at a constant 1e-3, batch 128, the default
surrogate fractions (0.05 / 0.1 / 0.3 / 0.5 / 0.9). Budgets: about 2.5, 5 and 10 epochs of the pool (quick: 2.5 and 5), rounded to whole batches.
Seeds 0-2 (quick: 0); every collection is appended to benchmarks/results/surrogate_sweep[_quick].runs.jsonl.

    python benchmarks/surrogate_sweep.py --quick   # about a minute
    python benchmarks/surrogate_sweep.py           # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import functools
import os

import numpy as np
import torch
import transformers
from common import RESULTS_DIR, Stopwatch, mean_std, mnist_test_images, quiet, run_cached, write_results

from cads_hf import CADSConfig, CADSTrainer
from cads_hf.vision import ImageCollator, SmallCNN, SmallCNNConfig, split_sources

transformers.logging.set_verbosity_error()

BATCH = 128
POOL = 2000
WORK = "/tmp/cads_bench/surrogate_sweep"


@quiet
def collect(budgets: tuple[int, ...], job: tuple) -> dict:
    """("sweep", None, seed): every budget from the largest's runs; ("separate", budget, seed): that budget alone."""
    torch.set_num_threads(1)
    kind, budget, seed = job
    data, _ = mnist_test_images(seed)
    parts = split_sources(data, {"pool": POOL, "validation": 500}, seed=seed)
    torch.manual_seed(seed)
    args = CADSConfig(
        output_dir=f"{WORK}/{kind}-{budget}-{seed}", per_device_train_batch_size=BATCH, learning_rate=1e-3,
        lr_scheduler_type="constant", weight_decay=0.0, report_to="none", save_strategy="no", logging_strategy="no",
        disable_tqdm=True, use_cpu=True, seed=seed, log_level="error", per_device_eval_batch_size=500,
        compute_budget=max(budgets) if kind == "sweep" else budget, reward="penalty",
    )
    trainer = CADSTrainer(model=SmallCNN(SmallCNNConfig()), args=args, sources={"pool": parts["pool"]},
                          eval_dataset=parts["validation"], data_collator=ImageCollator())
    watch = Stopwatch()
    surrogates = trainer.collect_surrogate_sweep(budgets) if kind == "sweep" else {budget: trainer.collect_surrogate()}
    wall = watch()
    return {
        "wall_s": wall,
        "cost": next(iter(surrogates.values())).cost,
        "surrogates": {str(int(b)): s.to_dict() for b, s in surrogates.items()},
    }


def summarize(done: dict, budgets: list[int], seeds: list[int]) -> dict:
    per_seed = []
    for seed in seeds:
        sweep = done[("sweep", None, seed)]
        separate = [done[("separate", b, seed)] for b in budgets]
        relative, absolute = {}, {}
        for budget, alone in zip(budgets, separate):
            a = np.array(sweep["surrogates"][str(budget)]["losses"])
            b = np.array(alone["surrogates"][str(budget)]["losses"])
            relative[str(budget)] = float(np.max(np.abs(a - b) / b))
            absolute[str(budget)] = float(np.max(np.abs(a - b)))
        per_seed.append({
            "seed": seed,
            "compute_saving": sum(r["cost"] for r in separate) / sweep["cost"],
            "wall_saving": sum(r["wall_s"] for r in separate) / sweep["wall_s"],
            "max_relative_difference": relative,
            "max_absolute_difference": absolute,
        })
    return {
        "per_seed": per_seed,
        "compute_saving": mean_std([s["compute_saving"] for s in per_seed]),
        "wall_saving": mean_std([s["wall_saving"] for s in per_seed]),
        "ideal_saving": sum(budgets) / max(budgets),
        **{
            key: {str(b): max(s[key][str(b)] for s in per_seed) for b in budgets}
            for key in ("max_relative_difference", "max_absolute_difference")
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    epochs = [2.5, 5] if options.quick else [2.5, 5, 10]
    budgets = [BATCH * round(e * POOL / BATCH) for e in epochs]
    seeds = list(range(1 if options.quick else options.seeds))
    name = "surrogate_sweep" + ("_quick" if options.quick else "")
    jobs = [("sweep", None, seed) for seed in seeds] + [("separate", b, seed) for seed in seeds for b in budgets]
    done = run_cached(jobs, functools.partial(collect, tuple(budgets)), options.workers,
                      os.path.join(RESULTS_DIR, f"{name}.runs.jsonl"), lambda job, _: print("done", job, flush=True))
    results = {
        "data": mnist_test_images(0)[1], "pool": POOL, "epochs": epochs, "budgets": budgets, "seeds": seeds,
        "batch": BATCH, "quick": options.quick, **summarize(done, budgets, seeds), "runs": f"{name}.runs.jsonl",
    }
    print("wrote", write_results(name, results, options.output))


if __name__ == "__main__":
    main()
