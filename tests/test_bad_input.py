"""Bad input fails before any training, with an error naming the culprit, and writes nothing.

One test per kind of bad input: an empty source, duplicate source names, missing columns, malformed JSON / JSONL,
a budget below one global batch, ratios that select nothing, no validation set, a tokenizer the model cannot take,
a corrupted mixture / surrogate / checkpoint, an invalid command-line value, and a Hub id without network.
"""

import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from huggingface_hub import constants
from toy import ToyClassifier, toy_sources

from cads_hf import CADSConfig, CADSTrainer, ComputeBudget, LossSurrogate, Mixture, SourceSet, train_on_mixture
from cads_hf.text import (
    InstructionCollator,
    add_chat_special_tokens,
    build_offline_tokenizer,
    load_instruction_records,
    load_instruction_sources,
    load_tokenizer,
    make_generated_sources,
    tokenize_instruction_dataset,
)

transformers.logging.set_verbosity_error()
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "alpaca_mix.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("alpaca_mix_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def toy():
    return toy_sources(sizes=(24, 24, 24), val_size=16)


def args_for(output_dir, **overrides):
    values = dict(
        output_dir=str(output_dir), compute_budget=200, per_device_train_batch_size=12, max_steps=2,
        learning_rate=1e-2, report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
        selection_eval_batch_size=8,
    )
    values.update(overrides)
    return CADSConfig(**values)


def assert_nothing_written(folder):
    folder = Path(folder)
    written = [str(p) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    assert written == [], f"files written despite the error: {written}"


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows), encoding="utf-8")
    return path


GOOD_ROWS = [{"instruction": f"Say {i}", "output": str(i)} for i in range(8)]


# ------------------------------------------------------------------------------------------------ empty source
def test_empty_source(tmp_path, toy):
    sources, validation = toy
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="Source 'noise_50' is empty"):
        CADSTrainer(
            model=ToyClassifier(), args=args_for(out), sources={**sources, "noise_50": sources["noise_50"].select([])},
            eval_dataset=validation,
        )
    assert_nothing_written(out)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{empty}: file holds no records")):
        load_instruction_records(empty)


# ------------------------------------------------------------------------------------------ duplicate names
def test_duplicate_source_names(tmp_path, recipe):
    a = write_jsonl(tmp_path / "a.jsonl", GOOD_ROWS)
    b = write_jsonl(tmp_path / "b.jsonl", GOOD_ROWS)
    with pytest.raises(ValueError, match="source name 'web' is given twice"):
        load_instruction_sources([f"web={a}", f"web={b}"])
    # A repeated --source adds a source (argparse would keep only the last one), so the duplicate is seen.
    assert recipe.parse_arguments(["--source", f"web={a}", "--source", f"blog={b}"])[0].source == [f"web={a}", f"blog={b}"]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="source name 'web' is given twice"):
        recipe.main(["--source", f"web={a}", "--source", f"web={b}", "--output_dir", str(out)])
    assert_nothing_written(out)


# -------------------------------------------------------------------------------------------- missing columns
def test_source_missing_a_column_of_the_others():
    sources, _ = toy_sources(sizes=(4, 4, 4), val_size=2)
    with pytest.raises(ValueError, match=r"Source 'noise_100' has columns \['features'\].*missing in 'noise_100': \['labels'\]"):
        SourceSet({**sources, "noise_100": sources["noise_100"].remove_columns("labels")})


@pytest.mark.parametrize(
    "where, culprit",
    [("sources", "source 'noise_0'"), ("validation", "the validation set")],
)
@pytest.mark.parametrize("column", ["labels", "features"])
def test_columns_the_loss_or_model_needs_are_checked_before_the_first_step(tmp_path, toy, where, culprit, column):
    sources, validation = toy
    if where == "sources":
        sources = {name: ds.remove_columns(column) for name, ds in sources.items()}
    else:
        validation = validation.remove_columns(column)
    out = tmp_path / "out"
    trainer = CADSTrainer(model=ToyClassifier(), args=args_for(out), sources=sources, eval_dataset=validation)
    with pytest.raises(ValueError, match=re.escape(f"Batches of {culprit} lack ['{column}']")):
        trainer.train()
    assert trainer.state.global_step == 0
    assert_nothing_written(out)


def test_record_missing_a_field_names_file_and_record(tmp_path):
    path = tmp_path / "gpt4.json"
    path.write_text(json.dumps([*GOOD_ROWS, {"instruction": "no answer"}]), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}: record 8: missing 'output' (or 'response')")):
        load_instruction_records(path)


# ------------------------------------------------------------------------------------------- malformed JSON
def test_malformed_jsonl_line_names_file_and_line_and_the_recipe_writes_nothing(tmp_path, recipe):
    good = write_jsonl(tmp_path / "good.jsonl", GOOD_ROWS)
    bad = write_jsonl(tmp_path / "bad.jsonl", [*GOOD_ROWS[:3], '{"instruction": "x", "output": '])
    with pytest.raises(ValueError, match=re.escape(f"{bad}: line 4: invalid JSON")):
        load_instruction_records(bad)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=re.escape(f"{bad}: line 4: invalid JSON")):
        recipe.main(["--source", f"good={good}", "--source", f"bad={bad}", "--output_dir", str(out)])
    assert_nothing_written(out)


