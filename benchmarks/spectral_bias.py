"""spectral_bias: low- against high-frequency training data as compute grows (paper §3 / §B.1 / Fig. 1).

Data (x in [-5, 5] by default, `--domain`), noise sigma = 0.1 on every training target:
  low frequency  (group A)  x drawn uniformly from the points where sin(pi x) = 0 (the integers of the domain) and,
                            as §B.1 writes it, y = x + N(0, sigma^2) (the linear trend only; §3's formula would give
                            y = 1 rather than 0 at x = 0, the one integer where the sinc term is not 0).
  high frequency (group B)  x ~ U(domain), y = x + sin(pi x) / (pi x) + N(0, sigma^2)  (the fraction is 1 at x = 0).
  validation                10,000 points x ~ U(domain) of the full function, without noise (so an MSE of 0 is
                            reachable; noisy targets would add sigma^2 = 0.01 to both curves and move no crossing).
50,000 training samples per group (`--samples`; quick: 10,000).

Rules (§B.1): an MLP 1-100-100-1 with ReLU (three linear layers), PyTorch default init, Adam at 3e-4, batch 1000,
160 steps (`--steps`), batches read from a fresh shuffle of the group every pass, the validation MSE measured before
training and after every update. Both groups train from the same initial weights in a seed (only the data differs).
Compute is samples processed (step x batch). Per seed and on the mean curve the script reports the crossing: the
first compute at which the high-frequency model's validation MSE is below the low-frequency one's and stays below
until the end (null where it never does), and the compute range where the low-frequency model leads. Seeds 0, 1, 2;
mean and sample std over seeds.

    python benchmarks/spectral_bias.py --quick     # 10,000 samples per group, 3 seeds (seconds)
    python benchmarks/spectral_bias.py             # 50,000 samples per group, 3 seeds (under a minute)
    python benchmarks/spectral_bias.py --steps 2000  # the same runs continued well past the paper's 160 steps
"""

from __future__ import annotations

import argparse
import functools
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from common import Stopwatch, mean_std, write_results
from torch import nn

SIGMA = 0.1
BATCH = 1000
LEARNING_RATE = 3e-4


def target(x: np.ndarray) -> np.ndarray:
    """x + sin(pi x) / (pi x), with the fraction equal to 1 at x = 0 (np.sinc is exactly this)."""
    return x + np.sinc(x)


def make_data(samples: int, validation: int, domain: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    zeros = np.arange(-np.floor(domain), np.floor(domain) + 1)  # sin(pi x) = 0 at the integers
    x_low = rng.choice(zeros, size=samples)
    x_high = rng.uniform(-domain, domain, size=samples)
    x_val = rng.uniform(-domain, domain, size=validation)
    return {
        "low": (x_low, x_low + rng.normal(0.0, SIGMA, samples)),
        "high": (x_high, target(x_high) + rng.normal(0.0, SIGMA, samples)),
        "validation": (x_val, target(x_val)),
    }


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 1))


def as_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32).view(-1, 1)


