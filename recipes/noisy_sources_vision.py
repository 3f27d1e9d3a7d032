"""Image classification on sources of different label noise: learn which to train on for a budget (CADS-S).

Features:
  - five sources cut from one image set, with 0 / 22.5 / 45 / 67.5 / 90% of their labels changed to another class
    (paper §5.2, `make_noisy_sources`), plus held-out clean validation and test splits;
  - a CADS-S search for the compute budget, then a fresh model trained on the learned mixture for exactly that
    budget, beside the paper's baselines at the same budget: best source (each source alone, the one with the best
    validation accuracy) and full dataset (every source, ratio 1);
  - test accuracy of each, printed as a table; a JSON report and the learned mixture (`mixture.save_pretrained`)
    written into `--output_dir`;
  - the paper's small CNN (appendix B.2) or any torchvision classifier (`--model resnet18`, appendix B.3);
  - one process or many, CPU or CUDA: `accelerate launch` picks the setup; only the main process prints and writes.

Data: the real MNIST test set (10,000 images) from
`$CADS_SHARED_DATA/vision/mnist/t10k-{images-idx3,labels-idx1}-ubyte.gz` (default `$CADS_SHARED_DATA` =
`../shared/data` beside the repository) or `--mnist_dir`; where those files are absent,
offline synthetic seven-segment digits (`synthetic_digits`), so the recipe runs on a fresh machine. `--data` forces
one or the other.

Defaults: five sources of 300 images, a budget of 3 epochs of their union (4,500 samples), a 100-step search, Adam at
a constant learning rate of 1e-3, batch 64 (the rules of benchmarks/noisy_sources.py). With OMP_NUM_THREADS=1 that
takes about 35 s on a two-core CPU machine. Set it there (`accelerate launch` sets it for several processes): while
other work shares the cores, two OpenMP threads per process slow these small convolutions down many times. Without
CUDA, `--use_cpu` defaults to True, which is what makes several launched CPU processes one data-parallel (gloo) run.
`--source_size 1700` uses all 10,000 MNIST images.

    accelerate launch recipes/noisy_sources_vision.py
    accelerate launch recipes/noisy_sources_vision.py --source_size 1700 --budget_epochs 8 --max_steps 300 \\
        --output_dir outputs/noisy_sources_vision
    accelerate launch recipes/noisy_sources_vision.py --model resnet18 --compute_budget 20000
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        recipes/noisy_sources_vision.py        # two CPU processes (gloo)

(`accelerate launch --cpu --num_processes 2` starts one process; use `--multi_gpu` as above for two on CPU.)
"""

from __future__ import annotations

import copy
import gc
import json
import os
import sys
import time
from dataclasses import dataclass, field

import datasets
import transformers
from accelerate import PartialState

from cads_hf import CADSConfig, CADSTrainer, ComputeBudget, train_on_mixture
from cads_hf.evaluation import classification_accuracy
from cads_hf.recipe_arguments import parse_with_defaults
from cads_hf.vision import (
    PAPER_NOISE_LEVELS,
    ImageCollator,
    SmallCNN,
    SmallCNNConfig,
    TorchvisionClassifier,
    make_noisy_sources,
    read_mnist_idx,
    split_sources,
    synthetic_digits,
)

DEFAULT_OUTPUT_DIR = "outputs/noisy_sources_vision"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
NUM_CLASSES = 10


@dataclass
class RecipeArguments:
    """Data, sources, model and baselines. Everything else (budget, search, optimizer) is a `CADSConfig` flag."""

    data: str = field(
        default="auto",
        metadata={"help": "'mnist' (the real MNIST test set; error if absent), 'synthetic' (offline digits) or "
                  "'auto' (MNIST when its files are found, else synthetic)."},
    )
    mnist_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. Default: "
                  "$CADS_SHARED_DATA/vision/mnist, $CADS_SHARED_DATA defaulting to ../shared/data."},
    )
    source_size: int = field(default=300, metadata={"help": "Images per source."})
    noise_levels: list[float] = field(
        default_factory=lambda: list(PAPER_NOISE_LEVELS),
        metadata={"help": "Label-noise fraction of each source, one source per value (paper: 0 0.225 0.45 0.675 0.9)."},
    )
    validation_size: int = field(
        default=500, metadata={"help": "Clean held-out images the selection minimizes the loss of (and picks the "
                               "best source on)."}
    )
    test_size: int = field(default=1000, metadata={"help": "Clean held-out images the reported accuracy is read on."})
    budget_epochs: float = field(
        default=3.0,
        metadata={"help": "Budget in epochs of the union of the sources, used when --compute_budget is not given."},
    )
    model: str = field(
        default="small_cnn",
        metadata={"help": "'small_cnn' (the paper's CNN) or a torchvision.models name, e.g. 'resnet18'."},
    )
    cnn_channels: list[int] = field(
        default_factory=lambda: [32, 64], metadata={"help": "small_cnn: output channels of the 5x5 convolutions."}
    )
    cnn_hidden_size: int = field(
        default=128, metadata={"help": "small_cnn: units of the hidden fully connected layer."}
    )
    image_size: int = field(default=28, metadata={"help": "Side of the synthetic digits (MNIST is always 28)."})
    compare_baselines: bool = field(
        default=True, metadata={"help": "Also train best-source and full-dataset models at the same budget."}
    )