def test_malformed_json_array_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": "c" "output": "d"}\n]', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: invalid JSON at line 3")):
        load_instruction_records(bad)


# --------------------------------------------------------------------------------------------------- budget
def test_budget_below_one_global_batch(tmp_path, toy):
    sources, validation = toy
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"compute_budget=20 samples pays for 20 examples, fewer than one global batch of 24"):
        CADSTrainer(
            model=ToyClassifier(), args=args_for(out, compute_budget=20, gradient_accumulation_steps=2),
            sources=sources, eval_dataset=validation,
        )
    assert_nothing_written(out)
    with pytest.raises(ValueError, match="compute_budget must be a positive finite number"):
        ComputeBudget(0)


# ---------------------------------------------------------------------------------------- ratios select nothing
def test_ratios_that_select_no_data(tmp_path, toy):
    sources, _ = toy
    out = tmp_path / "final"
    ratios = {"noise_0": 0.0, "noise_50": 0.01, "noise_100": 0.0}  # round(0.01 * 24) = 0
    with pytest.raises(ValueError, match=r"Ratios \[0.0, 0.01, 0.0\] select no data from sources of sizes \[24, 24, 24\]"):
        train_on_mixture(ToyClassifier(), sources, ratios, ComputeBudget(100), args_for(out))
    assert_nothing_written(out)
    with pytest.raises(ValueError, match=r"No ratio given for source\(s\) \['noise_100'\]"):
        train_on_mixture(ToyClassifier(), sources, {"noise_0": 1.0, "noise_50": 1.0}, ComputeBudget(100), args_for(out))
    with pytest.raises(ValueError, match="Ratio of source 'noise_0' must be a number in \\[0, 1\\]"):
        Mixture(ratios={"noise_0": 1.5}, compute_budget=100)


# ------------------------------------------------------------------------------------------ no validation set
@pytest.mark.parametrize("validation", [None, "empty"])
def test_no_validation_set(tmp_path, toy, validation):
    sources, full = toy
    out = tmp_path / "out"
    eval_dataset = full.select([]) if validation == "empty" else None
    with pytest.raises(ValueError, match="needs a non-empty validation set"):
        CADSTrainer(model=ToyClassifier(), args=args_for(out), sources=sources, eval_dataset=eval_dataset)
    assert_nothing_written(out)


# ------------------------------------------------------------------------------------- tokenizer vs. model
@pytest.fixture(scope="module")
def tokenizer():
    records = make_generated_sources(seed=0, sizes={"clean": 50})["clean"]
    return build_offline_tokenizer((f"{r['instruction']} {r['input']} {r['output']}" for r in records), vocab_size=300)


class NoEmbeddings(torch.nn.Module):
    """A model whose token embeddings cannot be read or resized."""

    config = transformers.PretrainedConfig()


class FixedEmbeddings(torch.nn.Module):
    """A model whose embeddings can be read but not resized."""

    config = transformers.PretrainedConfig()

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(8, 4)

    def get_input_embeddings(self):
        return self.embed

    def resize_token_embeddings(self, size):
        raise NotImplementedError(f"{type(self).__name__} has a fixed vocabulary")


def test_tokenizer_whose_special_tokens_the_model_cannot_take(tokenizer):
    fresh = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token=tokenizer.eos_token)
    size = len(fresh)
    with pytest.raises(ValueError, match=r"NoEmbeddings cannot take the chat special tokens: it has no resizable token embeddings"):
        add_chat_special_tokens(fresh, NoEmbeddings())
    assert len(fresh) == size and fresh.pad_token is None  # the tokenizer is left as it was
    with pytest.raises(ValueError, match=r"FixedEmbeddings cannot take the chat special tokens: resizing its token embeddings"):
        add_chat_special_tokens(
            transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token=tokenizer.eos_token),
            FixedEmbeddings(),
        )
    records = make_generated_sources(seed=0, sizes={"clean": 4})["clean"]
    with pytest.raises(ValueError, match=r"tokenizer has no '<system>' token; call add_chat_special_tokens"):
        tokenize_instruction_dataset(records, fresh, max_length=64)
    with pytest.raises(ValueError, match="pad_token_id is None; call add_chat_special_tokens"):
        InstructionCollator(fresh.pad_token_id)


