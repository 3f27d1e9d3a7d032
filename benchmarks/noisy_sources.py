"""noisy_sources: heterogeneous label-noise sources on the real MNIST test set (paper §5.2 / Table 2 / Fig. 3).

Two designs, both cut from the 10,000 MNIST test images (1,000 test, 500 clean validation, the rest as sources):
  scarce  a clean source of 300 images and four of 2,000 at 20 / 40 / 60 / 80% label noise; budgets 1-16 epochs of
          the 8,300-image union. Here the best fixed mixture changes with the budget.
  paper   five sources of 1,700 at 0 / 22.5 / 45 / 67.5 / 90% noise (the paper's split); kept for fidelity.

Rules (stated because the crossover depends on them): the paper's small CNN, Adam at a constant learning rate of
1e-3, batch 128, every run spends its whole budget (no early stopping, no checkpoint picking). A fixed mixture is
trained once at the largest budget and scored at every smaller budget on the way (constant learning rate + the
budget sampler's prefix property make that the same model a shorter run ends with, to within one partial batch).

Rows per budget: Best-source (each source alone, chosen on validation), Full-dataset (every source, ratio 1),
Uniform (ratio 0.5 everywhere), Oracle (best of a grid of fixed mixtures, chosen on validation), and CADS-S with each
reward (search, then a fresh model trained on the learned mixture for exactly the budget). Test accuracy, mean and
sample std over seeds.

    python benchmarks/noisy_sources.py --quick            # one seed, two budgets, short searches
    python benchmarks/noisy_sources.py --design scarce    # full
"""

from __future__ import annotations

import argparse
import copy
import functools
import os

import torch
import transformers
from common import (
    DEFAULT_VARIANT,
    VARIANTS,
    Task,
    cads_run,
    fixed_mixture_run,
    mnist_test_images,
    plot,
    plot_trajectories,
    run_cache_path,
    run_jobs,
    summarize,
    write_results,
)

from cads_hf.evaluation import classification_accuracy
from cads_hf.sources import CachedRows
from cads_hf.vision import (
    ImageCollator,
    SmallCNN,
    SmallCNNConfig,
    make_noisy_sources,
    noise_source_name,
    split_sources,
)

transformers.logging.set_verbosity_error()

DESIGNS = {
    "scarce": {
        "sizes": [300, 2000, 2000, 2000, 2000],
        "noise": [0.0, 0.2, 0.4, 0.6, 0.8],
        "epochs": [1, 4, 16],
        "grid": [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0.5, 0, 0]],
    },
    "paper": {
        "sizes": [1700] * 5,
        "noise": [0.0, 0.225, 0.45, 0.675, 0.9],
        "epochs": [1, 2, 4, 8],
        "grid": [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 0.5, 0, 0, 0]],
    },
}
BATCH = 128
LEARNING_RATE = 1e-3  # constant: at 5e-4 the late crossover moves past 16 epochs
COLLATOR = ImageCollator()


def build(design: dict, seed: int):
    data, name = mnist_test_images(seed)
    parts = split_sources(data, {"test": 1000, "validation": 500, "pool": sum(design["sizes"])}, seed=seed)
    sources = make_noisy_sources(parts["pool"], noise_levels=design["noise"], sizes=design["sizes"], seed=seed)
    return sources, parts["validation"], parts["test"], name


def fresh_model(seed: int):
    torch.manual_seed(seed)
    return SmallCNN(SmallCNNConfig())


def training_args(output_dir: str, seed: int, **extra):
    return {
        **dict(
            output_dir=output_dir, per_device_train_batch_size=BATCH, learning_rate=LEARNING_RATE, lr_scheduler_type="constant",
            weight_decay=0.0, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
            use_cpu=True, seed=seed, per_device_eval_batch_size=500, log_level="error",
        ),
        **extra,
    }


def make_task(design: dict, seed: int) -> Task:
    sources, validation, test, _ = build(design, seed)
    scored = CachedRows(validation)  # the proxies score validation ten times: read its rows once
    return Task(
        sources=sources,
        validation=validation,
        model=lambda: fresh_model(seed),
        collator=COLLATOR,
        score=lambda model, dataset: classification_accuracy(model, dataset, COLLATOR),
        test=test,
        args=lambda output_dir, **extra: training_args(output_dir, seed, **extra),
        batch_size=BATCH,
        # The oracle picks on validation accuracy; the proxies are ranked by the same.
        validation_error=lambda model: 1 - classification_accuracy(model, scored, COLLATOR),
    )


