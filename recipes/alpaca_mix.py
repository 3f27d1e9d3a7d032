"""Instruction tuning on a learned mixture of sources (CADS-S).

Features:
  - named instruction sources (Alpaca-style JSON, JSONL, folders or Hub dataset ids), serialized with role tokens,
    prompts masked, 90/5/5 train/validation/test split per source;
  - the mixture for the compute budget chosen by proxy runs (`select_by_proxies`, the better selector in the
    benchmarks) or learned by a CADS-S search (`--selection search`), then a fresh model trained on it for exactly
    that budget, compared with the uniform mixture (all data) and the best single source at the same budget;
  - validation and per-source test perplexity; the learned mixture saved (and pushed to the Hub with a card);
  - one process or many, CPU or CUDA: `accelerate launch` picks the setup.

With no arguments it runs offline on an embedded default: three generated sources of clearly different quality
(clean, half-wrong, random answers), a tokenizer trained on them and a small GPT-2 built from a config.

    accelerate launch recipes/alpaca_mix.py
    accelerate launch recipes/alpaca_mix.py \\
        --source gpt4=../shared/data/instruct/alpaca_gpt4_en/alpaca_en_demo.json \\
        --source alpaca=../shared/data/instruct/alpaca_davinci003/alpaca_5000.json \\
        --model_name_or_path gpt2 --compute_budget 20000 --output_dir outputs/alpaca_mix
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        recipes/alpaca_mix.py        # two CPU processes (gloo)
"""

from __future__ import annotations

import copy
import gc
import json
import math
import os
import sys
from dataclasses import dataclass, field

import torch
import transformers
from accelerate import PartialState
from datasets import concatenate_datasets
from transformers import AutoModelForCausalLM

from cads_hf import CADSConfig, CADSTrainer, ComputeBudget, select_by_proxies, train_on_mixture
from cads_hf.hub import require_hub
from cads_hf.losses import dataset_loss
from cads_hf.recipe_arguments import parse_with_defaults
from cads_hf.text import (
    InstructionCollator,
    add_chat_special_tokens,
    build_offline_tokenizer,
    load_instruction_sources,
    load_tokenizer,
    make_generated_sources,
    make_small_gpt2,
    split_dataset,
    tokenize_instruction_dataset,
)

DEFAULT_OUTPUT_DIR = "outputs/alpaca_mix"


@dataclass
class RecipeArguments:
    """What to train on and with which model. Everything else is a `CADSConfig` flag."""

    source: list[str] = field(
        default_factory=list,
        # "extend": a repeated --source adds to the list (argparse's default for nargs="+" keeps only the last).
        metadata={"help": "A source as name=path (JSON, JSONL, folder or Hub dataset id); repeat for each source. "
                  "None: the embedded generated sources.", "action": "extend"},
    )
    validation_source: list[str] = field(
        default_factory=list,
        metadata={"help": "name=path of data the model should do well on (the selection minimizes its loss); "
                  "repeatable. None: the validation splits of all sources (embedded default: held-out clean data).",
                  "action": "extend"},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id, local folder or .gguf file of a causal LM. None: a small GPT-2 from a config."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer (default: the model's; with no model, one trained offline)."}
    )
    max_length: int = field(default=256, metadata={"help": "Longer examples are discarded (and counted)."})
    compare_baselines: bool = field(
        default=True, metadata={"help": "Also train uniform and best-source models at the same budget."}
    )
    selection: str = field(
        default="proxies",
        metadata={"help": "How the mixture is chosen: 'proxies' (select_by_proxies: scaled-down runs of the whole "
                  "training, the better selector in the benchmarks; README, \"Which reward\") or 'search' "
                  "(CADSTrainer's CADS-S search, --max_steps long).",
                  "choices": ["proxies", "search"]},
    )


def parse_arguments(argv: list[str]) -> tuple[RecipeArguments, CADSConfig]:
    defaults = {
        "--output_dir": DEFAULT_OUTPUT_DIR, "--max_steps": "150", "--per_device_train_batch_size": "12",
        "--learning_rate": "3e-3", "--lr_scheduler_type": "constant", "--logging_steps": "25",
        "--save_strategy": "no", "--report_to": "none", "--selection_eval_batch_size": "12",
        "--per_device_eval_batch_size": "32",
        # Proxies at a quarter and half of the data whatever the number of sources: the library's rule gives these
        # for up to three candidates (the three sources here) and 10% and 25% beyond, where a batch of 12 cut to 10%
        # would be a single example.
        "--proxy_fractions": ["0.25", "0.5"],
    }
    recipe, config = parse_with_defaults((RecipeArguments, CADSConfig), argv, defaults)
    return recipe, config


