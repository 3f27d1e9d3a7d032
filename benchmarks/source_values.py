"""source_values: does the proxies' source value order the sources by quality? The cosine against the inner product.

`select_by_proxies` orders its nested candidates by each source's value on the model of the union's largest proxy.
The value was the inner product <g_val, g_j> of the validation gradient with the mean gradient of fresh examples of
source j; it is now their cosine, because the inner product grows with the size of g_j, and garbage (wrong labels,
random answers) has high loss and large gradients. This script trains the union's largest proxy of each benchmark
cell exactly as a proxy variant (`proxy` unless `--variant` names another) does (same data, seed, fractions and
budget) and reports both values and the order each gives:

    python benchmarks/source_values.py --task scarce    # noisy_sources' scarce-clean design, seeds 0-4 (~5 min)
    python benchmarks/source_values.py --task instruct  # instruct_mix's full budgets, seeds 0-2 (~15 min)
    python benchmarks/source_values.py --task instruct --variant proxy_25_50 --output \
        benchmarks/results/source_values_instruct_25_50.json   # the same with proxies at 25% and 50% (~30 min)
    python benchmarks/source_values.py --task recipe    # recipes/alpaca_mix.py's embedded default (~2 min)

The recipe task runs twice: with the recipe's default proxies (25% and 50%) and with the library's for its three
sources (10% and 25%).

With `--examples`, each cell instead measures the cosine on the first N fresh examples of each source and N of
validation, for each N given, with the time of that gradient pass: how few examples order the sources
(`proxy_value_examples`; on the noisy sources, whether the order is the noise order):

    python benchmarks/source_values.py --task scarce --examples 64 128 256 512 \
        --output benchmarks/results/source_values_scarce_examples.json   # ~8 min

Where the two orders agree, the variant's nested candidates, and so its pick, are the same under either value
(the runs are deterministic on one machine; at 16 epochs on images, proxies of mixtures with noisy sources were not
reproduced on another machine); the cells where they differ are the ones to rerun.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time

import torch
from common import REPO_ROOT, VARIANTS, quiet, write_results

import cads_hf.proxy_selection as proxy_selection
from cads_hf import CADSConfig, select_by_proxies
from cads_hf.proxy_selection import cosine, default_proxy_fractions, inner_product, source_gradients

LIBRARY_SOURCE_VALUES = proxy_selection.source_values  # main() replaces the module's with a stand-in


class UnionProxyReached(Exception):
    """Raised in place of the source values: the rest of the selection is not needed here."""


def both_values(trainer, sources, examples, eval_dataset, per_example, max_validation):
    """`proxy_selection.source_values`' arguments in; both values per source out (by raising UnionProxyReached)."""
    validation, gradients = source_gradients(trainer, sources, examples, eval_dataset, per_example, max_validation)
    raise UnionProxyReached({
        name: {"inner_product": inner_product(validation, g), "norm": math.sqrt(inner_product(g, g)),
               "cosine": cosine(validation, g)}
        for name, g in gradients.items()
    })


def cosines_by_examples(counts):
    """A stand-in for `proxy_selection.source_values` that measures the cosine on the first n examples (of each source
    and of validation) for each n of `counts`, with each gradient pass's time (by raising UnionProxyReached)."""

    def measure(trainer, sources, examples, eval_dataset, per_example, max_validation):
        by_count = {}
        for n in counts:
            start = time.perf_counter()
            values = LIBRARY_SOURCE_VALUES(trainer, sources, [e[:n] for e in examples], eval_dataset, per_example, n)
            by_count[n] = {"seconds": time.perf_counter() - start, "cosine": values,
                           "order": sorted(values, key=values.get, reverse=True)}
        raise UnionProxyReached(by_count)

    return measure


def union_proxy_values(select):
    """What the stand-in for `source_values` raised on reaching it; `select()` calls select_by_proxies."""
    try:
        quiet(select)()
    except UnionProxyReached as reached:
        return reached.args[0]
    raise RuntimeError("select_by_proxies measured no source value (not the nested candidates?)")


def cell(select) -> dict:
    """Both values and orders for one cell; `select()` calls select_by_proxies."""
    values = union_proxy_values(select)
    orders = {kind: sorted(values, key=lambda name: -values[name][kind]) for kind in ("inner_product", "cosine")}
    return {"values": values, "orders": orders, "same_order": orders["inner_product"] == orders["cosine"]}


def benchmark_config(task, budget: int, output_dir: str, variant: str) -> CADSConfig:
    """A proxy variant's configuration, as benchmarks/common.cads_run builds it."""
    settings = {k: v for k, v in VARIANTS[variant].items() if k != "selection"}
    return CADSConfig(**{**task.args(output_dir, max_steps=10), "compute_budget": budget,
                         "selection_eval_batch_size": task.batch_size, **settings})


