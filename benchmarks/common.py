"""Shared pieces of the benchmarks: data paths, runs that record every budget on the way, result files."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import statistics
import time

import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
from transformers import TrainerCallback

from cads_hf import CADSConfig, CADSTrainer, ComputeBudget, select_by_proxies, train_on_mixture
from cads_hf.final_training import plain_training_args
from cads_hf.vision import read_mnist_idx, synthetic_digits

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CADS-S variants the benchmarks compare: name -> CADSConfig overrides. Every selection setting is pinned here, so a
# cached run keeps meaning what its name says when CADSConfig's defaults change.
_FIRST = {"num_ratio_samples": 4, "selection_learning_rate": 5e-2, "alignment_probe": "central",
          "validation_calibration": "none"}  # the first runs
# 64 samples share one forward pass.
_LOW_VARIANCE = {"num_ratio_samples": 64, "selection_learning_rate": 1e-2, "alignment_probe": "central",
                 "validation_calibration": "none"}
VARIANTS = {
    "penalty": {"reward": "penalty", "selection_averaging": "mean", **_FIRST},
    "validation_mean": {"reward": "validation", "selection_averaging": "mean", **_FIRST},
    "horizon_mean": {"reward": "horizon", "selection_averaging": "mean", **_FIRST},
    "horizon_k64": {"reward": "horizon", "selection_averaging": "mean", **_LOW_VARIANCE},
    "horizon_k64_last": {"reward": "horizon", "selection_averaging": "last", **_LOW_VARIANCE},
    "horizon_k64_tail": {"reward": "horizon", "selection_averaging": "tail", **_LOW_VARIANCE},
    # The same with the cheaper one-sided alignment probe (one forward fewer per step).
    "horizon_k64_tail_one_sided": {"reward": "horizon", "selection_averaging": "tail", **_LOW_VARIANCE,
                                   "alignment_probe": "one_sided"},
    # The same, minimizing the temperature-calibrated validation loss (accuracy is the metric, not likelihood).
    "horizon_k64_tail_calibrated": {"reward": "horizon", "selection_averaging": "tail", **_LOW_VARIANCE,
                                    "validation_calibration": "temperature"},
    # The same with a quarter of the validation batch: a cheaper step, if the selection holds up.
    "horizon_k64_tail_val32": {"reward": "horizon", "selection_averaging": "tail", "selection_eval_batch_size": 32,
                               **_LOW_VARIANCE},
    # The reward measured on every other step only (the steps between cost a plain step), at the same and at twice
    # the step on s (half as many updates).
    "horizon_k64_tail_m2": {"reward": "horizon", "selection_averaging": "tail", "selection_measure_interval": 2,
                            **_LOW_VARIANCE},
    "horizon_k64_tail_m2_lr2": {"reward": "horizon", "selection_averaging": "tail", "selection_measure_interval": 2,
                                **_LOW_VARIANCE, "selection_learning_rate": 2e-2},
}
# Not a search: select_by_proxies (scaled-down runs of every candidate, error extrapolated to full size).
VARIANTS["proxy"] = {"selection": "proxies", "proxy_candidates": "nested", "proxy_fractions": [0.1, 0.25],
                     "proxy_keep_steps": True, "proxy_refine_fraction": None, "proxy_value_examples": 512}
# Smaller proxies (1.25 and 1.5 instead of 1.75 final runs' samples for five candidates): is the 2x cost goal in reach?
VARIANTS["proxy_small"] = {**VARIANTS["proxy"], "proxy_fractions": [0.05, 0.2]}
VARIANTS["proxy_10_20"] = {**VARIANTS["proxy"], "proxy_fractions": [0.1, 0.2]}
# Larger proxies: less extrapolation (half the run at most), at twice the samples.
VARIANTS["proxy_25_50"] = {**VARIANTS["proxy"], "proxy_fractions": [0.25, 0.5]}
# The same proxies ranking the benchmark's own grid of fixed mixtures (`candidates=`), fractional ones included.
VARIANTS["proxy_grid"] = {**VARIANTS["proxy"], "candidates": "grid"}
# Every subset of the sources as a candidate (3 for two sources: 2.25 final runs' samples at 25%/50%), so that the
# value's order cannot leave the second source alone untried.
VARIANTS["proxy_25_50_subsets"] = {**VARIANTS["proxy_25_50"], "proxy_candidates": "subsets"}
# The library's default for five sources: `proxy` with values from 256 examples, and where the two best come within
# 10%, both refined by a 50% proxy.
VARIANTS["proxy_refined"] = {**VARIANTS["proxy"], "proxy_value_examples": 256, "proxy_refine_fraction": 0.5,
                             "proxy_refine_margin": 0.1}
DEFAULT_VARIANT = "horizon_k64_tail"  # the variant that matches CADSConfig's defaults


def shared_data(*parts: str) -> str | None:
    """A file under ../shared/data (or $CADS_SHARED_DATA), or None where it is absent."""
    root = os.environ.get("CADS_SHARED_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
    path = os.path.join(root, *parts)
    return path if os.path.exists(path) else None


def mnist_test_images(seed: int = 0):
    """The 10,000 MNIST test images and the data's name; synthetic seven-segment digits where the files are absent."""
    images = shared_data("vision", "mnist", "t10k-images-idx3-ubyte.gz")
    labels = shared_data("vision", "mnist", "t10k-labels-idx1-ubyte.gz")
    if images and labels:
        return read_mnist_idx(images, labels), "mnist-test"
    return synthetic_digits(10_000, seed=seed), "synthetic-digits (../shared/data absent)"


