"""surrogate_points: how many measured points the surrogate l(n) needs (paper §C.3 / Table 8).

The paper fits l(n) (the final training loss of a model trained for the whole budget on a random subset of n
examples) on K in {4, ..., 8} measured sizes of CIFAR-10 with ResNet-18 and reports its MSE on held-out sizes
(Table 8: 0.058 at K = 4, 0.016-0.020 for K = 5-8). Here the same question on MNIST with the paper's small CNN:

  data      a pool of 2,000 images cut (seeded) from the 10,000 MNIST test images in ../shared/data/vision/mnist
            (synthetic seven-segment digits where the files are absent; the JSON names which).
  budget    10 epochs of the pool (20,000 sample usages) for every subset size, so a subset of n examples is
            seen 20,000 / n times: C / n epochs, as the surrogate defines it.
  points    16 sizes evenly spaced from 1% to 100% of the pool (as Table 8 samples sizes; `--spacing geometric`
            spaces them in log n instead); at each, a fresh model (same initial weights within a seed) trains on a random subset of that size with `train_on_examples` (Adam at a
            constant 1e-3, batch 128, the budget spent exactly), and l is its mean loss on that subset afterwards
            (`cads_hf.losses.dataset_loss`, eval mode), as `CADSTrainer.collect_surrogate` measures it.
  fits      for K = 4..8, `LossSurrogate` (spline and loglinear, both fitted in log space) on K of the sizes, and
            its squared error on every remaining size. Two ways to pick the K: spread evenly over the sorted sizes,
            and 20 random choices (seeded) of K - 2 interior sizes. The smallest and largest size are always among
            the K: `LossSurrogate` clamps outside its measured range rather than extrapolate, and so does CADS.
            Held-out MSE on the loss itself (Table 8's measure) and on log(loss).
Mean and sample std (and median) over 3 seeds (even choice) or over seeds x choices (random choice). Seeds change the
pool, the initial weights and the subsets. Every run is appended to a JSON-lines cache
(benchmarks/results/surrogate_points[_quick].runs.jsonl) as it finishes; a rerun skips the runs found there.

    python benchmarks/surrogate_points.py --quick   # pool 1,000, 5 epochs, 12 sizes, 1 seed (about a minute)
    python benchmarks/surrogate_points.py           # pool 2,000, 10 epochs, 16 sizes, 3 seeds (~0.96M sample
                                                    # usages: about 5-8 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import functools
import os

import numpy as np
import torch
import transformers
from common import RESULTS_DIR, Stopwatch, mean_std, mnist_test_images, quiet, run_cached, write_results

from cads_hf import CADSConfig, ComputeBudget, LossSurrogate
from cads_hf.final_training import SequenceDataset, train_on_examples
from cads_hf.losses import dataset_loss
from cads_hf.vision import ImageCollator, SmallCNN, SmallCNNConfig, split_sources

transformers.logging.set_verbosity_error()

BATCH = 128
LEARNING_RATE = 1e-3
KS = (4, 5, 6, 7, 8)
KINDS = ("spline", "loglinear")
COLLATOR = ImageCollator()
WORK = "/tmp/cads_bench/surrogate_points"


def subset_sizes(pool: int, count: int, spacing: str) -> list[int]:
    """`count` sizes (fewer where rounding merges some) from 1% to 100% of the pool, spaced evenly in n (linear) or
    in log n (geometric)."""
    low = max(2, 0.01 * pool)
    grid = np.linspace(low, pool, count) if spacing == "linear" else np.geomspace(low, pool, count)
    return sorted({round(float(n)) for n in grid})


@quiet
def measure(threads: int, job: tuple[int, int, int, int]) -> dict:
    """Final training loss on a random subset of `size` of the pool after training on it for the budget."""
    torch.set_num_threads(threads)
    seed, size, pool_size, budget = job
    watch = Stopwatch()
    data, _ = mnist_test_images(seed)
    pool = split_sources(data, {"pool": pool_size}, seed=seed)["pool"]
    subset = np.sort(np.random.default_rng([seed, size]).choice(pool_size, size=size, replace=False))
    torch.manual_seed(seed)
    model = SmallCNN(SmallCNNConfig())
    args = CADSConfig(
        output_dir=f"{WORK}/seed-{seed}-size-{size}", per_device_train_batch_size=BATCH, learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant", weight_decay=0.0, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=seed, log_level="error",
        per_device_eval_batch_size=500, compute_budget=budget,
    )
    trainer = train_on_examples(model, pool, subset, ComputeBudget(budget), args, data_collator=COLLATOR)
    loss, _ = dataset_loss(trainer.model, SequenceDataset(pool, subset), COLLATOR, 500)
    return {"loss": loss, "samples": len(trainer.train_dataset), "wall_s": watch()}


def held_out_errors(sizes: np.ndarray, losses: np.ndarray, chosen: np.ndarray, kind: str) -> dict:
    """Fit on the `chosen` indices; squared errors (loss and log-loss) on all the others."""
    surrogate = LossSurrogate(sizes=sizes[chosen].tolist(), losses=losses[chosen].tolist(), kind=kind)
    rest = np.setdiff1d(np.arange(len(sizes)), chosen)
    predicted = np.asarray(surrogate(sizes[rest]), dtype=np.float64)
    return {
        "mse": float(np.mean((predicted - losses[rest]) ** 2)),
        "log_mse": float(np.mean((np.log(np.clip(predicted, 1e-10, None)) - np.log(losses[rest] + 1e-10)) ** 2)),
        "held_out": len(rest),
    }


def quantiles(values) -> dict:
    return {name: float(np.quantile(values, q)) for name, q in (("q25", 0.25), ("median", 0.5), ("q75", 0.75))} | {
        "min": float(np.min(values)), "max": float(np.max(values))}


def evaluate_fits(sizes: np.ndarray, losses: np.ndarray, seed: int, choices: int) -> dict:
    """{kind: {K: {"even": errors, "random": [errors...]}}} for one seed's measured curve."""
    n = len(sizes)
    rng = np.random.default_rng([seed, 31337])
    out = {}
    for kind in KINDS:
        out[kind] = {}
        for k in KS:
            if k > n - 1:  # nothing left to hold out
                continue
            even = np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))
            random = [
                np.sort(np.concatenate([[0, n - 1], rng.choice(np.arange(1, n - 1), size=k - 2, replace=False)]))
                for _ in range(choices)
            ]
            out[kind][k] = {
                "even": {**held_out_errors(sizes, losses, even, kind), "chosen_sizes": sizes[even].tolist()},
                "random": [held_out_errors(sizes, losses, c, kind) for c in random],
            }
    return out


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    ax = axes[0]
    for seed, curve in results["curves"].items():
        sizes, losses = np.array(curve["sizes"]), np.array(curve["losses"])
        (line,) = ax.plot(sizes, losses, "o", ms=4, label=f"seed {seed} measured")
        chosen = np.array(results["fits"][seed]["spline"]["5"]["even"]["chosen_sizes"])
        fit = LossSurrogate(sizes=chosen.tolist(), losses=[losses[list(sizes).index(c)] for c in chosen], kind="spline")
        grid = np.geomspace(sizes[0], sizes[-1], 200)
        ax.plot(grid, fit(grid), "-", color=line.get_color(), lw=1, label=f"seed {seed} spline, K=5 (even)")
    ax.set(xscale="log", yscale="log", xlabel="subset size n", ylabel="final training loss on the subset",
           title=f"l(n) at a budget of {results['budget']} samples")
    ax.legend(fontsize=7)
    for ax, measure_name, label in ((axes[1], "mse", "held-out MSE (loss)"), (axes[2], "log_mse", "held-out MSE (log loss)")):
        for kind, marker in zip(KINDS, ("o", "s")):
            for choice, style in (("even", "-"), ("random", "--")):
                rows = [r for r in results["table"] if r["kind"] == kind]
                ks = [r["K"] for r in rows]
                if choice == "even":  # mean over seeds, bars from the smallest to the largest seed
                    centre = np.array([r[choice][measure_name]["mean"] for r in rows])
                    low, high = ([r[choice][measure_name][q] for r in rows] for q in ("min", "max"))
                else:  # median over seeds x choices, bars over the middle half (a few overshooting fits skew the mean)
                    centre = np.array([r[choice][measure_name]["median"] for r in rows])
                    low, high = ([r[choice][measure_name][q] for r in rows] for q in ("q25", "q75"))
                bars = [np.clip(centre - np.array(low), 0, None), np.clip(np.array(high) - centre, 0, None)]
                ax.errorbar(ks, centre, yerr=bars, marker=marker, ls=style, capsize=3,
                            label=f"{kind}, {choice} ({'mean, min-max' if choice == 'even' else 'median, IQR'})")
        ax.set(yscale="log", xlabel="K (measured sizes the surrogate is fitted on)", ylabel=label, xticks=list(KS))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=None, help="Pool size (2,000; quick 1,000).")
    parser.add_argument("--epochs", type=float, default=None, help="Budget in epochs of the pool (10; quick 5).")
    parser.add_argument("--sizes", type=int, default=None, help="Measured subset sizes (16; quick 12).")
    parser.add_argument("--spacing", choices=("linear", "geometric"), default="linear",
                        help="Sizes evenly spaced in n (as Table 8 samples them) or in log n (dense at small n).")
    parser.add_argument("--choices", type=int, default=20, help="Random choices of the K sizes per seed and K.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per run.")
    parser.add_argument("--workers", type=int, default=2, help="Runs in parallel processes.")
    parser.add_argument("--output", default=None)
    parser.add_argument("--cache", default=None, help="JSON-lines file of finished runs (resumes from it).")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    pool = options.pool or (1000 if options.quick else 2000)
    epochs = options.epochs or (5 if options.quick else 10)
    count = options.sizes or (12 if options.quick else 16)
    seeds = list(range(1 if options.quick else options.seeds))
    budget = int(epochs * pool)
    sizes = subset_sizes(pool, count, options.spacing)
    if len(sizes) < max(KS) + 1:
        parser.error(f"{len(sizes)} distinct sizes leave nothing to hold out at K = {max(KS)}; raise --sizes.")
    watch = Stopwatch()
    # Seed by seed, largest first (balance); the pool and budget are part of the key, so a changed set-up reruns.
    jobs = [(seed, size, pool, budget) for seed in seeds for size in sorted(sizes, reverse=True)]
    print(f"{len(jobs)} runs of {budget} samples (pool {pool}, sizes {sizes})", flush=True)
    run = functools.partial(measure, options.threads)
    name = "surrogate_points" + ("_quick" if options.quick else "")
    cache = options.cache or os.path.join(RESULTS_DIR, f"{name}.runs.jsonl")

    def report(job, result):
        print(f"seed {job[0]} size {job[1]:>5}: loss {result['loss']:.3e} ({result['wall_s']:.0f} s)", flush=True)

    measured = run_cached(jobs, run, options.workers, cache, report)

    curves, fits = {}, {}
    for seed in seeds:
        losses = np.array([measured[(seed, n, pool, budget)]["loss"] for n in sizes])
        curves[seed] = {"sizes": sizes, "losses": losses.tolist(),
                        "wall_s": [measured[(seed, n, pool, budget)]["wall_s"] for n in sizes]}
        fits[seed] = evaluate_fits(np.array(sizes, dtype=np.float64), losses, seed, options.choices)
    table = []
    for kind in KINDS:
        for k in KS:
            row = {"kind": kind, "K": k}
            for measure_name in ("mse", "log_mse"):
                even = [fits[s][kind][k]["even"][measure_name] for s in seeds]
                random = [c[measure_name] for s in seeds for c in fits[s][kind][k]["random"]]
                # The median beside the mean: one spline that overshoots between distant points dominates a mean.
                row.setdefault("even", {})[measure_name] = {**mean_std(even), **quantiles(even)}
                row.setdefault("random", {})[measure_name] = {**mean_std(random), **quantiles(random)}
            row["held_out_sizes_even"] = fits[seeds[0]][kind][k]["even"]["held_out"]
            table.append(row)
            print(f"{kind:>9} K={k}: held-out MSE even {row['even']['mse']['mean']:.2e} ± {row['even']['mse']['std']:.1e}"
                  f"  random {row['random']['mse']['mean']:.2e} ± {row['random']['mse']['std']:.1e}"
                  f" (median {row['random']['mse']['median']:.2e})"
                  f"  | log-MSE even {row['even']['log_mse']['mean']:.3f}  random median {row['random']['log_mse']['median']:.3f}")
    results = {
        "quick": options.quick,
        "data": mnist_test_images(0)[1],
        "seeds": seeds,
        "pool": pool,
        "budget": budget,
        "epochs_of_pool": epochs,
        "batch": BATCH,
        "learning_rate": LEARNING_RATE,
        "spacing": options.spacing,
        "sizes": sizes,
        "random_choices": options.choices,
        "paper_table_8": {"4": 0.057668, "5": 0.016326, "6": 0.018594, "7": 0.020031, "8": 0.017905},
        "table": table,
        "curves": {str(s): c for s, c in curves.items()},
        "fits": {str(s): {kind: {str(k): v for k, v in f[kind].items()} for kind in f} for s, f in fits.items()},
        "runs": os.path.basename(cache),
        "run_wall_s": float(sum(r["wall_s"] for r in measured.values())),
    }
    path = write_results(name, results, options.output)
    plot(results, os.path.splitext(path)[0] + ".png")
    print("wrote", path, f"({watch():.0f} s)")


if __name__ == "__main__":
    main()
