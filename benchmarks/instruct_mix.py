"""instruct_mix: instruction tuning on Alpaca-GPT4 (999) + Alpaca text-davinci-003 (5,000) (paper §5.3 / Table 4).

Both files come from ../shared/data (or $CADS_SHARED_DATA); the benchmark exits, saying so, where they are absent.
What differs from the paper, and why (2 CPU cores): a small GPT-2 built from a config (2 layers, 128 wide) instead
of pretrained GPT-2, and a byte-level BPE tokenizer of 4,096 tokens trained on the two sources instead of GPT-2's
50,257 (whose output layer would dominate the cost); examples over 256 tokens are discarded. The target is
Alpaca-GPT4: validation and test are its held-out 5% splits, and the metric is test perplexity (lower is better).

Rows per budget (sample usages): Best-source, Full-dataset, Uniform (ratio 0.5), Oracle (best of a grid of fixed
mixtures on validation) and CADS-S variants; AdamW at a constant learning rate, every run spends its whole budget,
fixed mixtures scored at every budget on the way (see noisy_sources.py for why that is exact).

    python benchmarks/instruct_mix.py --quick   # 1 seed, budgets 1,000 / 2,000, 4 fixed mixtures, the default (~5.5 min)
    python benchmarks/instruct_mix.py --quick --seeds 3   # the same design with 3 seeds (~11 min)
    python benchmarks/instruct_mix.py           # 3 seeds, budgets 2,000-20,000, 7 fixed mixtures, 4 variants (hours)
"""

from __future__ import annotations

import argparse
import functools
import math
import os

import torch
import transformers
from common import (
    DEFAULT_VARIANT,
    VARIANTS,
    Task,
    cads_run,
    fixed_mixture_run,
    plot,
    plot_trajectories,
    run_cache_path,
    run_jobs,
    shared_data,
    summarize,
    write_results,
)

from cads_hf.losses import dataset_loss
from cads_hf.text import (
    InstructionCollator,
    add_chat_special_tokens,
    build_offline_tokenizer,
    load_instruction_records,
    make_small_gpt2,
    split_dataset,
    tokenize_instruction_dataset,
)

transformers.logging.set_verbosity_error()

FILES = {
    "alpaca_gpt4": ("instruct", "alpaca_gpt4_en", "alpaca_en_demo.json"),
    "alpaca": ("instruct", "alpaca_davinci003", "alpaca_5000.json"),
}
GRID = [[1, 0], [0, 1], [1, 0.1], [1, 0.25], [1, 0.5], [1, 1], [0.5, 0.5]]
QUICK_GRID = [[1, 0], [0, 1], [1, 0.25], [1, 1]]  # each source alone, full data and the in-between mixture
QUICK_BUDGETS = [1000, 2000]
BUDGETS = [2000, 5000, 10000, 20000]
BATCH = 16
LEARNING_RATE = 1e-3
MAX_LENGTH = 256


@functools.lru_cache(maxsize=1)
def prepared():
    """Tokenized sources and the target's validation/test splits (the same for every seed and job)."""
    raw = {name: load_instruction_records(shared_data(*parts)) for name, parts in FILES.items()}
    texts = (f"{r['instruction']} {r['input']} {r['output']}" for ds in raw.values() for r in ds)
    tokenizer = build_offline_tokenizer(texts, vocab_size=4096)
    add_chat_special_tokens(tokenizer)
    splits = {
        name: split_dataset(tokenize_instruction_dataset(ds, tokenizer, MAX_LENGTH, name=name)[0], seed=0)
        for name, ds in raw.items()
    }
    return tokenizer, splits


def make_task(seed: int) -> Task:
    tokenizer, splits = prepared()
    collator = InstructionCollator(tokenizer.pad_token_id)

    def model():
        return make_small_gpt2(len(tokenizer), n_layer=2, n_embd=128, n_head=4, n_positions=MAX_LENGTH, seed=seed)

    def perplexity(model, dataset):
        return math.exp(dataset_loss(model, dataset, collator, 64, "cpu")[0])

    return Task(
        sources={name: split["train"] for name, split in splits.items()},
        validation=splits["alpaca_gpt4"]["validation"],
        test=splits["alpaca_gpt4"]["test"],
        model=model,
        collator=collator,
        score=perplexity,
        args=lambda output_dir, **extra: {
            **dict(
                output_dir=output_dir, per_device_train_batch_size=BATCH, learning_rate=LEARNING_RATE,
                lr_scheduler_type="constant", weight_decay=0.0, report_to="none", save_strategy="no",
                logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=seed, log_level="error",
            ),
            **extra,
        },
        batch_size=BATCH,
    )