def quiet(function):
    """`function` with its stdout discarded (a Trainer with disable_tqdm prints its metrics after every run)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):
            return function(*args, **kwargs)

    return wrapper


class BudgetCheckpoints(TrainerCallback):
    """Evaluates at given sample counts during one run.

    With a constant learning rate and the budget sampler's prefix property (the sequence for a budget is the start
    of the sequence for any larger one), the model after c samples of a run for C >= c is the model a run for budget c
    ends with (to within the last partial batch), so one run at the largest budget scores every smaller budget.
    """

    def __init__(self, budgets: list[int], samples_per_step: int, evaluate):
        self.steps = {max(1, round(b / samples_per_step)): b for b in budgets}
        self.evaluate, self.results = evaluate, {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            self.results[self.steps[state.global_step]] = self.evaluate(model)


def mean_std(values) -> dict:
    values = [float(v) for v in values]
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def write_results(name: str, results: dict, output: str | None = None) -> str:
    path = output or os.path.join(RESULTS_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    results = {**results, "written_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def median(values) -> float:
    return float(statistics.median(values))


def summarize(fixed, cads, budgets, seeds, names, grid_keys, single_keys, union, lower_is_better=False) -> list:
    """Rows per budget: best source, full data, uniform (0.5), oracle (best of `grid_keys` on validation) and every
    CADS variant; each the test metric's mean and std over seeds. Fixed runs are keyed by str(ratio list)."""
    pick = min if lower_is_better else max
    rows = []
    for budget in budgets:
        b = str(budget)
        row = {"budget": budget, "epochs": budget / union}

        def chosen(candidates, seed):
            best = pick(candidates, key=lambda key: fixed[key][seed]["by_budget"][b]["val"])
            return best, fixed[best][seed]["by_budget"][b]["test"]

        for label, candidates in (("best_source", single_keys), ("oracle", grid_keys)):
            picks = [chosen(candidates, s) for s in seeds]
            row[label] = {**mean_std([t for _, t in picks]), "chosen": [k for k, _ in picks]}
        for label, ratio in (("full", 1.0), ("uniform", 0.5)):
            key = str([ratio] * len(names))
            if key in fixed:
                row[label] = mean_std([fixed[key][s]["by_budget"][b]["test"] for s in seeds])
        row["fixed"] = {k: mean_std([fixed[k][s]["by_budget"][b]["test"] for s in seeds]) for k in grid_keys}
        for variant, runs in cads.items():
            if b not in runs:  # a variant may skip large budgets
                continue
            results = [runs[b][s] for s in seeds]
            row[f"cads_{variant}"] = {
                **mean_std([r["test"] for r in results]),
                "ratios": {n: mean_std([r["ratios"][n] for r in results]) for n in names},
                "selection_cost_over_final": float(np.median([r["search_s"] / r["final_s"] for r in results])),
                "selection_cost_per_seed": [r["search_s"] / r["final_s"] for r in results],
                # select_by_proxies: the seeds whose two best candidates were refined, with their errors extrapolated
                # from the first two fractions and from all three
                "refined": {
                    str(s): {name: {"two_point": r["candidates"][name], "all_fractions": error}
                             for name, error in r["refined"].items()}
                    for s, r in zip(seeds, results) if "refined" in r
                },
            }
        rows.append(row)
    return rows


def cads_columns(rows) -> list[str]:
    """The CADS variants' columns ("cads_<variant>") that summary rows hold, sorted."""
    return sorted({k for r in rows for k in r if k.startswith("cads_")})


