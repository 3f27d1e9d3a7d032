"""Writes the README's results section from the JSON files in benchmarks/results/ (nothing else).

    python benchmarks/report.py            # rewrite the section between the markers in README.md
"""

from __future__ import annotations

import json
import os
import statistics

from common import DEFAULT_VARIANT as DEFAULT
from common import REPO_ROOT, RESULTS_DIR, cads_columns

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


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
    variants = cads_columns(rows)
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
        # Compared as printed (2 decimals): a final run on a mixture and the fixed run of it differ past them.
        gap = round(sign * (ours - oracle), 2) + 0.0  # + 0.0: no "-0.00"

        def verdict(bar: float) -> str:
            return "loses to" if round(sign * (ours - bar), 2) < 0 else "matches or beats"

        lines.append(
            f"- budget {row['budget']} ({row['epochs']:.2f} epochs): {variant[5:]} {ours:.2f} {unit} against the "
            f"oracle's {oracle:.2f} ({'+' if gap >= 0 else ''}{gap:.2f}"
            + (f", {100 * gap / oracle:+.1f}%" if lower_is_better else "")
            + f"); the worse of best-source and full data is "
            f"{floor:.2f}, which it {verdict(floor)}; the better is {best:.2f}, which it {verdict(best)}; selection "
            f"cost {row[variant]['selection_cost_over_final']:.1f}x the final run's wall time."
        )
    return lines


def proxy_verdicts(results: dict, scale: float, unit: str, lower_is_better: bool) -> list[str]:
    """verdict_lines for every select_by_proxies variant of the results."""
    lines = []
    for variant in results["variants"]:
        if variant.startswith("proxy"):
            lines += verdict_lines(results, "cads_" + variant, scale, unit, lower_is_better)
    return lines


def proxy_tables(results: dict, scale: float, digits: int, unit: str, lower_is_better: bool) -> list[str]:
    """A select_by_proxies result's mixture table, cost table and verdicts, each followed by a blank line."""
    return [
        *mixture_table(results, scale, digits, "samples"), "",
        *cost_table(results), "",
        *proxy_verdicts(results, scale, unit, lower_is_better=lower_is_better), "",
    ]


def rerun_command(script: str, flag: str, results: dict, stem: str, budgets: bool = False, workers: int | None = None) -> str:
    """The command (as code) that writes benchmarks/results/<stem>.json: `script` with the results' variants (under
    `flag`, --rewards or --variants), seeds and, with `budgets`, its budgets; `workers` where not the default."""
    chosen = f" --budgets {' '.join(str(row['budget']) for row in results['rows'])}" if budgets else ""
    parallel = f" --workers {workers}" if workers is not None else ""
    return (f"`benchmarks/{script}.py {flag} {' '.join(results['variants'])}{chosen} --seeds {len(results['seeds'])} "
            f"--output benchmarks/results/{stem}.json{parallel}`")


def cost_table(results: dict) -> list[str]:
    """Each variant's selection cost (surrogate + search wall time over the final run's), per budget."""
    variants = cads_columns(results["rows"])
    lines = ["| budget | " + " | ".join(v[5:] for v in variants) + " |", "|" + "---|" * (len(variants) + 1)]
    for row in results["rows"]:
        lines.append(f"| {row['budget']} | " + " | ".join(
            f"{row[v]['selection_cost_over_final']:.1f}x" if v in row else "–" for v in variants) + " |")
    return lines


def crossover_lines(results: dict) -> list[str]:
    """Per budget, which of best-source and full data wins and what the oracle picks (lower is better)."""
    lines = []
    for row in results["rows"]:
        best, full = row["best_source"]["mean"], row["full"]["mean"]
        picks = sorted(set(row["oracle"]["chosen"]))
        lines.append(f"- budget {row['budget']} ({row['epochs']:.2f} epochs of the union): "
                     f"{'best-source' if best < full else 'full data'} wins (best-source {best:.2f}, full data "
                     f"{full:.2f}); the oracle picks {', '.join(picks)}.")
    return lines


