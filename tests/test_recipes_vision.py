"""recipes/noisy_sources_vision.py: data resolution, and a tiny end-to-end run of its `main`."""

import importlib.util
import json
import os
import sys

import pytest
import torch

from cads_hf import CADSConfig, Mixture

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_NAMES = {"noise_0", "noise_22.5", "noise_45", "noise_67.5", "noise_90"}


@pytest.fixture(scope="module")
def recipe():
    path = os.path.join(REPO_ROOT, "recipes", "noisy_sources_vision.py")
    spec = importlib.util.spec_from_file_location("noisy_sources_vision", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the recipe's annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_defaults_parse_to_the_paper_sources(recipe, tmp_path):
    args, config = recipe.parse_arguments(["--output_dir", str(tmp_path)])
    assert args.noise_levels == [0.0, 0.225, 0.45, 0.675, 0.9]
    assert args.model == "small_cnn" and config.compute_budget is None  # filled in by main from --budget_epochs
    assert config.lr_scheduler_type == "constant" and config.reward == CADSConfig.reward
    args, config = recipe.parse_arguments(["--output_dir", str(tmp_path), "--model", "resnet18", "--max_steps", "7"])
    assert args.model == "resnet18" and config.max_steps == 7


def test_missing_mnist_falls_back_to_synthetic_unless_required(recipe, tmp_path):
    args, _ = recipe.parse_arguments(["--output_dir", str(tmp_path), "--mnist_dir", str(tmp_path)])
    assert recipe.mnist_files(args) is None
    pool, name = recipe.load_images(args, seed=0, count=30)
    assert len(pool) == 30 and name.startswith("synthetic")
    args.data = "mnist"
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        recipe.load_images(args, seed=0, count=30)


def test_setup_makes_disjoint_noisy_sources_and_clean_splits(recipe, tmp_path, monkeypatch):
    args, _ = recipe.parse_arguments([
        "--output_dir", str(tmp_path), "--data", "synthetic", "--image_size", "16", "--source_size", "40",
        "--validation_size", "30", "--test_size", "20",
    ])
    sources, validation, test, _ = recipe.setup(args, seed=0)
    assert set(sources) == SOURCE_NAMES and all(len(ds) == 40 for ds in sources.values())
    assert (len(validation), len(test)) == (30, 20)
    noisy = {name: sum(ds.with_format(None)["is_noisy"]) for name, ds in sources.items()}
    assert noisy == {"noise_0": 0, "noise_22.5": 9, "noise_45": 18, "noise_67.5": 27, "noise_90": 36}
    assert "is_noisy" not in validation.column_names  # the held-out splits keep their true labels
    # A fixed pool (MNIST's 10,000 images) too small for the requested splits is refused, not silently reused.
    fixed_pool = recipe.synthetic_digits(100, seed=0, image_size=16)
    monkeypatch.setattr(recipe, "load_images", lambda *args, **kwargs: (fixed_pool, "a 100-image pool"))
    with pytest.raises(ValueError, match="need 250"):
        recipe.setup(args, seed=0)


@pytest.mark.parametrize("model", ["small_cnn", "resnet18"])
def test_models_take_the_images(recipe, tmp_path, model):
    args, _ = recipe.parse_arguments(["--output_dir", str(tmp_path), "--model", model])
    net = recipe.make_model(args, torch.zeros(1, 28, 28))
    assert net(pixel_values=torch.zeros(2, 1, 28, 28))["logits"].shape == (2, 10)


@pytest.fixture
def one_thread():
    """Tiny convolutions gain nothing from more threads, and on a busy machine extra OpenMP threads crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_main_runs_end_to_end_and_writes_report_and_mixture(recipe, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    report = recipe.main([
        "--output_dir", str(out), "--data", "synthetic", "--image_size", "16", "--source_size", "40",
        "--validation_size", "40", "--test_size", "40", "--cnn_channels", "4", "8", "--cnn_hidden_size", "16",
        "--max_steps", "4", "--per_device_train_batch_size", "10", "--selection_eval_batch_size", "10",
        "--compute_budget", "100", "--use_cpu", "True", "--seed", "3",
    ])
    written = json.loads((out / "report.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert set(written["sources"]) == SOURCE_NAMES and written["compute_budget"] == 100
    runs = written["runs"]
    assert set(runs) == {"cads", "full_dataset", "best_source"} | {f"only:{name}" for name in SOURCE_NAMES}
    for run in runs.values():
        assert 0.0 <= run["validation_accuracy"] <= 1.0 and 0.0 <= run["test_accuracy"] <= 1.0
    assert runs["full_dataset"]["ratios"] == {name: 1.0 for name in SOURCE_NAMES}
    best = runs["best_source"]
    assert best["validation_accuracy"] == max(runs[f"only:{n}"]["validation_accuracy"] for n in SOURCE_NAMES)
    assert best["ratios"] == {name: float(name == best["source"]) for name in SOURCE_NAMES}

    mixture = Mixture.from_pretrained(str(out / "mixture"))
    assert set(mixture.ratios) == SOURCE_NAMES and mixture.ratios == written["mixture"] == runs["cads"]["ratios"]
    assert mixture.compute_budget == 100 and mixture.source_sizes == {name: 40 for name in SOURCE_NAMES}
    assert mixture.metrics["test_accuracy"] == runs["cads"]["test_accuracy"]
    printed = capsys.readouterr().out
    assert "CADS-S (learned mixture)" in printed and f"best source ({best['source']})" in printed
    assert "full dataset" in printed
