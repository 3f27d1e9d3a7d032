"""Every command and code block of the README must run as written."""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", open(README).read(), flags=re.S)


def test_readme_opens_with_two_commands_and_ci_runs_the_test_command():
    text = open(README).read()
    first = text.index("```bash")
    assert "pip install" in _blocks("bash")[0] and "recipes/alpaca_mix.py" in _blocks("bash")[0]
    assert "pytest" in _blocks("bash")[1]
    assert text.index("<!-- test command -->") < text.index("```bash", first + 1)
    ci = open(os.path.join(os.path.dirname(README), ".ci", "run")).read()
    assert "<!-- test command -->" in ci


def test_configuration_table_lists_every_cadsconfig_field():
    import dataclasses

    from transformers import TrainingArguments

    from cads_hf import CADSConfig

    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    text = open(README).read()
    missing = [f.name for f in dataclasses.fields(CADSConfig) if f.name not in inherited and f"| `{f.name}` |" not in text]
    assert not missing, f"README's configuration table lacks {missing}"


@pytest.mark.slow
def test_user_script_example_runs_and_ranks_sources_by_noise(tmp_path):
    script = next(block for block in _blocks("python") if "CADSTrainer(" in block)
    script += "\nassert sorted(mixture.ratios, key=mixture.ratios.get) == ['noise_90', 'noise_50', 'noise_0'], mixture.ratios\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_proxy_selection_example_runs_and_drops_the_noisiest_source(tmp_path):
    blocks = _blocks("python")
    setup = next(block for block in blocks if "CADSTrainer(" in block)
    setup = setup[: setup.index("set_seed(args.seed)")]  # the data and the config, not the search
    script = setup + next(block for block in blocks if "select_by_proxies(" in block)
    script += "\nassert picked.ratios['noise_0'] == 1.0 and picked.ratios['noise_90'] == 0.0, picked.ratios\n"
    script += "\nassert len(ranked.config['candidates']) == 3 and ranked.ratios['noise_90'] == 0.0, ranked.config\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