def plot(rows, names, path, metric_label):
    """Learned ratios against the budget, one panel per CADS variant, beside the oracle's chosen mixture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = cads_columns(rows)
    fig, axes = plt.subplots(1, len(variants) + 1, figsize=(4.5 * (len(variants) + 1), 4), sharey=True, squeeze=False)
    axes = axes[0]  # one row; a run of fixed mixtures alone has the oracle's panel only
    for ax, variant in zip(axes, variants):
        present = [r for r in rows if variant in r]
        for name in names:
            ax.errorbar([r["epochs"] for r in present], [r[variant]["ratios"][name]["mean"] for r in present],
                        yerr=[r[variant]["ratios"][name]["std"] for r in present], marker="o", label=name, capsize=3)
        ax.set(title=f"learned ratios ({variant[5:]})", xscale="log", xlabel="budget (epochs of the union)")
    oracle = axes[-1]
    for j, name in enumerate(names):
        oracle.plot([r["epochs"] for r in rows], [np.mean([json.loads(c)[j] for c in r["oracle"]["chosen"]]) for r in rows],
                    marker="s", label=name)
    oracle.set(title=f"oracle's best fixed mixture ({metric_label})", xscale="log", xlabel="budget (epochs of the union)")
    axes[0].set_ylabel("ratio")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_trajectories(cads: dict, variant: str, names, path: str, union: int) -> None:
    """The search's ratios against its step, one panel per budget, for one CADS variant (each seed a thin line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(cads.get(variant, {}), key=float)
    if not budgets:
        return
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.5 * len(budgets), 4), sharey=True, squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for j, name in enumerate(names):
            for k, result in enumerate(cads[variant][budget].values()):
                steps = [point["step"] for point in result["trajectory"]]
                ax.plot(steps, [point[name] for point in result["trajectory"]], color=f"C{j}", lw=1,
                        label=name if k == 0 else None)
        ax.set(title=f"{variant}: {float(budget) / union:.2g} epochs", xlabel="search step")
    axes[0][0].set_ylabel("ratio s")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@dataclass
class Task:
    """What a benchmark trains and how it scores a model: `score(model, dataset)`, higher or lower is better."""

    sources: dict
    validation: object
    test: object
    model: Callable  # () -> a fresh model, same initial weights every call
    collator: Callable
    score: Callable
    args: Callable  # (output_dir, **overrides) -> CADSConfig keyword arguments
    batch_size: int
    # (model) -> positive validation error, lower is better, for select_by_proxies (None: the validation loss)
    validation_error: Callable | None = None


def fixed_mixture_run(task: Task, ratios, budgets, output_dir) -> dict:
    """One run at the largest budget on D_r; validation and test scores at every budget on the way."""
    checkpoints = BudgetCheckpoints(
        budgets, task.batch_size, lambda model: (task.score(model, task.validation), task.score(model, task.test))
    )
    watch = Stopwatch()
    args = plain_training_args(CADSConfig(**task.args(output_dir), compute_budget=max(budgets)))
    train_on_mixture(
        task.model(), task.sources, ratios, ComputeBudget(max(budgets)), args, data_collator=task.collator,
        callbacks=[checkpoints],
    )
    return {"by_budget": {str(b): {"val": v, "test": t} for b, (v, t) in checkpoints.results.items()}, "wall_s": watch()}