def run_job(mixtures, budgets, search_fraction, work, job):
    torch.set_num_threads(1)
    kind, key, budget, seed = job
    task = make_task(seed)
    if kind == "fixed":
        return fixed_mixture_run(task, mixtures[key], budgets, f"{work}/fixed-{seed}")
    return cads_run(task, budget, VARIANTS[key], search_fraction, f"{work}/cads-{key}-{budget}-{seed}",
                    list(mixtures.values()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None, help="Seeds 0..n-1 (default 3; --quick: 1).")
    parser.add_argument("--budgets", type=int, nargs="+", default=BUDGETS)
    parser.add_argument("--variants", nargs="*", default=None, choices=sorted(VARIANTS),
                        help=f"CADS-S variants (default: validation_mean, horizon_mean, {DEFAULT_VARIANT}, penalty; "
                             "--quick: the default only; none: the fixed mixtures alone).")
    parser.add_argument("--penalty_max_budget", type=int, default=5000)
    parser.add_argument("--search_fraction", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default=None)
    parser.add_argument("--cache", default=None, help="JSON-lines file of finished runs (resumes from it).")
    parser.add_argument("--report_only", action="store_true", help="Summarize the seeds already finished; run nothing.")
    options = parser.parse_args()
    if not all(shared_data(*parts) for parts in FILES.values()):
        print("instruct_mix: the Alpaca files are not in ../shared/data (or $CADS_SHARED_DATA); nothing to run.")
        return
    if options.variants is None:
        options.variants = [DEFAULT_VARIANT] if options.quick else ["validation_mean", "horizon_mean", DEFAULT_VARIANT, "penalty"]
    seeds = list(range(options.seeds or (1 if options.quick else 3)))
    budgets = QUICK_BUDGETS if options.quick else options.budgets
    _, splits = prepared()
    names = list(FILES)
    mixtures = {str([float(x) for x in r]): [float(x) for x in r] for r in (QUICK_GRID if options.quick else GRID)}
    jobs = [("fixed", key, None, seed) for key in mixtures for seed in seeds]
    jobs += [
        ("cads", variant, budget, seed)
        for variant in options.variants
        for budget in budgets
        if not (VARIANTS[variant].get("reward") == "penalty" and budget > options.penalty_max_budget)
        for seed in seeds
    ]
    run = functools.partial(run_job, mixtures, budgets, options.search_fraction, "/tmp/cads_bench/instruct_mix")
    name = "instruct_mix" + ("_quick" if options.quick else "")
    fixed, cads, seeds = run_jobs(jobs, run, options.workers, name, options.cache, run_missing=not options.report_only)
    if not seeds:
        print("no seed has finished all its runs yet")
        return
    union = sum(len(split["train"]) for split in splits.values())
    rows = summarize(
        fixed, cads, budgets, seeds, names, list(mixtures), [str([1.0, 0.0]), str([0.0, 1.0])], union,
        lower_is_better=True,
    )
    results = {
        "sources": {name: len(split["train"]) for name, split in splits.items()},
        "target": "alpaca_gpt4 test perplexity", "seeds": seeds, "quick": options.quick,
        "variants": {variant: VARIANTS[variant] for variant in options.variants},
        "model": "GPT-2 from config: 2 layers, 128 wide, 4 heads; BPE tokenizer of 4096 trained on the sources",
        "search_fraction": options.search_fraction, "rows": rows,
        "runs": os.path.basename(run_cache_path(name, options.cache)),
    }
    path = write_results(name, results, options.output)
    plot(rows, names, path.replace(".json", ".png"), "test perplexity")
    plot_trajectories(cads, DEFAULT_VARIANT, names, path.replace(".json", "_trajectories.png"), union)
    print("wrote", path)


if __name__ == "__main__":
    main()
