"""CADS-S on images: a search over a clean and a 90%-noise source turns the noisy one down (paper §5.2)."""

import os

import pytest
import torch
import transformers

from cads_hf import CADSConfig, CADSTrainer
from cads_hf.vision import ImageCollator, SmallCNN, SmallCNNConfig, make_noisy_sources, read_mnist_idx, split_sources
from cads_hf.vision import synthetic_digits

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.join(os.environ.get("CADS_SHARED_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data"), "vision", "mnist")
MNIST_FILES = [os.path.join(MNIST_DIR, f"t10k-{name}-ubyte.gz") for name in ("images-idx3", "labels-idx1")]
SOURCE_SIZE = 300


def image_pool():
    """The real MNIST test images where present, else offline synthetic digits of the same size."""
    if all(os.path.isfile(path) for path in MNIST_FILES):
        return read_mnist_idx(*MNIST_FILES)
    return synthetic_digits(2 * SOURCE_SIZE + 300, seed=0)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    transformers.set_seed(0)
    parts = split_sources(image_pool(), {"validation": 300, "pool": 2 * SOURCE_SIZE}, seed=0)
    sources = make_noisy_sources(parts["pool"], noise_levels=(0.0, 0.9), sizes=SOURCE_SIZE, seed=0)
    # A narrow version of the paper's CNN keeps the search to a few seconds on two CPU cores.
    model = SmallCNN(SmallCNNConfig(conv_channels=[8, 16], hidden_size=32))
    args = CADSConfig(
        output_dir=str(tmp_path_factory.mktemp("vision_search")), compute_budget=4 * 2 * SOURCE_SIZE,
        max_steps=60, per_device_train_batch_size=32, selection_eval_batch_size=64, learning_rate=2e-3,
        lr_scheduler_type="constant", weight_decay=0.0, logging_steps=20, report_to="none", save_strategy="no",
        disable_tqdm=True, use_cpu=True, seed=0,
    )
    assert args.reward == "validation" and args.ratio_init == 0.5
    trainer = CADSTrainer(
        model=model, args=args, sources=sources, eval_dataset=parts["validation"], data_collator=ImageCollator()
    )
    trainer.train()
    return trainer


def test_search_turns_down_the_noisy_source(search):
    ratios = search.mixture().ratios
    assert set(ratios) == {"noise_0", "noise_90"}
    assert ratios["noise_90"] < ratios["noise_0"]
    assert ratios["noise_90"] < 0.5 - 0.1  # moved clearly below its initial value, not just noise around it
    assert ratios["noise_0"] > 0.5


def test_search_logs_a_trajectory_that_separates_the_sources(search):
    logged = [entry for entry in search.state.log_history if "selection/ratio/noise_90" in entry]
    assert len(logged) == 3  # every 20 of the 60 steps
    gaps = [entry["selection/ratio/noise_0"] - entry["selection/ratio/noise_90"] for entry in logged]
    assert gaps[-1] > 0.2
    assert torch.isfinite(torch.tensor(gaps)).all()
    assert logged[-1]["selection/skipped_steps"] == 0