def ratio_table(results: dict) -> list[str]:
    rows = results["rows"]
    names = list(results["sources"])
    variants = cads_columns(rows)
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
        f"{results['rounds']} interleaved rounds of each run's typical step time (after {results['warmup']} warm-up "
        "steps; the median step, or with a measure interval n the median over windows of n steps of their mean) "
        "divided by the plain run's median step of the same round.",
        "",
        "| reward | K | measure interval | alignment probe | dropout | step / plain step |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['reward']} | {r['K']} | {r.get('measure_interval', 1)} | "
              f"{r.get('alignment_probe', 'central') if r['reward'] != 'penalty' else '-'} | {r.get('dropout', 0.1):g} | "
              f"{r['ratio_to_plain']:.2f} |" for r in results["rows"]]
    lines += ["", "Peak memory of training (above the resident size before training; median over the rounds), over plain `Trainer`'s:", "",
              "| configuration | peak MB | ratio |", "|---|---|---|",
              f"| plain | {results['peak_memory_mb']['plain']:.0f} | 1.00 |"]
    lines += [f"| {c} | {results['peak_memory_mb'][c]:.0f} | {ratio:.2f} |" for c, ratio in results["peak_memory_ratio"].items()]
    if "end_to_end" in results:
        e2e = results["end_to_end"]
        lines += ["", f"End to end, for a budget of {e2e['budget_steps']} batches: CADS-S with the defaults (a search as "
                  "long as the budget, then a fresh model on the learned mixture) took "
                  f"{e2e['ratio_to_plain']:.2f}x one plain `Trainer` run (median of "
                  + ", ".join(f"{r:.2f}" for r in e2e["per_round"]) + ")."]
    lines += ["", "Against the performance goals:", "", *speed_goal_lines(results)]
    if "cads_e_against_bilevel" in results:
        bilevel = results["cads_e_against_bilevel"]
        lines += ["", f"CADS-E (paper's penalty reward: surrogate at 4 sizes + search) against Bilevel-CADS "
                  f"(M = {bilevel['outer_steps']} outer steps of K = {bilevel['k']} inner runs; one outer step measured, "
                  "times M, since every outer step costs the same K x C):", "",
                  "| budget (samples) | CADS-E s | Bilevel outer step s | Bilevel-CADS s | speedup |", "|---|---|---|---|---|"]
        lines += [f"| {r['budget_samples']} | {r['cads_e_s']:.1f} | {r['bilevel_outer_step_s']:.1f} | {r['bilevel_s']:.0f} | "
                  f"{r['speedup']:.1f}x |" for r in bilevel["rows"]]
    return lines


def speed_goal_lines(results: dict) -> list[str]:
    """Each performance goal of the benchmarks issue, met or not, from the measured ratios."""

    def verdict(ratio: float, goal: float, at_most: bool = True) -> str:
        met = ratio <= goal if at_most else ratio >= goal
        return f"{ratio:.2f}x ({'meets' if met else 'misses'} the goal of {'<=' if at_most else '>='} {goal}x)"

    lines = []
    for row in results["rows"]:
        if row["reward"] != "penalty" and row["K"] == max(r["K"] for r in results["rows"]):
            lines.append(f"- search step, `{row['reward']}`, K = {row['K']}, measure interval "
                         f"{row.get('measure_interval', 1)}, {row.get('alignment_probe', 'central')} probe, dropout "
                         f"{row.get('dropout', 0.1):g}: {verdict(row['ratio_to_plain'], 2.0)}")
    steps = [r["ratio_to_plain"] for r in results["rows"]
             if r.get("measure_interval", 1) == 1 and r["reward"] != "penalty" and r.get("dropout", 0.1) > 0]
    lines.append(f"- flat in K: every-step rewards from {min(steps):.2f}x to {max(steps):.2f}x over K = "
                 + ", ".join(str(k) for k in sorted({r["K"] for r in results["rows"]})))
    if "end_to_end" in results:
        lines.append(f"- end to end with the defaults: {verdict(results['end_to_end']['ratio_to_plain'], 3.0)}")
    if "end_to_end_measure_interval_2" in results:
        ratio = results["end_to_end_measure_interval_2"]["ratio_to_plain"]
        lines.append(f"- end to end with `selection_measure_interval=2`: {verdict(ratio, 3.0)}")
    lines += [f"- peak memory, `{c}`: {verdict(ratio, 1.2)}" for c, ratio in results["peak_memory_ratio"].items()]
    if "cads_e_against_bilevel" in results:
        largest = max(results["cads_e_against_bilevel"]["rows"], key=lambda r: r["budget_samples"])
        lines.append(f"- Bilevel-CADS over CADS-E at the largest budget ({largest['budget_samples']} samples): "
                     + verdict(largest["speedup"], 20.0, at_most=False))
    return lines


def latest(name: str) -> tuple[str, dict | None]:
    """The full run's results where they exist, else the quick run's: (file stem, results)."""
    return next(((stem, r) for stem in (name, f"{name}_quick") if (r := load(stem))), (name, None))


def heading(name: str, results: dict, quick_note: str) -> str:
    mode = f" --quick`: {quick_note}" if results["quick"] else "`"
    return f"### {name} (`benchmarks/{name}.py{mode})"


def figure(stem: str, caption: str) -> list[str]:
    return [f"![{caption}](benchmarks/results/{stem}.png)", ""] if os.path.isfile(
        os.path.join(RESULTS_DIR, f"{stem}.png")) else []


