"""The pipeline on the real shared data: GPT-2 tokenizer, Alpaca-family files, LIMA, Self-Instruct.

The data live outside the repository (``$CADS_SHARED_DATA`` or ``../shared/data``); every test is
skipped where they are absent.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from cads_hf.text import (
    IGNORE_INDEX,
    add_chat_special_tokens,
    load_instruction_records,
    load_instruction_sources,
    load_tokenizer,
    make_small_gpt2,
    tokenize_instruction_dataset,
)

DATA = Path(os.environ.get("CADS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
INSTRUCT = DATA / "instruct"
GPT2_DIR = DATA / "tokenizers" / "gpt2"
ALPACA = INSTRUCT / "alpaca_davinci003" / "alpaca_5000.json"
ALPACA_GPT4 = INSTRUCT / "alpaca_gpt4_en" / "alpaca_en_demo.json"


def need(*paths):
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared data not found: {', '.join(missing)}")


@pytest.fixture(scope="module")
def gpt2():
    need(GPT2_DIR / "vocab.json", GPT2_DIR / "merges.txt")
    tokenizer = load_tokenizer(GPT2_DIR)
    add_chat_special_tokens(tokenizer)
    return tokenizer


def learned_ids(example):
    return [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]


def test_gpt2_tokenizer_from_vocab_and_merges_folder():
    need(GPT2_DIR / "vocab.json", GPT2_DIR / "merges.txt")
    tokenizer = load_tokenizer(GPT2_DIR)
    assert len(tokenizer) == 50257 and tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    model = make_small_gpt2(len(tokenizer))
    assert add_chat_special_tokens(tokenizer, model) == 4
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == 50261


def test_alpaca_and_alpaca_gpt4_load_as_two_sources():
    need(ALPACA, ALPACA_GPT4)
    sources = load_instruction_sources([f"alpaca={ALPACA}", f"alpaca_gpt4={ALPACA_GPT4}"])
    assert {name: len(ds) for name, ds in sources.items()} == {"alpaca": 5000, "alpaca_gpt4": 999}
    assert all(h == [] for h in sources["alpaca"]["history"])


@pytest.mark.parametrize(
    "relative, expected_rows, expected_with_history",
    [
        ("gpteacher_codegen/codegen-instruct.json", 4535, 0),  # answers under "response"
        ("code_alpaca/code_alpaca_2k.json", 2017, 0),
        ("lima/lima.json", 1029, 29),
        ("self_instruct", 175 + 252, 0),  # seed + user-oriented tasks, one instance each
        ("self_instruct/predictions", 3 * 252, 0),
    ],
)
def test_other_sources_load_completely(relative, expected_rows, expected_with_history):
    need(INSTRUCT / relative)
    ds = load_instruction_records(INSTRUCT / relative)
    assert len(ds) == expected_rows
    assert sum(bool(h) for h in ds["history"]) == expected_with_history


def test_response_is_learned_token_for_token_on_a_real_record(gpt2):
    need(ALPACA)
    ds = load_instruction_records(ALPACA)
    record_index = next(i for i, r in enumerate(ds) if r["input"] and len(r["output"]) > 40)
    record = ds[record_index]
    example = tokenize_instruction_dataset(ds.select([record_index]), gpt2, 1024)[0][0]
    assert gpt2.decode(learned_ids(example)) == record["output"] + gpt2.eos_token
    n_prompt = next(i for i, label in enumerate(example["labels"]) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in example["labels"][:n_prompt])
    assert gpt2.decode(example["input_ids"][:n_prompt]).endswith(f"{record['input']}\n\n<assistant>")


def test_lima_multi_turn_learns_every_answer(gpt2):
    need(INSTRUCT / "lima" / "lima.json")
    ds = load_instruction_records(INSTRUCT / "lima" / "lima.json")
    index = min((i for i, h in enumerate(ds["history"]) if h), key=lambda i: len(str(ds[i])))
    record = ds[index]
    example = tokenize_instruction_dataset(ds.select([index]), gpt2, 100_000)[0][0]
    answers = [answer for _, answer in record["history"]] + [record["output"]]
    assert gpt2.decode(learned_ids(example)) == gpt2.eos_token.join(answers) + gpt2.eos_token


def test_overlong_real_examples_are_discarded_and_counted(gpt2):
    need(ALPACA_GPT4)
    ds = load_instruction_records(ALPACA_GPT4)
    full, none_discarded = tokenize_instruction_dataset(ds, gpt2, 100_000)
    assert none_discarded == 0 and len(full) == 999
    kept, discarded = tokenize_instruction_dataset(ds, gpt2, 256, name="alpaca_gpt4")
    expected = sum(n > 256 for n in full["length"])
    assert 0 < discarded == expected and len(kept) == 999 - expected
    assert max(kept["length"]) <= 256


@pytest.mark.slow
def test_short_cads_search_over_alpaca_and_alpaca_gpt4_with_a_token_budget(gpt2, tmp_path):
    """The two real sources, the real GPT-2 tokenizer, a token budget: a short search runs and learns both ratios."""
    import torch

    from cads_hf import CADSConfig, CADSTrainer
    from cads_hf.text import InstructionCollator

    need(ALPACA, ALPACA_GPT4)
    sources = {}
    for name, path in (("alpaca", ALPACA), ("alpaca_gpt4", ALPACA_GPT4)):
        records = load_instruction_records(path).select(range(120))
        sources[name], _ = tokenize_instruction_dataset(records, gpt2, max_length=96, name=name)
    validation = sources["alpaca_gpt4"].select(range(16))
    model = make_small_gpt2(len(gpt2), n_layer=1, n_embd=32, n_head=2)
    add_chat_special_tokens(gpt2, model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = CADSConfig(
            output_dir=str(tmp_path), compute_budget=20_000, budget_unit="tokens", per_device_train_batch_size=4,
            max_steps=6, learning_rate=1e-3, selection_eval_batch_size=4, report_to="none", save_strategy="no",
            disable_tqdm=True, use_cpu=True, logging_steps=3,
        )
        trainer = CADSTrainer(
            model=model, args=args, sources=sources, eval_dataset=validation,
            data_collator=InstructionCollator(gpt2.pad_token_id), processing_class=gpt2,
        )
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    mixture = trainer.mixture()
    assert set(mixture.ratios) == {"alpaca", "alpaca_gpt4"} and mixture.budget_unit == "tokens"
    assert all(0.0 <= r <= 1.0 for r in mixture.ratios.values()) and mixture.ratios != {"alpaca": 0.5, "alpaca_gpt4": 0.5}
    logged = [entry for entry in trainer.state.log_history if "selection/ratio/alpaca" in entry]
    assert logged and all(entry["selection/skipped_steps"] == 0 for entry in logged)
