"""CADS-S on images: a search over a clean and a 90%-noise source turns the noisy one down (paper §5.2).

Uses the real MNIST test images where `../shared/data` (or `$CADS_SHARED_DATA`) holds them, else offline synthetic
digits. The synthetic digits sit on a loss plateau (chance level) for the first few dozen steps; there the validation
reward has no signal and the ratios drift at random, and a drift towards the noisy source slows the model further. So
on synthetic data the search starts from a model warmed up on other clean digits; MNIST needs no warm-up.
"""

import os

import pytest
import torch
import transformers

from cads_hf import CADSConfig, CADSTrainer
from cads_hf.vision import (
    ImageCollator,
    SmallCNN,
    SmallCNNConfig,
    make_noisy_sources,
    read_mnist_idx,
    split_sources,
    synthetic_digits,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("CADS_SHARED_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
MNIST_DIR = os.path.join(SHARED_DATA, "vision", "mnist")
MNIST_FILES = [os.path.join(MNIST_DIR, f"t10k-{name}-ubyte.gz") for name in ("images-idx3", "labels-idx1")]
HAVE_MNIST = all(os.path.isfile(path) for path in MNIST_FILES)
SOURCE_SIZE = 300
VALIDATION_SIZE = 300
SYNTHETIC_SIZE = 16  # pixels; MNIST stays 28
STEPS = 150
LEARNING_RATE = 5e-3
COLLATOR = ImageCollator()


def image_pool():
    """The real MNIST test images where present, else offline synthetic digits."""
    if HAVE_MNIST:
        return read_mnist_idx(*MNIST_FILES)
    return synthetic_digits(2 * SOURCE_SIZE + VALIDATION_SIZE, seed=0, image_size=SYNTHETIC_SIZE)


def warm_up(model, steps: int = 60, batch: int = 32) -> None:
    """A few Adam steps on clean synthetic digits disjoint from the sources (another seed), off the plateau."""
    data = synthetic_digits(steps * batch, seed=1000, image_size=SYNTHETIC_SIZE)
    optimizer = torch.optim.Adam(model.parameters(), LEARNING_RATE)
    for start in range(0, steps * batch, batch):
        inputs = COLLATOR([data[i] for i in range(start, start + batch)])
        loss = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def run_search(output_dir, noise_levels=(0.0, 0.9)) -> CADSTrainer:
    transformers.set_seed(0)
    parts = split_sources(image_pool(), {"validation": VALIDATION_SIZE, "pool": 2 * SOURCE_SIZE}, seed=0)
    sources = make_noisy_sources(parts["pool"], noise_levels=noise_levels, sizes=SOURCE_SIZE, seed=0)
    # A narrow version of the paper's CNN keeps the search to a few seconds on two CPU cores.
    image_size = parts["validation"][0]["pixel_values"].shape[-1]
    model = SmallCNN(SmallCNNConfig(conv_channels=[8, 16], hidden_size=32, image_size=image_size))
    if not HAVE_MNIST:
        warm_up(model)
    args = CADSConfig(
        output_dir=str(output_dir), compute_budget=4 * 2 * SOURCE_SIZE, max_steps=STEPS, per_device_train_batch_size=32,
        selection_eval_batch_size=64, learning_rate=LEARNING_RATE, lr_scheduler_type="constant", weight_decay=0.0,
        logging_steps=20, report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0,
    )
    assert args.ratio_init == 0.5  # the defaults: reward, averaging and schedules as a user gets them
    trainer = CADSTrainer(
        model=model, args=args, sources=sources, eval_dataset=parts["validation"], data_collator=COLLATOR
    )
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    # One thread: these tiny convolutions gain nothing from two, and on a busy two-core machine two OpenMP threads
    # per process slow each step down a hundredfold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_search(tmp_path_factory.mktemp("vision_search"))
    finally:
        torch.set_num_threads(threads)


def test_search_turns_down_the_noisy_source(search):
    ratios = search.mixture().ratios
    assert set(ratios) == {"noise_0", "noise_90"}
    assert ratios["noise_90"] < ratios["noise_0"]
    # Dropped, not merely drifted, while the clean source rises. The mixture is the mean of s over the second half of
    # the search (selection_averaging="tail"), so the noisy source's mean stays above its final value.
    assert ratios["noise_90"] < 0.25
    assert ratios["noise_0"] > 0.5
    assert search.policy.s[1] < 0.25  # where the search ended


def test_search_logs_a_trajectory_that_separates_the_sources(search):
    logged = [entry for entry in search.state.log_history if "selection/ratio/noise_90" in entry]
    assert len(logged) == STEPS // 20
    gaps = [entry["selection/ratio/noise_0"] - entry["selection/ratio/noise_90"] for entry in logged]
    assert all(torch.isfinite(torch.tensor(gaps)))
    assert gaps[-1] > 0.6 and gaps[-1] >= gaps[0]
    assert logged[-1]["selection/skipped_steps"] == 0
    assert logged[-1]["selection/val_loss"] < logged[0]["selection/val_loss"]  # the searched model learns
