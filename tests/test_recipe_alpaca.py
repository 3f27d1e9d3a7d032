"""recipes/alpaca_mix.py end to end on its embedded default: one process, two processes, and --push_to_hub."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "alpaca_mix.py")
TINY = ["--max_steps", "6", "--compute_budget", "240", "--logging_steps", "3"]


def _load_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("alpaca_mix", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the recipe's string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_recipe_compares_baselines_saves_and_pushes_the_mixture(tmp_path, monkeypatch):
    from cads_hf import Mixture

    pushed = []
    monkeypatch.setattr(Mixture, "push_to_hub", lambda self, repo_id, **kw: pushed.append((repo_id, self)) or "url")
    report = _load_recipe().main(
        [*TINY, "--output_dir", str(tmp_path), "--push_to_hub", "--hub_model_id", "someone/mix"]
    )
    assert {"cads", "uniform", "best_source", "only:clean", "only:noisy", "only:random"} <= set(report)
    assert all(v["validation_perplexity"] > 1 for k, v in report.items() if k != "best_source")
    saved = Mixture.from_pretrained(str(tmp_path / "mixture"))
    assert pushed and pushed[0][0] == "someone/mix" and pushed[0][1].ratios == saved.ratios
    assert json.load(open(tmp_path / "report.json"))["cads"]["ratios"] == saved.ratios


@pytest.mark.slow
@pytest.mark.parametrize("selection", ["proxies", "search"])
def test_recipe_selects_by_proxies_by_default_or_by_search(tmp_path, selection):
    from cads_hf import Mixture

    flags = [] if selection == "proxies" else ["--selection", "search"]
    report = _load_recipe().main([*TINY, "--output_dir", str(tmp_path), "--compare_baselines", "False", *flags])
    saved = Mixture.from_pretrained(str(tmp_path / "mixture"))
    assert saved.ratios == report["cads"]["ratios"] and "validation_perplexity" in saved.metrics
    if selection == "proxies":
        assert saved.reward == "proxy" and set(saved.ratios.values()) <= {0.0, 1.0}
        assert len(saved.config["candidates"]) == 3 and set(saved.config["source_values"]) == {"clean", "noisy", "random"}
        assert "proxy_samples_over_final" in saved.metrics and saved.config["proxy_fractions"] == [0.25, 0.5]
    else:
        assert saved.reward == "horizon" and "source_values" not in saved.config
        assert any(0 < ratio < 1 and ratio != saved.config["ratio_init"] for ratio in saved.ratios.values())  # learned


@pytest.mark.slow
def test_recipe_push_without_repository_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="--hub_model_id"):
        _load_recipe().main([*TINY, "--output_dir", str(tmp_path), "--push_to_hub", "--compare_baselines", "False"])


@pytest.mark.slow
@pytest.mark.distributed
def test_recipe_runs_on_two_cpu_processes(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", RECIPE,
        *TINY, "--compare_baselines", "False", "--output_dir", str(tmp_path),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.load(open(tmp_path / "report.json"))
    assert set(report["cads"]["ratios"]) == {"clean", "noisy", "random"}
    assert os.path.isfile(tmp_path / "mixture" / "mixture.json")