def examples_cell(select, quality_order: list[str] | None) -> dict:
    """The cosine's order and time for each number of examples, and whether each order is the sources' order by
    quality where it is known (the noisy sources, by noise), else the order from the most examples."""
    by_count = union_proxy_values(select)
    reference = quality_order or by_count[max(by_count)]["order"]
    return {"by_examples": by_count, "reference": reference,
            "same_order": {n: c["order"] == reference for n, c in by_count.items()}}


def benchmark_cells(task_name: str, seeds: int, variant: str, examples: list[int] | None = None) -> dict:
    if task_name == "scarce":
        import noisy_sources as module

        design = module.DESIGNS["scarce"]
        budgets = [sum(design["sizes"]) * epochs for epochs in design["epochs"]]
        make_task = lambda seed: module.make_task(design, seed)  # noqa: E731
    else:
        import instruct_mix as module

        budgets, make_task = module.BUDGETS, module.make_task
    cells = {}
    for seed in range(seeds):
        task = make_task(seed)
        for budget in budgets:
            config = benchmark_config(task, budget, f"/tmp/cads_bench/source_values/{task_name}", variant)
            if examples:
                config.proxy_value_examples = max(examples)
            key = f"seed {seed}, budget {budget}"
            select = lambda: select_by_proxies(  # noqa: E731
                task.model, task.sources, task.validation, config, task.validation_error, data_collator=task.collator)
            # The noisy sources are built in order of noise: their order by quality.
            cells[key] = examples_cell(select, list(task.sources) if task_name == "scarce" else None) if examples \
                else cell(select)
            print(f"{key}:", {n: c["order"] for n, c in cells[key]["by_examples"].items()} if examples
                  else cells[key]["orders"], flush=True)
    return cells


def recipe_cells() -> dict:
    """The recipe's embedded default, set up as `recipes/alpaca_mix.py` with no arguments sets it up, under the
    recipe's proxy fractions and the library's."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "recipes"))
    import alpaca_mix
    from transformers import set_seed

    from cads_hf.text import InstructionCollator

    recipe, config = alpaca_mix.parse_arguments(["--output_dir", "/tmp/cads_bench/source_values/recipe"])
    set_seed(config.seed)
    tokenizer, model, splits, validation = alpaca_mix.setup(recipe)
    fractions = [config.proxy_fractions, default_proxy_fractions(len(splits))]
    train = {name: split["train"] for name, split in splits.items()}
    config.compute_budget = 2 * sum(len(dataset) for dataset in train.values())
    initial = copy.deepcopy(model.state_dict())

    def initial_model():
        fresh = copy.deepcopy(model)
        fresh.load_state_dict(initial)
        return fresh

    collator = InstructionCollator(tokenizer.pad_token_id)
    cells = {}
    for proxy_fractions in fractions:
        config.proxy_fractions = list(proxy_fractions)
        name = "embedded default, proxies at " + " and ".join(f"{f:.0%}" for f in proxy_fractions)
        cells[name] = {"proxy_fractions": list(proxy_fractions), **cell(lambda: select_by_proxies(
            initial_model, train, validation, config, data_collator=collator, processing_class=tokenizer))}
        print(name, cells[name]["orders"], flush=True)
    return cells


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["scarce", "instruct", "recipe"], default="scarce")
    parser.add_argument("--seeds", type=int, default=None, help="Seeds 0..n-1 (default: scarce 5, instruct 3).")
    parser.add_argument("--variant", default="proxy", choices=[name for name, settings in VARIANTS.items()
                                                       if settings.get("selection") == "proxies"
                                                       and "candidates" not in settings
                                                       and settings["proxy_candidates"] == "nested"],
                        help="The proxy variant whose union proxy is trained (scarce and instruct).")
    parser.add_argument("--examples", type=int, nargs="+", default=None,
                        help="Measure the cosine's order on the first N examples for each N (scarce and instruct).")
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    if options.examples and options.task == "recipe":
        parser.error("--examples is for --task scarce or instruct")
    torch.set_num_threads(1)  # as the benchmarks' runs: the values depend on the arithmetic's order
    proxy_selection.source_values = cosines_by_examples(options.examples) if options.examples else both_values
    if options.task == "recipe":
        cells = recipe_cells()
    else:
        cells = benchmark_cells(options.task, options.seeds or (5 if options.task == "scarce" else 3), options.variant,
                                options.examples)
    variant = {} if options.task == "recipe" else {"variant": VARIANTS[options.variant]}  # the recipe's cells name theirs
    if options.examples:
        summary = {"examples": options.examples,
                   "same_order": {n: sum(c["same_order"][n] for c in cells.values()) for n in options.examples}}
    else:
        summary = {"same_order": sum(c["same_order"] for c in cells.values())}
    results = {"task": options.task, **variant, "cells": cells, **summary, "total": len(cells)}
    print("wrote", write_results(f"source_values_{options.task}", results, options.output))


if __name__ == "__main__":
    main()