def parse_arguments(argv: list[str]) -> tuple[RecipeArguments, CADSConfig]:
    defaults = {
        "--output_dir": DEFAULT_OUTPUT_DIR, "--max_steps": "100", "--per_device_train_batch_size": "64",
        "--learning_rate": "1e-3", "--lr_scheduler_type": "constant", "--weight_decay": "0.0",
        "--logging_steps": "25", "--save_strategy": "no", "--report_to": "none",
        "--selection_eval_batch_size": "64", "--per_device_eval_batch_size": "500", "--disable_tqdm": "True",
        "--ddp_find_unused_parameters": "False",  # every parameter of these classifiers is used
    }
    recipe, config = parse_with_defaults((RecipeArguments, CADSConfig), argv, defaults)
    if recipe.data not in ("auto", "mnist", "synthetic"):
        raise ValueError(f"--data must be 'auto', 'mnist' or 'synthetic', got {recipe.data!r}.")
    if config.selection_level != "source":
        raise ValueError("This recipe learns source ratios; --selection_level must be 'source'.")
    return recipe, config


def mnist_files(recipe: RecipeArguments) -> tuple[str, str] | None:
    """Paths of the MNIST test images and labels, or None where they are absent."""
    folder = recipe.mnist_dir or os.path.join(
        os.environ.get("CADS_SHARED_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data"), "vision", "mnist"
    )
    paths = tuple(os.path.normpath(os.path.join(folder, name)) for name in MNIST_FILES)
    return paths if all(os.path.isfile(p) for p in paths) else None


def load_images(recipe: RecipeArguments, seed: int, count: int):
    """The image pool and a name for it: the real MNIST test images when available (or required), else `count`
    synthetic digits."""
    files = None if recipe.data == "synthetic" else mnist_files(recipe)
    if files:
        return read_mnist_idx(*files), f"MNIST test set ({files[0]})"
    if recipe.data == "mnist":
        raise FileNotFoundError(
            f"--data mnist: {' and '.join(MNIST_FILES)} not found (give --mnist_dir or set CADS_SHARED_DATA)."
        )
    return synthetic_digits(count, seed=seed, image_size=recipe.image_size), "synthetic digits (offline)"


def setup(recipe: RecipeArguments, seed: int):
    """Noisy training sources, clean validation and test splits, all disjoint, and the name of the data."""
    pool_size = recipe.source_size * len(recipe.noise_levels)
    needed = recipe.validation_size + recipe.test_size + pool_size
    pool, data_name = load_images(recipe, seed, needed)
    if needed > len(pool):
        raise ValueError(f"{data_name} has {len(pool)} images; sources, validation and test need {needed}. "
                         "Lower --source_size, --validation_size or --test_size.")
    parts = split_sources(
        pool, {"validation": recipe.validation_size, "test": recipe.test_size, "pool": pool_size}, seed=seed
    )
    sources = make_noisy_sources(
        parts["pool"], noise_levels=recipe.noise_levels, sizes=recipe.source_size, seed=seed, num_classes=NUM_CLASSES
    )
    return sources, parts["validation"], parts["test"], data_name


def make_model(recipe: RecipeArguments, example_pixels):
    """A fresh classifier for images shaped like `example_pixels` (C, H, W)."""
    channels, height, _ = example_pixels.shape
    if recipe.model == "small_cnn":
        config = SmallCNNConfig(
            image_size=height, in_channels=channels, conv_channels=recipe.cnn_channels,
            hidden_size=recipe.cnn_hidden_size, num_labels=NUM_CLASSES,
        )
        return SmallCNN(config)
    return TorchvisionClassifier.from_torchvision(recipe.model, num_classes=NUM_CLASSES, in_channels=channels)


