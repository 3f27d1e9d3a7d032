from dataclasses import dataclass, field

import pytest

from cads_hf import CADSConfig
from cads_hf.recipe_arguments import parse_with_defaults


@dataclass
class Extra:
    name: str = field(default="none")


def test_defaults_fill_only_the_flags_the_user_did_not_give(tmp_path):
    defaults = {"--output_dir": str(tmp_path / "default"), "--max_steps": "7", "--name": "recipe",
                "--proxy_fractions": ["0.25", "0.5"]}
    extra, config = parse_with_defaults((Extra, CADSConfig), ["--max_steps=3", "--name", "mine"], defaults)
    assert config.max_steps == 3 and extra.name == "mine"  # the user's flags win, in either spelling
    assert config.output_dir == str(tmp_path / "default") and config.proxy_fractions == [0.25, 0.5]
    _, config = parse_with_defaults((Extra, CADSConfig), ["--proxy_fractions", "0.1", "0.2"], defaults)
    assert config.proxy_fractions == [0.1, 0.2]


def test_cpu_runs_default_to_use_cpu_so_launched_processes_form_one_group(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    _, config = parse_with_defaults((Extra, CADSConfig), [], {"--output_dir": str(tmp_path)})
    assert config.use_cpu is True


def test_unknown_flag_fails_naming_it(tmp_path):
    with pytest.raises(ValueError, match="--no_such_flag"):
        parse_with_defaults((Extra, CADSConfig), ["--no_such_flag", "1"], {"--output_dir": str(tmp_path)})