def run_job(design_name, design, mixtures, budgets, search_fraction, threads, work, job):
    torch.set_num_threads(threads)
    kind, key, budget, seed = job
    task = make_task(design, seed)
    if kind == "fixed":
        return fixed_mixture_run(task, mixtures[key], budgets, f"{work}/fixed-{seed}")
    return cads_run(task, budget, VARIANTS[key], search_fraction, f"{work}/cads-{key}-{budget}-{seed}",
                    list(mixtures.values()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--design", choices=sorted(DESIGNS), default="scarce")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rewards", nargs="+", default=None, choices=sorted(VARIANTS),
                        help="CADS-S variants (default: all six of the README's table; --quick: the default and penalty).")
    parser.add_argument("--penalty_max_epochs", type=float, default=4,
                        help="Largest budget (epochs) at which the penalty reward runs (its surrogate costs 4 runs).")
    parser.add_argument("--search_fraction", type=float, default=1.0, help="Search length as a fraction of the budget.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per run.")
    parser.add_argument("--workers", type=int, default=2, help="Runs in parallel processes.")
    parser.add_argument("--epochs", type=float, nargs="+", default=None, help="Budgets in epochs of the union.")
    parser.add_argument("--output", default=None)
    parser.add_argument("--cache", default=None, help="JSON-lines file of finished runs (resumes from it).")
    parser.add_argument("--report_only", action="store_true", help="Summarize the seeds already finished; run nothing.")
    options = parser.parse_args()
    if options.rewards is None:
        options.rewards = [DEFAULT_VARIANT, "penalty"] if options.quick else list(VARIANTS)
    design = copy.deepcopy(DESIGNS[options.design])
    seeds = list(range(1 if options.quick else options.seeds))
    if options.quick:
        design["epochs"] = [1, 4]
        design["grid"] = design["grid"][:3] + [design["grid"][4]]
    if options.epochs:
        design["epochs"] = options.epochs
    union = sum(design["sizes"])
    budgets = [int(e * union) for e in design["epochs"]]
    work = f"/tmp/cads_bench/noisy_sources_{options.design}"

    names = [noise_source_name(p) for p in design["noise"]]
    singles = [[float(i == j) for j in range(len(names))] for i in range(len(names))]
    mixtures = {str(r): r for r in [[float(x) for x in r] for r in design["grid"]] + singles + [[0.5] * len(names)]}
    jobs = [("fixed", key, None, seed) for key in mixtures for seed in seeds]
    jobs += [
        ("cads", variant, budget, seed)
        for variant in options.rewards
        for budget, epochs in zip(budgets, design["epochs"])
        if not (VARIANTS[variant].get("reward") == "penalty" and epochs > options.penalty_max_epochs)
        for seed in seeds
    ]
    run = functools.partial(run_job, options.design, design, mixtures, budgets, options.search_fraction,
                            options.threads, work)
    name = f"noisy_sources_{options.design}" + ("_quick" if options.quick else "")
    fixed, cads, seeds = run_jobs(jobs, run, options.workers, name, options.cache, run_missing=not options.report_only)
    if not seeds:
        print("no seed has finished all its runs yet")
        return
    data_name = mnist_test_images(0)[1]
    grid_keys = [str([float(x) for x in r]) for r in design["grid"]] + [str(r) for r in singles]
    rows = summarize(
        fixed, cads, budgets, seeds, names, grid_keys, [str(r) for r in singles], union, lower_is_better=False
    )
    results = {
        "design": options.design, "data": data_name, "sources": dict(zip(names, design["sizes"])),
        "noise": dict(zip(names, design["noise"])), "seeds": seeds, "quick": options.quick,
        "search_fraction": options.search_fraction, "rows": rows,
        "variants": {variant: VARIANTS[variant] for variant in options.rewards},
        "runs": os.path.basename(run_cache_path(name, options.cache)),
    }
    path = write_results(name, results, options.output)
    plot(rows, names, path.replace(".json", ".png"), "test accuracy")
    plot_trajectories(cads, DEFAULT_VARIANT, names, path.replace(".json", "_trajectories.png"), union)
    print("wrote", path)


if __name__ == "__main__":
    main()