# ---------------------------------------------------------------------------------- corrupted artifacts
def test_corrupted_or_truncated_mixture_and_surrogate(tmp_path):
    mixture = Mixture(ratios={"a": 0.25, "b": 1.0}, compute_budget=1000, source_sizes={"a": 4, "b": 8})
    path = mixture.save_pretrained(str(tmp_path / "mix"))
    assert Mixture.from_pretrained(str(tmp_path / "mix")) == mixture
    text = Path(path).read_text()
    Path(path).write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=re.escape(f"The mixture file {path} is corrupted or truncated")):
        Mixture.from_pretrained(str(tmp_path / "mix"))
    Path(path).write_text(json.dumps({"ratios": {"a": 0.5}}))
    with pytest.raises(ValueError, match=re.escape(f"The mixture file {path} lacks required field(s) ['compute_budget']")):
        Mixture.from_pretrained(path)
    Path(path).write_text(json.dumps({"ratios": {"a": "half"}, "compute_budget": 10}))
    with pytest.raises(ValueError, match="Ratio of source 'a' must be a number"):
        Mixture.from_pretrained(path)
    Path(path).write_text("[0.5]")
    with pytest.raises(ValueError, match="must hold a JSON object, found list"):
        Mixture.from_pretrained(path)

    LossSurrogate([10, 20, 40], [1.0, 0.8, 0.5]).save(str(tmp_path))
    surrogate = tmp_path / "surrogate.json"
    surrogate.write_text(surrogate.read_text()[:-20])
    with pytest.raises(ValueError, match=re.escape(f"The surrogate file {surrogate} is corrupted or truncated")):
        LossSurrogate.load(str(tmp_path))


def test_incomplete_or_corrupted_checkpoints_are_named_and_never_resumed_from(tmp_path, toy, caplog):
    sources, validation = toy
    out = tmp_path / "run"

    def trainer():
        args = args_for(out, save_strategy="steps", save_steps=1)
        return CADSTrainer(model=ToyClassifier(), args=args, sources=sources, eval_dataset=validation)

    trainer().train()
    assert {p.name for p in out.iterdir()} >= {"checkpoint-1", "checkpoint-2"}
    # A run killed while saving checkpoint-2 leaves it without (or with a truncated) trainer_state.json.
    state = out / "checkpoint-2" / "trainer_state.json"
    complete = state.read_text()
    state.write_text(complete[:40])
    resumer = trainer()
    with caplog.at_level("WARNING", logger="cads_hf.io"):
        assert resumer._resolve_checkpoint(True) == str(out / "checkpoint-1")
    assert "checkpoint-2: its trainer_state.json is truncated or corrupted" in caplog.text
    with pytest.raises(ValueError, match=re.escape(f"Cannot resume from {out / 'checkpoint-2'}: its trainer_state.json")):
        resumer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    (out / "checkpoint-1" / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match=r"No complete checkpoint to resume from .*checkpoint-1: it has no trainer_state.json"):
        resumer.train(resume_from_checkpoint=True)
    # A corrupted selection state is named as such, not reported as an unpickling error.
    selection_state = out / "checkpoint-2" / "selection_state.pt"
    selection_state.write_bytes(selection_state.read_bytes()[:100])
    state.write_text(complete)
    with pytest.raises(ValueError, match=re.escape(f"{selection_state} is corrupted or truncated")):
        resumer.train(resume_from_checkpoint=True)


# ---------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize(
    "flag, value, field",
    [("--compute_budget", "-5", "compute_budget"), ("--num_ratio_samples", "1", "num_ratio_samples"),
     ("--reward", "nonsense", "reward"), ("--sigma_init", "0", "sigma_init")],
)
def test_invalid_cli_value_names_the_field_and_writes_nothing(tmp_path, recipe, flag, value, field):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"CADSConfig\.{field} must be"):
        recipe.main([flag, value, "--output_dir", str(out)])
    assert not out.exists()


def test_unparsable_cli_value_names_the_argument(tmp_path, recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        recipe.parse_arguments(["--compute_budget", "lots", "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--compute_budget" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- Hub, no network
@pytest.mark.parametrize(
    "what, load",
    [
        ("tokenizer 'someone/no-such-tokenizer'", lambda r: load_tokenizer("someone/no-such-tokenizer")),
        ("Model 'someone/no-such-model'", lambda r: r.load_model("someone/no-such-model")),
        ("dataset 'someone/no-such-data'", lambda r: load_instruction_records("someone/no-such-data")),
        ("Repository 'someone/no-such-mixture'", lambda r: Mixture.from_pretrained("someone/no-such-mixture")),
    ],
)
def test_hub_id_offline_fails_fast_and_asks_for_a_local_path(monkeypatch, recipe, what, load):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ValueError, match=re.escape(what) + r" is not an existing local path.*offline.*pass a local path"):
        load(recipe)
    assert time.monotonic() - start < 5


def test_hub_unreachable_fails_fast_and_asks_for_a_local_path(monkeypatch, recipe):
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(flag, "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"Model 'someone/model' is not an existing local path and the Hugging Face Hub .* is unreachable .*pass a local path"):
        recipe.load_model("someone/model")
    assert time.monotonic() - start < 10


def test_missing_local_path_that_is_no_hub_id(tmp_path):
    missing = str(tmp_path / "no" / "such" / "tokenizer")
    with pytest.raises(ValueError, match="no such local file or folder, and not a Hub id"):
        load_tokenizer(missing)
    assert not os.path.exists(missing)