def selection_config(task: Task, budget, overrides: dict, search_fraction: float, output_dir) -> CADSConfig:
    """The CADSConfig of a variant's selection (search or proxies) for one budget."""
    settings = {k: v for k, v in overrides.items() if k not in ("selection", "candidates")}
    search_steps = max(10, math.ceil(budget * search_fraction / task.batch_size))
    return CADSConfig(**{
        **task.args(output_dir, max_steps=search_steps, logging_strategy="steps", logging_steps=max(1, search_steps // 20)),
        "compute_budget": budget,
        "selection_eval_batch_size": task.batch_size,
        "surrogate_fractions": [0.05, 0.2, 0.5, 1.0],
        **settings,  # a variant may set any of the above
    })


def cads_run(task: Task, budget, overrides: dict, search_fraction: float, output_dir, grid=None) -> dict:
    """CADS-S search for one budget (or `select_by_proxies` for a variant with selection="proxies", among the
    benchmark's `grid` of fixed mixtures for one with candidates="grid"), then a fresh model on the learned mixture
    for exactly that budget."""
    config = selection_config(task, budget, overrides, search_fraction, output_dir)
    watch = Stopwatch()
    proxies = {}
    if overrides.get("selection") == "proxies":
        candidates = None
        if overrides.get("candidates") == "grid":
            candidates = [dict(zip(task.sources, ratios)) for ratios in grid]
        mixture = select_by_proxies(task.model, task.sources, task.validation, config, task.validation_error,
                                    candidates, data_collator=task.collator)
        surrogate_cost, trajectory = 0.0, []
        # Each candidate's extrapolated error, and those of the two refined by a larger proxy where they were.
        proxies = {key: mixture.config[key] for key in ("candidates", "refined") if key in mixture.config}
    else:
        search = CADSTrainer(
            model=task.model(), args=config, sources=task.sources, eval_dataset=task.validation,
            data_collator=task.collator,
        )
        search.train()
        mixture = search.mixture()
        surrogate_cost = search.surrogate.cost if search.surrogate is not None else 0.0
        trajectory = [
            {k.split("/")[-1]: v for k, v in entry.items() if k.startswith("selection/ratio/")} | {"step": entry["step"]}
            for entry in search.state.log_history
            if "selection/objective" in entry
        ]
    search_s = watch()
    watch = Stopwatch()
    final = train_on_mixture(
        task.model(), task.sources, mixture.ratios, ComputeBudget(budget), plain_training_args(config),
        data_collator=task.collator,
    )
    final_s = watch()
    return {
        "ratios": mixture.ratios,
        "test": task.score(final.model, task.test),
        "val": task.score(final.model, task.validation),
        "search_s": search_s,
        "final_s": final_s,
        "surrogate_cost": surrogate_cost,
        "trajectory": trajectory,
        **proxies,
    }


def read_cache(cache: str) -> dict:
    """{job (tuple): result} of the JSON-lines run cache `cache` (empty when the file does not exist)."""
    done = {}
    if os.path.isfile(cache):
        with open(cache) as f:
            for line in f:
                record = json.loads(line)
                done[tuple(record["job"])] = record["result"]
    return done


def append_to_cache(out, job, result) -> None:
    """Append one finished run to an open JSON-lines run cache, flushed so an interrupted benchmark keeps it."""
    out.write(json.dumps({"job": list(job), "result": result}) + "\n")
    out.flush()


def run_cache_path(name: str, cache: str | None = None) -> str:
    """The JSON-lines run cache of benchmark `name`: `cache` where given, else results/<name>.runs.jsonl."""
    return cache or os.path.join(RESULTS_DIR, f"{name}.runs.jsonl")


def run_cached(jobs: list, run, workers: int, cache: str, report=None, run_missing: bool = True) -> dict:
    """{job: result} for the jobs finished, running the missing ones in parallel processes (`run_missing=False` only
    reads). Each result is appended to the JSON-lines file `cache` as it completes and jobs found there are not run
    again, so an interrupted benchmark resumes where it stopped. `report(job, result)` is called as each finishes."""
    done = read_cache(cache)
    todo = [job for job in jobs if tuple(job) not in done] if run_missing else []
    if todo:
        os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
        with ProcessPoolExecutor(max_workers=workers) as pool, open(cache, "a") as out:
            futures = {pool.submit(run, job): job for job in todo}
            for future in as_completed(futures):
                job, result = futures[future], future.result()
                done[tuple(job)] = result
                append_to_cache(out, job, result)
                if report is not None:
                    report(job, result)
    return {tuple(job): done[tuple(job)] for job in jobs if tuple(job) in done}


def run_jobs(
    jobs, run, workers: int, name: str, cache: str | None = None, run_missing: bool = True
) -> tuple[dict, dict, list]:
    """Run ("fixed", mixture key, None, seed) and ("cads", variant, budget, seed) jobs with `run_cached`, seed by seed
    (so an interrupted run leaves whole seeds to report), cached in `cache` (default results/<name>.runs.jsonl).

    One thread per run: on a small CPU, parallel single-threaded runs beat threaded ones. Returns the fixed results
    as {key: {seed: result}}, the CADS results as {variant: {str(budget): {seed: result}}}, and the seeds whose jobs
    are all done."""
    # Seed by seed; within a seed the longest jobs first (CADS at the largest budget: a search and a final run), so
    # that the shorter ones fill in around them and the pool finishes sooner.
    jobs = sorted(jobs, key=lambda job: (job[3], job[0] != "cads", -(job[2] or 0)))
    cache = run_cache_path(name, cache)
    done = run_cached(jobs, run, workers, cache, lambda job, _: print(f"done {job}", flush=True), run_missing)
    complete = [seed for seed in sorted({job[3] for job in jobs})
                if all(tuple(job) in done for job in jobs if job[3] == seed)]
    fixed, cads = {}, {}
    for kind, key, budget, seed in jobs:
        result = done.get((kind, key, budget, seed))
        if result is None or seed not in complete:
            continue
        if kind == "fixed":
            fixed.setdefault(key, {})[seed] = result
        else:
            cads.setdefault(key, {}).setdefault(str(budget), {})[seed] = result
    return fixed, cads, complete