def train_curve(x: np.ndarray, y: np.ndarray, validation, steps: int, seed: int) -> list[float]:
    """Validation MSE before training and after each of `steps` Adam updates."""
    torch.manual_seed(seed)
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    x, y = as_tensor(x), as_tensor(y)
    x_val, y_val = as_tensor(validation[0]), as_tensor(validation[1])
    generator = torch.Generator().manual_seed(seed + 1)
    order, position = torch.randperm(len(x), generator=generator), 0

    def validation_mse() -> float:
        with torch.no_grad():
            return float(((model(x_val) - y_val) ** 2).mean())

    curve = [validation_mse()]
    for _ in range(steps):
        if position + BATCH > len(x):  # a fresh shuffle for every pass; no partial batch
            order, position = torch.randperm(len(x), generator=generator), 0
        batch = order[position : position + BATCH]
        position += BATCH
        loss = ((model(x[batch]) - y[batch]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(validation_mse())
    return curve


def crossing(low: list[float], high: list[float]) -> int | None:
    """First index from which high < low holds at every later index; None where high ends above or level."""
    below = np.asarray(high) < np.asarray(low)
    if not below[-1]:
        return None
    above = np.flatnonzero(~below)
    return int(above[-1] + 1) if len(above) else 0


def low_leads(low: list[float], high: list[float]) -> list[int]:
    """Indices (after the first update) at which the low-frequency model's MSE is the lower one."""
    return [int(i) for i in np.flatnonzero(np.asarray(low) < np.asarray(high)) if i > 0]


def run_seed(samples: int, validation: int, domain: float, steps: int, threads: int, seed: int) -> dict:
    torch.set_num_threads(threads)
    watch = Stopwatch()
    data = make_data(samples, validation, domain, seed)
    curves = {group: train_curve(*data[group], data["validation"], steps, seed) for group in ("low", "high")}
    cross = crossing(curves["low"], curves["high"])
    return {
        "curves": curves,
        "crossing_step": cross,
        "crossing_compute": None if cross is None else cross * BATCH,
        "low_leads_steps": low_leads(curves["low"], curves["high"]),
        "wall_s": watch(),
    }


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compute = np.asarray(results["compute"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for ax, log in zip(axes[:2], (False, True)):
        for group, label, color in (("low", "low frequency (A)", "tab:blue"), ("high", "high frequency (B)", "tab:red")):
            mean, std = np.asarray(results["mean_curves"][group]), np.asarray(results["std_curves"][group])
            ax.plot(compute, mean, color=color, label=label)
            if log:  # a mean - std band reaches below 0 early on: show each seed instead
                for run in results["runs"].values():
                    ax.plot(compute, run["curves"][group], color=color, alpha=0.3, lw=0.8)
            else:
                ax.fill_between(compute, mean - std, mean + std, color=color, alpha=0.2)
        if results["mean_crossing_compute"] is not None:
            ax.axvline(results["mean_crossing_compute"], color="gray", ls="--", label="crossing (mean curves)")
        ax.set(xlabel="compute (samples processed)", ylabel="validation MSE")
        if log:
            ax.set(yscale="log", title="log scale (thin: each seed)")
        else:
            ax.set(ylim=(0, min(float(np.max(results["mean_curves"]["low"][5:] + results["mean_curves"]["high"][5:])), 2)),
                   title=f"spectral bias, x in [-{results['domain']:g}, {results['domain']:g}], {len(results['seeds'])} seeds")
    mean, std = np.asarray(results["mean_difference"]), np.asarray(results["std_difference"])
    axes[2].plot(compute, mean, color="k")
    axes[2].fill_between(compute, mean - std, mean + std, color="k", alpha=0.15)
    axes[2].axhline(0, color="gray", lw=0.8)
    axes[2].set(xlabel="compute (samples processed)", ylabel="MSE(high) - MSE(low), same seed",
                title="paired difference (< 0: high frequency better)", xscale="log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=None, help="Training samples per group (50,000; quick 10,000).")
    parser.add_argument("--validation", type=int, default=10_000)
    parser.add_argument("--domain", type=float, default=5.0, help="x in [-domain, domain].")
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per run.")
    parser.add_argument("--workers", type=int, default=1, help="Seeds in parallel processes.")
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    samples = options.samples or (10_000 if options.quick else 50_000)
    seeds = list(range(options.seeds))
    watch = Stopwatch()
    run = functools.partial(run_seed, samples, options.validation, options.domain, options.steps, options.threads)
    if options.workers > 1:
        with ProcessPoolExecutor(max_workers=options.workers) as pool:
            runs = dict(zip(seeds, pool.map(run, seeds)))
    else:
        runs = {seed: run(seed) for seed in seeds}

    compute = [step * BATCH for step in range(options.steps + 1)]
    stacked = {g: np.array([runs[s]["curves"][g] for s in seeds]) for g in ("low", "high")}
    mean_curves = {g: stacked[g].mean(0).tolist() for g in stacked}
    std_curves = {g: (stacked[g].std(0, ddof=1) if len(seeds) > 1 else np.zeros_like(stacked[g][0])).tolist() for g in stacked}
    mean_cross = crossing(mean_curves["low"], mean_curves["high"])
    lead = low_leads(mean_curves["low"], mean_curves["high"])
    crossings = [runs[s]["crossing_compute"] for s in seeds]
    checkpoints = sorted({1, 5, 10, 20, 40, 80, options.steps} & set(range(1, options.steps + 1)))
    table = [
        {
            "step": t,
            "compute": t * BATCH,
            "low": mean_std(stacked["low"][:, t]),
            "high": mean_std(stacked["high"][:, t]),
            "high_minus_low": mean_std(stacked["high"][:, t] - stacked["low"][:, t]),
        }
        for t in checkpoints
    ]
    results = {
        "quick": options.quick,
        "seeds": seeds,
        "domain": options.domain,
        "samples_per_group": samples,
        "validation_points": options.validation,
        "sigma": SIGMA,
        "batch": BATCH,
        "learning_rate": LEARNING_RATE,
        "steps": options.steps,
        "compute": compute,
        "mean_curves": mean_curves,
        "mean_difference": (stacked["high"] - stacked["low"]).mean(0).tolist(),
        "std_difference": ((stacked["high"] - stacked["low"]).std(0, ddof=1) if len(seeds) > 1 else np.zeros(len(compute))).tolist(),
        "std_curves": std_curves,
        "mean_crossing_step": mean_cross,
        "mean_crossing_compute": None if mean_cross is None else mean_cross * BATCH,
        "crossing_compute_per_seed": crossings,
        "crossing_compute": mean_std([c for c in crossings if c is not None]) if any(c is not None for c in crossings) else None,
        "seeds_without_crossing": sum(c is None for c in crossings),
        "low_leads_compute_range": [lead[0] * BATCH, lead[-1] * BATCH] if lead else None,
        "low_leads_updates": len(lead),
        "table": table,
        "runs": runs,
        "wall_s": watch(),
    }
    for row in table:
        print(f"compute {row['compute']:>7}: low {row['low']['mean']:.4f} ± {row['low']['std']:.4f}   "
              f"high {row['high']['mean']:.4f} ± {row['high']['std']:.4f}   "
              f"high - low (paired) {row['high_minus_low']['mean']:+.4f} ± {row['high_minus_low']['std']:.4f}")
    print(f"crossing per seed (samples processed): {crossings}; on the mean curves: {results['mean_crossing_compute']}")
    print(f"low frequency leads at {len(lead)} of {options.steps} updates"
          + (f", between {lead[0] * BATCH} and {lead[-1] * BATCH} samples" if lead else ""))
    suffix = "_quick" if options.quick else ""
    path = write_results(f"spectral_bias{suffix}", results, options.output)
    plot(results, os.path.splitext(path)[0] + ".png")
    print("wrote", path, f"({watch():.0f} s)")


if __name__ == "__main__":
    main()
