"""Writes the README's results section from the JSON files in benchmarks/results/ (nothing else).

    python benchmarks/report.py            # rewrite the section between the markers in README.md
"""

from __future__ import annotations

import json
import os

from common import REPO_ROOT, RESULTS_DIR

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
DEFAULT = "horizon_k64_tail"  # the benchmark variant that matches CADSConfig's defaults


def load(name: str) -> dict | None:
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    return json.load(open(path)) if os.path.isfile(path) else None


def cell(stat: dict | None, scale: float, digits: int) -> str:
    if stat is None:
        return "–"
    if stat["n"] == 1:
        return f"{stat['mean'] * scale:.{digits}f} (n=1)"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def mixture_table(results: dict, scale: float, digits: int, unit: str) -> list[str]:
    rows = results["rows"]
    variants = sorted({k for r in rows for k in r if k.startswith("cads_")})
    columns = ["best_source", "full", "uniform", "oracle", *variants]
    labels = {"best_source": "Best-source", "full": "Full-dataset", "uniform": "Uniform (0.5)", "oracle": "Oracle"}
    lines = [
        f"| budget ({unit}) | epochs of union | "
        + " | ".join(labels.get(c, c.replace("cads_", "CADS-S ")) for c in columns)
        + " |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for row in rows:
        cells = [cell(row.get(c), scale, digits) for c in columns]
        lines.append(f"| {row['budget']} | {row['epochs']:.2f} | " + " | ".join(cells) + " |")
    return lines


def variant_lines(results: dict) -> list[str]:
    """What each CADS-S column ran with (its CADSConfig overrides)."""
    return [
        f"- `{name}`: " + ", ".join(f"{key}={value!r}" for key, value in overrides.items())
        for name, overrides in results.get("variants", {}).items()
    ]


def verdict_lines(results: dict, variant: str, scale: float, unit: str, lower_is_better: bool) -> list[str]:
    """Where the default variant stands against the oracle and the baselines, budget by budget (issue goal: within 1
    point of the oracle, never worse than the worse of best-source and full data)."""
    sign = -1 if lower_is_better else 1
    lines = []
    for row in results["rows"]:
        if variant not in row:
            continue
        ours, oracle = row[variant]["mean"] * scale, row["oracle"]["mean"] * scale
        floor = min(sign * row["best_source"]["mean"], sign * row["full"]["mean"]) * sign * scale
        best = max(sign * row["best_source"]["mean"], sign * row["full"]["mean"]) * sign * scale
        gap = sign * (ours - oracle)
        lines.append(
            f"- budget {row['budget']} ({row['epochs']:.2f} epochs): {variant[5:]} {ours:.2f} {unit} against the "
            f"oracle's {oracle:.2f} ({'+' if gap >= 0 else ''}{gap:.2f}); the worse of best-source and full data is "
            f"{floor:.2f}, which it {'loses to' if sign * (ours - floor) < 0 else 'matches or beats'}; the better "
            f"is {best:.2f}, which it {'loses to' if sign * (ours - best) < 0 else 'matches or beats'}; selection "
            f"cost {row[variant]['selection_cost_over_final']:.1f}x the final run's wall time."
        )
    return lines


def ratio_table(results: dict) -> list[str]:
    rows = results["rows"]
    names = list(results["sources"])
    variants = sorted({k for r in rows for k in r if k.startswith("cads_")})
    lines = ["| budget | variant | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for row in rows:
        for variant in variants:
            if variant in row:
                ratios = row[variant]["ratios"]
                lines.append(
                    f"| {row['budget']} | {variant[5:]} | "
                    + " | ".join(f"{ratios[n]['mean']:.2f} ± {ratios[n]['std']:.2f}" for n in names)
                    + " |"
                )
        chosen = row["oracle"]["chosen"]
        lines.append(f"| {row['budget']} | oracle picks | " + " | ".join(
            "/".join(f"{json.loads(c)[j]:g}" for c in chosen) for j in range(len(names))) + " |")
    return lines


def speed_lines(results: dict) -> list[str]:
    lines = [
        f"A search step against a plain `Trainer` step on the same model and batch ({results['device']}; GPT-2 from a "
        f"config, batch {results['batch']} x {results['sequence_length']} tokens, validation batch "
        f"{results['selection_eval_batch_size']}; plain step {results['plain_step_s'] * 1000:.0f} ms): the median over "
        f"{results['rounds']} interleaved rounds of each run's median step time (after {results['warmup']} warm-up "
        "steps) divided by the plain run's of the same round.",
        "",
        "| reward | K | step / plain step |",
        "|---|---|---|",
    ]
    lines += [f"| {r['reward']} | {r['K']} | {r['ratio_to_plain']:.2f} |" for r in results["rows"]]
    lines += ["", "Peak memory of training (above the resident size before training), over plain `Trainer`'s:", "",
              "| configuration | peak MB | ratio |", "|---|---|---|",
              f"| plain | {results['peak_memory_mb']['plain']:.0f} | 1.00 |"]
    lines += [f"| {c} | {results['peak_memory_mb'][c]:.0f} | {ratio:.2f} |" for c, ratio in results["peak_memory_ratio"].items()]
    return lines


def section() -> str:
    parts = []
    scarce = load("noisy_sources_scarce")
    if scarce:
        parts += [
            "### noisy_sources, scarce clean data (`benchmarks/noisy_sources.py --design scarce`)",
            "",
            f"Test accuracy (%) on {scarce['data']}, mean ± std over seeds {scarce['seeds']}: a clean source of 300 "
            "images and four of 2,000 at 20/40/60/80% label noise; small CNN, Adam 1e-3 constant, batch 128.",
            "",
            *mixture_table(scarce, 100, 1, "samples"),
            "",
            "CADS-S columns (their CADSConfig settings; the other selection settings at the defaults of the Configuration table):",
            "",
            *variant_lines(scarce),
            "",
            f"The default (`{DEFAULT}`) against the goals:",
            "",
            *verdict_lines(scarce, "cads_" + DEFAULT, 100, "%", lower_is_better=False),
            "",
            "Learned ratios (mean ± std over seeds) and the oracle's pick per seed:",
            "",
            *ratio_table(scarce),
            "",
            "![ratios against budget](benchmarks/results/noisy_sources_scarce.png)",
            "",
        ]
    paper = load("noisy_sources_paper")
    if paper:
        parts += ["### noisy_sources, the paper's split", "", *mixture_table(paper, 100, 1, "samples"), ""]
    instruct = load("instruct_mix") or load("instruct_mix_quick")
    if instruct:
        parts += [
            "### instruct_mix (`benchmarks/instruct_mix.py" + (" --quick`: one seed, two budgets" if instruct["quick"] else "`") + ")",
            "",
            f"{instruct['target']} (lower is better); {instruct['model']}; seeds {instruct['seeds']}.",
            "",
            *mixture_table(instruct, 1, 2, "samples"),
            "",
            *variant_lines(instruct),
            "",
            *verdict_lines(instruct, "cads_" + DEFAULT, 1, "perplexity", lower_is_better=True),
            "",
            *ratio_table(instruct),
            "",
        ]
    speed = load("speed")
    if speed:
        parts += ["### speed (`benchmarks/speed.py`)", "", *speed_lines(speed), ""]
    return "\n".join(parts) if parts else "No benchmark results yet: run the scripts in `benchmarks/`."


def main():
    readme = os.path.join(REPO_ROOT, "README.md")
    text = open(readme).read()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    with open(readme, "w") as f:
        f.write(text[:start] + "\n" + section() + "\n" + text[end:])
    print("README results section rewritten")


if __name__ == "__main__":
    main()