def setup(recipe: RecipeArguments):
    """Sources, tokenizer, a fresh model, per-source splits and the validation set the selection targets."""
    if recipe.source:
        raw = load_instruction_sources(recipe.source)
        targets = load_instruction_sources(recipe.validation_source) if recipe.validation_source else None
    else:
        raw = make_generated_sources(seed=0)
        targets = recipe.validation_source and load_instruction_sources(recipe.validation_source)
        # The embedded default targets clean answers: held-out clean records drawn with another seed.
        targets = targets or {"clean_heldout": make_generated_sources(seed=1, sizes={"clean": 200})["clean"]}
    if recipe.model_name_or_path:
        tokenizer = load_tokenizer(recipe.tokenizer_name_or_path or recipe.model_name_or_path)
        model = load_model(recipe.model_name_or_path)
    else:
        if recipe.tokenizer_name_or_path:
            tokenizer = load_tokenizer(recipe.tokenizer_name_or_path)
        else:
            texts = (f"{r['instruction']} {r['input']} {r['output']}" for ds in raw.values() for r in ds)
            tokenizer = build_offline_tokenizer(texts, vocab_size=1024)
        model = make_small_gpt2(len(tokenizer) + 8, n_positions=max(256, recipe.max_length))
    add_chat_special_tokens(tokenizer, model)
    splits = {}
    for name, dataset in raw.items():
        tokenized, _ = tokenize_instruction_dataset(dataset, tokenizer, recipe.max_length, name=name)
        if len(tokenized) < 3:
            raise ValueError(f"Source {name!r} keeps {len(tokenized)} examples of at most {recipe.max_length} tokens; "
                             "it needs at least 3 (train, validation, test). Raise --max_length.")
        splits[name] = split_dataset(tokenized, seed=0)
    if targets:
        validation = concatenate_datasets(
            [tokenize_instruction_dataset(ds, tokenizer, recipe.max_length, name=name)[0] for name, ds in targets.items()]
        )
    else:
        validation = concatenate_datasets([split["validation"] for split in splits.values()])
    if len(validation) == 0:
        raise ValueError("The validation set is empty; give --validation_source or sources with more examples.")
    return tokenizer, model, splits, validation


def load_model(name_or_path: str):
    if name_or_path.endswith(".gguf"):
        folder, filename = os.path.split(os.path.abspath(name_or_path))
        return AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    if not os.path.exists(name_or_path):
        require_hub(name_or_path, "Model")
    return AutoModelForCausalLM.from_pretrained(name_or_path)


def perplexity(model, dataset, collator, args) -> float:
    loss, _ = dataset_loss(model, dataset, collator, args.per_device_eval_batch_size, args.device)
    return math.exp(loss)


def main(argv: list[str]) -> dict:
    recipe, config = parse_arguments(argv)
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (the repository to create or update).")
    transformers.set_seed(config.seed)
    tokenizer, model, splits, validation = setup(recipe)
    train = {name: split["train"] for name, split in splits.items()}
    if config.compute_budget is None:  # two epochs of all training data
        config.compute_budget = 2 * sum(len(ds) for ds in train.values())
    push, hub_model_id = config.push_to_hub, config.hub_model_id
    config.push_to_hub = False  # the selection's own runs are not the product; the mixture is pushed below
    collator = InstructionCollator(tokenizer.pad_token_id)
    initial_state = copy.deepcopy(model.state_dict())

    def initial_model():
        fresh = copy.deepcopy(model)
        fresh.load_state_dict(initial_state)
        return fresh

    # 1. The mixture: proxy runs, or the search (the surrogate, if the reward needs one, is collected first).
    if recipe.selection == "proxies":
        mixture = select_by_proxies(initial_model, train, validation, config, data_collator=collator,
                                    processing_class=tokenizer)
    else:
        search = CADSTrainer(
            model=model, args=config, sources=train, eval_dataset=validation, data_collator=collator,
            processing_class=tokenizer,
        )
        search.train()
        mixture = search.mixture()
    budget = ComputeBudget(config.compute_budget, config.budget_unit)

    # 2. Final training on the mixture, and the baselines at the same budget.
    def final_model(ratios: dict[str, float], tag: str):
        fresh = initial_model()
        args = copy.deepcopy(config)
        args.output_dir = os.path.join(config.output_dir, "final", tag)
        trainer = train_on_mixture(fresh, train, ratios, budget, args, data_collator=collator, processing_class=tokenizer)
        return trainer.model

    runs = {"cads": mixture.ratios}
    if recipe.compare_baselines:
        runs["uniform"] = {name: 1.0 for name in train}
        runs.update({f"only:{name}": {other: float(other == name) for other in train} for name in train})
    report = {}
    for tag, ratios in runs.items():
        trained = final_model(ratios, tag.replace(":", "_"))
        report[tag] = {
            "ratios": ratios,
            "validation_perplexity": perplexity(trained, validation, collator, config),
            "test_perplexity": {name: perplexity(trained, split["test"], collator, config) for name, split in splits.items()},
        }
    if recipe.compare_baselines:
        best = min((t for t in report if t.startswith("only:")), key=lambda t: report[t]["validation_perplexity"])
        report["best_source"] = {**report[best], "source": best.split(":", 1)[1]}

    # 3. Save and publish the mixture.
    mixture.metrics = {**mixture.metrics, "validation_perplexity": report["cads"]["validation_perplexity"]}
    if config.process_index == 0:
        mixture_dir = os.path.join(config.output_dir, "mixture")
        mixture.save_pretrained(mixture_dir)
        with open(os.path.join(config.output_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        print_report(mixture, report, budget)
        if push:
            print("pushed:", mixture.push_to_hub(hub_model_id))
    return report


def print_report(mixture, report: dict, budget: ComputeBudget) -> None:
    print(f"\nLearned mixture for a budget of {budget.amount:g} {budget.unit}:")
    for name, ratio in mixture.ratios.items():
        print(f"  {name:>16}: ratio {ratio:.3f} ({mixture.selected_sizes()[name]} of {mixture.source_sizes[name]} examples)")
    print(f"\n{'run':>20} | validation perplexity")
    for tag in ("cads", "uniform", "best_source"):
        if tag in report:
            label = tag if tag != "best_source" else f"best source ({report[tag]['source']})"
            print(f"{label:>20} | {report[tag]['validation_perplexity']:.3f}")
    print()


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main(sys.argv[1:])
    # Under several processes, close the process group before exit, once the trainers (whose DDP models keep it
    # alive) are collected: destroyed at interpreter teardown instead, gloo can abort the process.
    gc.collect()
    PartialState().destroy_process_group()
