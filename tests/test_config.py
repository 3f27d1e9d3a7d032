import pytest

from cads_hf import CADSConfig


@pytest.mark.parametrize(
    "field,value",
    [
        ("compute_budget", -5),
        ("budget_unit", "flops"),
        ("selection_level", "batch"),
        ("reward", "nonsense"),
        ("num_ratio_samples", 1),
        ("sigma_init", 0.0),
        ("sigma_decay", 1.5),
        ("selection_learning_rate", 0.0),
        ("min_ratio", 1.0),
        ("ratio_init", 1.5),
        ("surrogate_fractions", [0.5]),
        ("surrogate_kind", "quadratic"),
        ("proxy_fractions", [0.25, 0.25]),
        ("proxy_fractions", [0.0]),
        ("proxy_refine_fraction", 1.0),
        ("proxy_refine_margin", -0.1),
        ("nonfinite_loss", "ignore"),
        ("selection_update_interval", 0),
        ("selection_measure_interval", 0),
    ],
)
def test_invalid_values_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"CADSConfig.{field} must be"):
        CADSConfig(output_dir=str(tmp_path), **{"compute_budget": 100, field: value})


def test_the_penalty_reward_measures_every_step(tmp_path):
    with pytest.raises(ValueError, match="CADSConfig.selection_measure_interval must be 1 for reward='penalty'"):
        CADSConfig(output_dir=str(tmp_path), compute_budget=100, reward="penalty", selection_measure_interval=2)


def test_every_field_has_help_and_parser_accepts_it(tmp_path):
    import dataclasses

    from transformers import HfArgumentParser, TrainingArguments

    own = [f for f in dataclasses.fields(CADSConfig) if f.name not in {g.name for g in dataclasses.fields(TrainingArguments)}]
    assert own and all(f.metadata.get("help") for f in own)
    assert all(f"{f.name} (" in CADSConfig.__doc__ for f in own)
    (config,) = HfArgumentParser(CADSConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--compute_budget", "5000", "--surrogate_fractions", "0.1", "0.5", "--reward", "penalty"]
    )
    assert config.compute_budget == 5000 and config.surrogate_fractions == [0.1, 0.5] and config.reward == "penalty"
    assert config.selection_eval_batch_size == config.per_device_eval_batch_size
