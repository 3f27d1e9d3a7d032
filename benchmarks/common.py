"""Shared pieces of the benchmarks: data paths, runs that record every budget on the way, result files."""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np
from transformers import TrainerCallback

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data(*parts: str) -> str | None:
    """A file under ../shared/data (or $CADS_SHARED_DATA), or None where it is absent."""
    root = os.environ.get("CADS_SHARED_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
    path = os.path.join(root, *parts)
    return path if os.path.exists(path) else None


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