def spectral_lines(results: dict) -> list[str]:
    table = results["table"]
    picks = sorted({round(i * (len(table) - 1) / 5) for i in range(6)}) if len(table) > 6 else range(len(table))
    lines = [
        (f"Validation MSE on the full function (noise-free, {results['validation_points']} points) of an MLP trained "
         f"on low- or high-frequency data ({results['samples_per_group']} samples per group, "
         f"sigma {results['sigma']}), "
         f"mean ± std over seeds {results['seeds']}; compute = samples processed (batch {results['batch']}); "
         "high − low is paired within a seed (both groups start from the same weights)."),
        "",
        "| compute (samples) | low frequency | high frequency | high − low |",
        "|---|---|---|---|",
    ]
    lines += [f"| {table[i]['compute']} | {cell(table[i]['low'], 1, 4)} | {cell(table[i]['high'], 1, 4)} | "
              f"{cell(table[i]['high_minus_low'], 1, 4)} |" for i in picks]
    cross, lead, seeds = results["crossing_compute"], results["low_leads_compute_range"], len(results["seeds"])
    lines += ["", (
        "The high-frequency curve drops below the low-frequency one for good at "
        + (f"{cell(cross, 1, 0)} samples over {cross['n']} seeds" if cross else "no point")
        + f" ({results['seeds_without_crossing']} of {seeds} without a crossing); the low-frequency model leads at "
        f"{results['low_leads_updates']} of {results['steps']} updates on the mean curves"
        + (f" (between {lead[0]} and {lead[1]} samples)." if lead else
           ", so the early low-frequency advantage of the paper's Fig. 1 does not appear here.")
    )]
    return lines