def main(argv: list[str]) -> dict:
    recipe, config = parse_arguments(argv)
    transformers.set_seed(config.seed)
    is_main = config.process_index == 0
    say = print if is_main else (lambda *args, **kwargs: None)
    sources, validation, test, data_name = setup(recipe, config.seed)
    union = sum(len(ds) for ds in sources.values())
    if config.compute_budget is None:
        config.compute_budget = recipe.budget_epochs * union
    budget = ComputeBudget(config.compute_budget, config.budget_unit)
    if budget.unit != "samples":
        raise ValueError("Images have no tokens: --budget_unit must be 'samples'.")
    collator = ImageCollator()
    model = make_model(recipe, validation[0]["pixel_values"])
    initial_state = copy.deepcopy(model.state_dict())
    say(f"Data: {data_name}; sources {', '.join(f'{n} ({len(ds)})' for n, ds in sources.items())}; "
        f"{len(validation)} validation, {len(test)} test images. Budget {budget.amount:g} samples "
        f"({budget.amount / union:.2f} epochs of the union).")

    def accuracy(trained, dataset) -> float:
        return classification_accuracy(trained, dataset, collator, config.per_device_eval_batch_size, config.device)

    # 1. Search (the surrogate, if the reward needs one, is collected first).
    start = time.perf_counter()
    search = CADSTrainer(model=model, args=config, sources=sources, eval_dataset=validation, data_collator=collator)
    search.train()
    mixture = search.mixture()
    mixture.base_model = mixture.base_model or recipe.model
    search_s = time.perf_counter() - start
    say(f"Search: {config.max_steps} steps in {search_s:.0f} s; ratios "
        + ", ".join(f"{n} {r:.2f}" for n, r in mixture.ratios.items()))

    # 2. Final training on the learned mixture, and the baselines, each a fresh model for exactly the budget.
    runs = {"cads": mixture.ratios}
    if recipe.compare_baselines:
        runs["full_dataset"] = {name: 1.0 for name in sources}
        runs.update({f"only:{name}": {other: float(other == name) for other in sources} for name in sources})
    results = {}
    for tag, ratios in runs.items():
        start = time.perf_counter()
        fresh = copy.deepcopy(model)
        fresh.load_state_dict(initial_state)
        args = copy.deepcopy(config)
        args.output_dir = os.path.join(config.output_dir, "final", tag.replace(":", "_"))
        args.logging_strategy = "no"  # one line per run below; the search's logs carry the ratio trajectory
        trained = train_on_mixture(fresh, sources, ratios, budget, args, data_collator=collator).model
        results[tag] = {
            "ratios": ratios,
            "validation_accuracy": accuracy(trained, validation),
            "test_accuracy": accuracy(trained, test),
            "train_s": time.perf_counter() - start,
        }
        say(f"  {tag:>16}: validation {results[tag]['validation_accuracy']:.4f}, "
            f"test {results[tag]['test_accuracy']:.4f} ({results[tag]['train_s']:.0f} s)")
    if recipe.compare_baselines:
        best = max((t for t in results if t.startswith("only:")), key=lambda t: results[t]["validation_accuracy"])
        results["best_source"] = {**results[best], "source": best.split(":", 1)[1]}

    report = {
        "data": data_name,
        "model": recipe.model,
        "seed": config.seed,
        "compute_budget": budget.amount,
        "budget_epochs_of_union": budget.amount / union,
        "sources": {
            name: {"size": len(ds), "label_noise": p} for (name, ds), p in zip(sources.items(), recipe.noise_levels)
        },
        "validation_size": len(validation),
        "test_size": len(test),
        "reward": config.reward,
        "search_steps": config.max_steps,
        "search_s": search_s,
        "mixture": mixture.ratios,
        "runs": results,
    }

    # 3. Save the mixture and the report (main process only).
    mixture.metrics = {"test_accuracy": results["cads"]["test_accuracy"],
                       "validation_accuracy": results["cads"]["validation_accuracy"]}
    if is_main:
        mixture.save_pretrained(os.path.join(config.output_dir, "mixture"))
        with open(os.path.join(config.output_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        print_report(mixture, report)
    return report


def print_report(mixture, report: dict) -> None:
    print(f"\nLearned mixture for a budget of {report['compute_budget']:g} samples "
          f"({report['budget_epochs_of_union']:.2f} epochs of the union):")
    selected = mixture.selected_sizes()
    for name, ratio in mixture.ratios.items():
        noise = report["sources"][name]["label_noise"]
        print(f"  {name:>12} ({100 * noise:4.1f}% noise): ratio {ratio:.3f} "
              f"({selected[name]} of {mixture.source_sizes[name]} images)")
    runs = report["runs"]
    print(f"\n{'run':>28} | validation acc | test acc")
    for tag in ("cads", "best_source", "full_dataset"):
        if tag in runs:
            label = {"cads": "CADS-S (learned mixture)", "full_dataset": "full dataset (all, ratio 1)"}.get(
                tag, f"best source ({runs[tag].get('source')})"
            )
            print(f"{label:>28} | {runs[tag]['validation_accuracy']:14.4f} | {runs[tag]['test_accuracy']:.4f}")
    print()


if __name__ == "__main__":
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_warning()
    main(sys.argv[1:])
    # Under several processes, close the process group before exit, once the trainers (whose DDP models keep it
    # alive) are collected: destroyed at interpreter teardown instead, gloo can abort the process.
    gc.collect()
    PartialState().destroy_process_group()