def surrogate_table(results: dict) -> list[str]:
    paper = results["paper_table_8"]
    lines = [
        (f"Held-out MSE (x 10⁻³) of `LossSurrogate` fitted on K of {len(results['sizes'])} measured subset sizes "
         f"({results['spacing']} spacing, {results['data']}, pool {results['pool']}, budget {results['budget']} "
         f"sample usages, seeds {results['seeds']}): K sizes spread evenly (mean ± std over seeds) and "
         f"{results['random_choices']} random choices per seed (median, q25–q75); the paper's Table 8 is CIFAR-10 / "
         "ResNet-18, so only its trend in K compares."),
        "",
        "| kind | K | held-out sizes | even | random median | random q25–q75 | paper Table 8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["table"]:
        rand, k = row["random"]["mse"], str(row["K"])
        lines.append(
            f"| {row['kind']} | {k} | {row['held_out_sizes_even']} | {cell(row['even']['mse'], 1e3, 2)} | "
            f"{rand['median'] * 1e3:.2f} | {rand['q25'] * 1e3:.2f}–{rand['q75'] * 1e3:.2f} | "
            + (f"{paper[k] * 1e3:.2f} |" if k in paper else "– |")
        )
    return lines


def sweep_lines(results: dict) -> list[str]:
    lines = [
        (f"Surrogates for budgets {results['budgets']} samples (about {results['epochs']} epochs of a "
         f"{results['pool']}-image {results['data']} pool, whole batches of {results['batch']}), collected once per "
         f"budget and by one sweep (`CADSTrainer.collect_surrogate_sweep`: the largest budget's runs, read at each "
         f"smaller budget's last step), seeds {results['seeds']}:"),
        "",
        f"- compute saved by the sweep: {cell(results['compute_saving'], 1, 2)}x (sample usages plus the examples read "
        f"to measure the losses; {results['ideal_saving']:.2f}x if measuring were free)",
        f"- wall time saved: {cell(results['wall_saving'], 1, 2)}x",
        "- largest difference between the sweep's measured points and the separate collections', per budget: "
        + ", ".join(f"{b}: {results['max_relative_difference'][b]:.1e} relative, "
                    f"{results['max_absolute_difference'][b]:.1e} absolute" for b in results["max_relative_difference"]),
    ]
    return lines


def subset_table(results: dict) -> list[str]:
    labels = {"random": "Random", "pbcs": "PBCS", "cads_e": "CADS-E", "bilevel": "Bilevel-CADS"}
    config = results["config"]
    lines = [
        (f"Test accuracy (%) on {results['data']} ({results['pool']}-image pool, {results['validation']} validation, "
         f"{results['test']} test), mean ± std over seeds {results['seeds']}; rows are initial fraction @ budget C. "
         f"Bilevel-CADS and PBCS ran {config['outer_steps']} outer steps with K = {config['k']} (a few steps of the "
         f"exact method, not converged); CADS-E K = {config['cads_e_k']}, {config['cads_e_reward']} reward. Wall "
         "times are per run (search + final training; CADS-E's without the surrogate it shares across fractions)."),
        "",
        "| fraction@C | " + " | ".join(labels.values()) + " | Random at CADS-E's size | CADS-E size | wall s ("
        + " / ".join(labels.values()) + ") | Bilevel-CADS / CADS-E wall-time ratio |",
        "|" + "---|" * (len(labels) + 5),
    ]
    for key, row in results["rows"].items():
        walls = " / ".join(f"{row[m]['wall_s']:.0f}" if m in row else "–" for m in labels)
        both = "bilevel" in row and "cads_e" in row
        ratio = f"{row['bilevel']['wall_s'] / row['cads_e']['wall_s']:.2f}" if both else "–"
        size = row.get("cads_e", {}).get("subset_size")
        same_size = row.get("random_at_cads_e_size", {}).get("test")
        lines.append(f"| {key} | " + " | ".join(cell(row.get(m, {}).get("test"), 100, 2) for m in labels)
                     + f" | {cell(same_size, 100, 2)} | {cell(size, 1, 0)} | {walls} | {ratio} |")
    compared = [(key, row["cads_e"]["test"]["mean"] - row["random_at_cads_e_size"]["test"]["mean"])
                for key, row in results["rows"].items() if "cads_e" in row and "random_at_cads_e_size" in row]
    if compared:
        lines += ["", "CADS-E against a random subset of the size it chose (same budget), difference in points: "
                  + ", ".join(f"{key} {100 * d:+.2f}" for key, d in compared)
                  + f"; better at {sum(d > 0 for _, d in compared)} of {len(compared)} settings."]
    paper = results["paper"]
    table_1 = next(k for k in paper if k.startswith("table_1"))
    lines += ["", "The paper's numbers for comparison (test accuracy %, " + " / ".join(labels.values()) + "):", ""]
    lines += [f"- Table 1, C = {table_1.rsplit('_', 1)[1]}, initial fractions 0.2 / 0.4 / 0.6 / 0.8: "
              + "; ".join(f"{labels[m]} " + " / ".join(f"{v:.2f}" for v in paper[table_1][m]) for m in labels)]
    lines += ["- Table 9, initial fraction 0.2, C = " + " / ".join(str(b) for b in paper["table_9_budgets"]) + ": "
              + "; ".join(f"{labels[m]} " + " / ".join(f"{v:.2f}" for v in paper["table_9"][m]) for m in labels)]
    return lines


def criteria_table(criteria: dict, calibrated: dict | None) -> list[str]:
    """Per budget, the mixture each validation criterion picks per seed and its test accuracy, beside the default
    search's (and the calibrated search's) test accuracy on the same seeds."""
    labels = {"accuracy": "accuracy", "cross_entropy": "cross-entropy", "calibrated_cross_entropy": "calibrated CE"}
    searches = {}
    if calibrated and calibrated["seeds"] == criteria["seeds"]:
        searches = {row["budget"]: row for row in calibrated["rows"]}
    columns = [c for c in ("cads_" + DEFAULT, "cads_horizon_k64_tail_calibrated")
               if any(c in row for row in searches.values())]
    lines = ["| budget (epochs) | " + " | ".join(f"picked by {label}" for label in labels.values())
             + "".join(f" | CADS-S {c[5:]}" for c in columns) + " |", "|" + "---|" * (len(labels) + len(columns) + 1)]
    for row in criteria["rows"]:
        cells = []
        for criterion in labels:
            pick = row["picks"][criterion]
            chosen = " / ".join(",".join(f"{x:g}" for x in json.loads(c)) for c in pick["chosen"])
            cells.append(f"{cell(pick['test_accuracy'], 100, 1)} ({chosen})")
        cells += [cell(searches.get(row["budget"], {}).get(c), 100, 1) for c in columns]
        lines.append(f"| {row['epochs']:g} | " + " | ".join(cells) + " |")
    return lines


def proxy_table(proxy: dict, searched: dict | None, scale: float, digits: int) -> list[str]:
    """Per budget, the test score of the mixture each proxy selector picks (full-size run of that mixture), beside
    the oracle's pick and the default search on the same seeds; one row per selector. With one seed, each cell names
    the mixture picked."""
    search = {row["budget"]: row.get("cads_" + DEFAULT) for row in searched["rows"]} if searched else {}
    same_seeds = bool(searched) and searched["seeds"] == proxy["seeds"]
    rows = proxy["rows"]
    unit = "ep" if proxy["task"] == "scarce" else "samples"

    def pick(stat: dict, agrees: str) -> str:
        if stat["n"] > 1:
            return f"{cell(stat, scale, digits)}{agrees}"
        ratios = ",".join(f"{x:g}" for x in json.loads(stat["chosen"][0]))
        return f"{stat['mean'] * scale:.{digits}f} ({ratios})"

    lines = ["| selector | samples over a final run | " + " | ".join(f"{row['label']:g} {unit}" for row in rows) + " |",
             "|" + "---|" * (len(rows) + 2)]
    for label in proxy["selectors"]:
        picks = [row["selectors"][label] for row in rows]
        lines.append(f"| {label} | {picks[0]['samples_over_final']:g}x | " + " | ".join(
            pick(p, f" ({p['agrees_with_oracle']}/{p['n']} as the oracle)") for p in picks) + " |")
    lines.append("| oracle (full-size runs) | | " + " | ".join(pick(row["oracle"], "") for row in rows) + " |")
    if same_seeds:
        lines.append(f"| CADS-S {DEFAULT} | | "
                     + " | ".join(cell(search.get(row["budget"]), scale, digits) for row in rows) + " |")
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
            *figure("noisy_sources_scarce_trajectories", "the default's ratios during the search, per budget"),
        ]
    five = load("noisy_sources_scarce_5seeds")
    if five:
        parts += [
            f"With seeds {five['seeds']} (the same fixed-mixture runs, more seeds; "
            f"{rerun_command('noisy_sources', '--rewards', five, 'noisy_sources_scarce_5seeds')}):",
            "",
            *mixture_table(five, 100, 1, "samples"),
            "",
            *verdict_lines(five, "cads_" + DEFAULT, 100, "%", lower_is_better=False),
            "",
            "Selection cost (surrogate + search, wall time over the final run's; median over seeds, two runs at a time "
            "on 2 cores):",
            "",
            *cost_table(five),
            "",
        ]
    calibrated = load("noisy_sources_scarce_calibrated")
    if calibrated:
        parts += [
            "The default against the same search minimizing the temperature-calibrated validation loss "
            f"(`validation_calibration=\"temperature\"`), seeds {calibrated['seeds']} "
            f"({rerun_command('noisy_sources', '--rewards', calibrated, 'noisy_sources_scarce_calibrated')}):",
            "",
            *mixture_table(calibrated, 100, 1, "samples"),
            "",
            *ratio_table(calibrated),
            "",
        ]
    by_proxies = load("noisy_sources_scarce_proxy")
    if by_proxies:
        parts += [
            "The default against `select_by_proxies` (README, \"Which reward\": `proxy` picks among the unions of "
            "the k most valuable sources, `proxy_grid` among the ten fixed mixtures the benchmark trains: its grid and "
            "each source alone), seeds "
            f"{by_proxies['seeds']} "
            f"({rerun_command('noisy_sources', '--rewards', by_proxies, 'noisy_sources_scarce_proxy')}); "
            "its selection cost is the proxies' wall time over the final run's:",
            "",
            *mixture_table(by_proxies, 100, 1, "samples"),
            "",
            *proxy_verdicts(by_proxies, 100, "%", lower_is_better=False),
            "",
            *ratio_table(by_proxies),
            "",
        ]
    by_proxies_five = load("noisy_sources_scarce_proxy_5seeds")
    if by_proxies_five:
        parts += [
            f"The default against `select_by_proxies`'s own candidates with seeds {by_proxies_five['seeds']} "
            f"({rerun_command('noisy_sources', '--rewards', by_proxies_five, 'noisy_sources_scarce_proxy_5seeds')}):",
            "",
            *mixture_table(by_proxies_five, 100, 1, "samples"),
            "",
            *proxy_verdicts(by_proxies_five, 100, "%", lower_is_better=False),
            "",
        ]
    smaller = load("noisy_sources_scarce_proxy_small")
    if smaller:
        parts += [
            "Smaller proxies: `proxy_small` cuts every source to 5% and 20% and `proxy_10_20` to 10% and 20% (1.25 "
            "and 1.5 final runs' samples for five candidates) instead of the default 10% and 25% (`proxy`, 1.75), "
            f"seeds {smaller['seeds']} "
            f"({rerun_command('noisy_sources', '--rewards', smaller, 'noisy_sources_scarce_proxy_small')}); selection "
            "cost is the proxies' wall time over the final run's (median over seeds, two runs at a time on 2 cores):",
            "",
            *proxy_tables(smaller, 100, 1, "%", lower_is_better=False),
            *ratio_table(smaller),
            "",
        ]
    for stem, epochs, spoken, how in (
        ("noisy_sources_scarce_proxy_quiet", "1 4", "1 and 4", "with the current code (batched reads), one run at a time"),
        ("noisy_sources_scarce_proxy_cached", "1 4 16", "1, 4 and 16",
         "with the proxies reading each row once (`proxy_cache_rows=True`, and the benchmark's validation accuracy "
         "reading its rows once), one run at a time beside one text benchmark run on the other core"),
    ):
        timed = load(stem)
        if timed:
            parts += [
                f"The default's cost timed again {how}, seeds {timed['seeds']}, at {spoken} epochs "
                f"(`benchmarks/noisy_sources.py --rewards proxy --seeds {len(timed['seeds'])} --epochs {epochs} "
                f"--workers 1 --cache benchmarks/results/{timed['runs']} --output benchmarks/results/{stem}.json`; the "
                "cache held the fixed-mixture runs, copied from noisy_sources_scarce.runs.jsonl, whose `proxy` runs "
                "carry the older timings):",
                "",
                *proxy_tables(timed, 100, 1, "%", lower_is_better=False),
            ]
    stem = "noisy_sources_scarce_proxy_refined"
    refined = load(stem)
    if refined:
        variant = "cads_proxy_refined"
        parts += [
            "The library's default for five sources (`proxy_refined`): `proxy` with each source's value measured on "
            "256 examples instead of 512, and where the two best candidates' extrapolated errors are within 10%, both "
            "train a 50% proxy and the power law through all three fractions decides between them. Seeds "
            f"{refined['seeds']}, one run at a time with the other core idle (`benchmarks/noisy_sources.py "
            f"--rewards proxy_refined --seeds {len(refined['seeds'])} --epochs 1 4 16 --workers 1 "
            f"--cache benchmarks/results/{refined['runs']} --output benchmarks/results/{stem}.json`; the cache held "
            "the fixed-mixture runs, copied from noisy_sources_scarce.runs.jsonl). The runs refined, with each contender's error from two fractions and "
            "from three, and the cost per seed:",
            "",
            *(f"- budget {row['budget']}, seed {seed}: " + "; ".join(
                f"{name} {error['two_point']:.3f} -> {error['all_fractions']:.3f}" for name, error in errors.items())
              for row in refined["rows"] for seed, errors in row[variant]["refined"].items()),
            *(f"- budget {row['budget']}: cost per seed "
              + " / ".join(f"{c:.2f}x" for c in row[variant]["selection_cost_per_seed"]) for row in refined["rows"]),
            "",
            *proxy_tables(refined, 100, 1, "%", lower_is_better=False),
            *ratio_table(refined),
            "",
            *figure(stem, "the default's ratios against the budget, beside the oracle's best fixed mixture"),
        ]
    noise = load("proxy_noise")
    if noise:
        rules = {"end": "end point (the selection's)", "tail_mean": "tail mean", "tail_fit": "line fitted to the tail"}
        parts += [
            f"How much of a {noise['epochs']:g}-epoch proxy's error is chance (`python benchmarks/proxy_noise.py`): "
            f"the `proxy` selection rerun on another machine than the `proxy` rows above, seeds "
            f"{[s['seed'] for s in noise['seeds']]}, each proxy "
            f"also scored at {noise['tail_points']} evenly spaced steps over the last quarter of its run. The pick of "
            "each way of reading a proxy's error, scored with the fixed-mixture run of that mixture (test accuracy, %):",
            "",
            "| seed | " + " | ".join(rules.values()) + " | oracle |",
            "|---|" + "---|" * (len(rules) + 1),
            *(f"| {s['seed']} | " + " | ".join(
                f"{s[rule + '_pick']['candidate']}: {100 * s[rule + '_pick']['test']:.1f}" for rule in rules)
              + f" | {100 * s['oracle_test']:.1f} |" for s in noise["seeds"]),
            "| mean | " + " | ".join(f"{100 * noise['mean_test'][rule + '_pick']:.1f}" for rule in rules)
            + f" | {100 * noise['mean_test']['oracle']:.1f} |",
            "",
        ]
    examples = load("source_values_scarce_examples")
    if examples:
        counts = [str(n) for n in examples["examples"]]
        budgets = sorted({int(name.split("budget ")[1]) for name in examples["cells"]})
        parts += [
            "How many examples the source value needs (`benchmarks/source_values.py --task scarce --examples "
            f"{' '.join(counts)}`): on the union's larger proxy of every cell of the `proxy` variant, the cosine from "
            "the first n fresh examples of each source and n validation images. Cells (of "
            f"{examples['total'] // len(budgets)} seeds) where it puts the five sources in their noise order, and the "
            "median seconds of the value's gradient pass:",
            "",
            "| budget | " + " | ".join(f"n = {n}" for n in counts) + " |",
            "|---|" + "---|" * len(counts),
            *(f"| {budget} | " + " | ".join(
                f"{sum(c['same_order'][n] for c in cells)} of {len(cells)}, "
                f"{statistics.median(c['by_examples'][n]['seconds'] for c in cells):.1f} s" for n in counts) + " |"
              for budget in budgets
              for cells in [[c for name, c in examples["cells"].items() if name.endswith(f"budget {budget}")]]),
            "",
        ]
    orders = {task: load(f"source_values_{task}") for task in ("scarce", "instruct", "recipe")}
    if any(orders.values()):
        parts += [
            "Which order the proxies' source value gives (`benchmarks/source_values.py --task scarce|instruct|recipe`):"
            " the cosine of the validation gradient and a source's mean gradient (the library's value) against their "
            "inner product (its earlier one), on the union's largest proxy of every cell of the `proxy` variant (the "
            "recipe: its embedded default with the recipe's proxies and with the library's):",
            "",
            "| task | cells with the same order | where the orders differ: inner product / cosine |",
            "|---|---|---|",
            *(f"| {task} | {results['same_order']} of {results['total']} | " + "; ".join(
                f"{name}: {' > '.join(c['orders']['inner_product'])} / {' > '.join(c['orders']['cosine'])}"
                for name, c in results["cells"].items() if not c["same_order"]) + " |"
              for task, results in orders.items() if results),
            "",
        ]
    criteria = load("validation_criteria")
    if criteria:
        parts += [
            "Which fixed mixture each validation criterion picks (`benchmarks/validation_criteria.py`; the scarce "
            f"grid plus clean + half of the 20% source, seeds {criteria['seeds']}): the test accuracy of each pick, "
            "the picks per seed (ratios of the 0/20/40/60/80% sources), and the searches' test accuracy on the same "
            "seeds:",
            "",
            *criteria_table(criteria, calibrated),
            "",
        ]
    proxy = load("proxy_mixtures")
    if proxy:
        parts += [
            "Whether scaled-down runs pick the mixture for the budget (`benchmarks/proxy_mixtures.py`, seeds "
            f"{proxy['seeds']}): every source cut to a fraction f, each mixture of the grid trained for f x the budget "
            "(same epochs; with the batch cut too, the same steps) and the best taken on validation accuracy, or on "
            "validation accuracy extrapolated to full size from two fractions (error as a power law in f); test "
            "accuracy of that mixture's full-size run, how often it is the oracle's pick, and the proxies' cost in "
            "samples over one final run:",
            "",
            *proxy_table(proxy, scarce, 100, 1),
            "",
        ]
    paper = load("noisy_sources_paper")
    if paper:
        parts += [
            "### noisy_sources, the paper's split (`benchmarks/noisy_sources.py --design paper`)",
            "",
            f"Test accuracy (%) on {paper['data']}, mean ± std over seeds {paper['seeds']}: five sources of 1,700 images "
            "at 0/22.5/45/67.5/90% label noise; the clean source alone is hard to beat here (kept for fidelity).",
            "",
            *mixture_table(paper, 100, 1, "samples"),
            "",
            *variant_lines(paper),
            "",
            *verdict_lines(paper, "cads_" + DEFAULT, 100, "%", lower_is_better=False),
            "",
            *ratio_table(paper),
            "",
            *figure("noisy_sources_paper", "ratios against budget, paper's split"),
            *figure("noisy_sources_paper_trajectories", "the default's ratios during the search, paper's split"),
        ]
    instruct_stem, instruct = latest("instruct_mix")
    if instruct:
        parts += [
            "### instruct_mix (`benchmarks/instruct_mix.py"
            + (f" --quick`: {len(instruct['seeds'])} seed(s), two budgets" if instruct["quick"] else "`") + ")",
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
            *figure(f"{instruct_stem}_trajectories", "the default's ratios during the search, per budget"),
        ]
    full = load("instruct_mix_full_default")
    if full:
        parts += [
            f"At the full mode's budgets, seeds {full['seeds']} "
            f"({rerun_command('instruct_mix', '--variants', full, 'instruct_mix_full_default')}; the full mode's other "
            "variants have not been run): "
            "does the "
            "oracle cross over from best-source to full data as the budget grows, and does the default follow?",
            "",
            *mixture_table(full, 1, 2, "samples"),
            "",
            *crossover_lines(full),
            "",
            *verdict_lines(full, "cads_" + DEFAULT, 1, "perplexity", lower_is_better=True),
            "",
            *ratio_table(full),
            "",
            *figure("instruct_mix_full_default", "learned ratios against the budget beside the oracle's mixture"),
            *figure("instruct_mix_full_default_trajectories", "the default's ratios during the search, per budget"),
        ]
    text_proxies = load("instruct_mix_full_proxy")
    if text_proxies:
        parts += [
            f"`select_by_proxies` at the same budgets, seeds {text_proxies['seeds']} "
            f"({rerun_command('instruct_mix', '--variants', text_proxies, 'instruct_mix_full_proxy')}; `proxy` picks between the source of higher value per "
            "example alone and both, `proxy_grid` among the grid's seven mixtures):",
            "",
            *mixture_table(text_proxies, 1, 2, "samples"),
            "",
            *proxy_verdicts(text_proxies, 1, "perplexity", lower_is_better=True),
            "",
        ]
    text_proxies_seeds = load("instruct_mix_full_proxy_3seeds")
    if text_proxies_seeds:
        parts += [
            f"The default and `select_by_proxies`'s own candidates on seeds {text_proxies_seeds['seeds']} "
            f"({rerun_command('instruct_mix', '--variants', text_proxies_seeds, 'instruct_mix_full_proxy_3seeds')}):",
            "",
            *mixture_table(text_proxies_seeds, 1, 2, "samples"),
            "",
            *proxy_verdicts(text_proxies_seeds, 1, "perplexity", lower_is_better=True),
            "",
        ]
    stem = "instruct_mix_full_proxy_sizes"
    text_sizes = load(stem)
    if text_sizes:
        parts += [
            "Larger proxies on text: `proxy_25_50` cuts every source to 25% and 50% (1.5 final runs' samples for "
            f"two candidates) instead of 10% and 25% (`proxy`, 0.7), seeds {text_sizes['seeds']} "
            f"({rerun_command('instruct_mix', '--variants', text_sizes, stem, budgets=True)}); selection cost is "
            "the proxies' wall time over the final run's (median over seeds, two runs at a time on 2 cores):",
            "",
            *proxy_tables(text_sizes, 1, 2, "perplexity", lower_is_better=True),
        ]
    stems = ("instruct_mix_2000_subsets", "instruct_mix_5000_subsets", "instruct_mix_10000_subsets")
    subsets = {stem: load(stem) for stem in stems}
    if any(subsets.values()):
        parts += [
            "Every subset as a candidate, the library's default for two sources: `proxy_25_50_subsets` tries the three "
            "subsets of the two sources (GPT-4, Alpaca, both) at 25% and 50% (2.25 final runs' samples), so that the "
            "value's order cannot leave GPT-4 alone untried. Selection cost is the proxies' wall time over the final "
            "run's (median over seeds).",
            "",
        ]
    for (stem, results), workers in zip(subsets.items(), (1, 2, 2)):
        if results:
            parts += [
                f"At {results['rows'][0]['budget']:,} samples, seeds {results['seeds']}, "
                f"{'one run' if workers == 1 else 'two runs'} at a time "
                f"({rerun_command('instruct_mix', '--variants', results, stem, budgets=True, workers=workers)}):",
                "",
                *proxy_tables(results, 1, 2, "perplexity", lower_is_better=True),
            ]
    stem = "instruct_mix_20000_subsets_replay"
    replay = load(stem)
    if replay:
        matched = [*replay["errors_match_where_both_ran"].values(), *replay["replayed_errors_match_where_both_ran"].values()]
        parts += [
            f"At {replay['budget']:,} samples, seeds {replay['seeds']}, replayed from the nested `proxy_25_50` runs "
            f"(`benchmarks/subsets_replay.py --budget {replay['budget']} --seeds {len(replay['seeds'])}`): only the "
            "candidate the nested runs did not try is trained, and the pick is scored with the cached fixed-mixture "
            "run. A candidate's extrapolated error does not depend on the other candidates; in the "
            f"{len(matched)} budget-seed cells where two runs share a candidate it is the same to the last digit "
            f"({'in all' if all(matched) else 'NOT in all'}). The cost is the nested run's proxies plus the "
            "added candidate's, over the nested run's final run, from runs made at different times: an estimate.",
            "",
            *proxy_tables(replay, 1, 2, "perplexity", lower_is_better=True),
        ]
    text_grid = load("proxy_mixtures_instruct")
    if text_grid:
        parts += [
            "Whether proxies could choose among fractional mixtures too (`benchmarks/proxy_mixtures.py --task "
            f"instruct`, seeds {text_grid['seeds']}): the grid's seven mixtures (ratios of GPT-4 and Alpaca) trained "
            "on proxies, ranked by validation loss (extrapolated to full size from two fractions where there are "
            "two), and scored by the test perplexity of the same mixture's full-size run:",
            "",
            *proxy_table(text_grid, full, 1, 0),
            "",
        ]
    stem, spectral = latest("spectral_bias")
    if spectral:
        parts += [heading("spectral_bias", spectral, "fewer samples per group"), "", *spectral_lines(spectral), "",
                  *figure(stem, "validation MSE against compute, low- and high-frequency data")]
    stem, points = latest("surrogate_points")
    if points:
        parts += [heading("surrogate_points", points, "one seed, smaller pool and budget"), "",
                  *surrogate_table(points), "", *figure(stem, "surrogate held-out MSE against K")]
    _, sweep = latest("surrogate_sweep")
    if sweep:
        parts += [heading("surrogate_sweep", sweep, "one seed, two budgets"), "", *sweep_lines(sweep), ""]
    stem, subset = latest("mnist_subset")
    if subset:
        parts += [heading("mnist_subset", subset, "one seed, two fractions, one budget"), "", *subset_table(subset), "",
                  *figure(stem, "subset size during the search and test accuracy")]
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
