"""Embedded generated sources: determinism, quality tiers, and that quality shows in a trained model."""

import pytest
import torch

from cads_hf.text import (
    GENERATED_SOURCES,
    RECORD_FEATURES,
    InstructionCollator,
    add_chat_special_tokens,
    build_offline_tokenizer,
    make_generated_sources,
    make_small_gpt2,
    tokenize_instruction_dataset,
)


def correct_answer(instruction, task_input):
    """Independent re-implementation of the generated tasks."""
    if instruction.startswith(("What is the sum", "Subtract")):
        a, b = (int(x) for x in task_input.split(" and "))
        return str(a + b) if instruction.startswith("What is the sum") else str(a - b)
    words = task_input.split()
    return {
        "Reverse the order of the words.": " ".join(words[::-1]),
        "Sort the words alphabetically.": " ".join(sorted(words)),
        "Rewrite the words in upper case.": task_input.upper(),
        "Repeat the words exactly.": task_input,
        "How many words are there?": str(len(words)),
    }[instruction]


def accuracy(ds):
    return sum(r["output"] == correct_answer(r["instruction"], r["input"]) for r in ds) / len(ds)


def test_sources_are_deterministic_sized_and_in_record_schema():
    first = make_generated_sources(seed=5, sizes={"clean": 300, "noisy": 200, "random": 100})
    again = make_generated_sources(seed=5, sizes={"clean": 300, "noisy": 200, "random": 100})
    other = make_generated_sources(seed=6, sizes={"clean": 300})
    assert list(first) == list(GENERATED_SOURCES)
    assert {name: len(ds) for name, ds in first.items()} == {"clean": 300, "noisy": 200, "random": 100}
    assert all(ds.features == RECORD_FEATURES for ds in first.values())
    assert all(first[name].to_list() == again[name].to_list() for name in first)
    assert first["clean"].to_list() != other["clean"].to_list()
    assert len({len(ds) for ds in make_generated_sources().values()}) == 1


def test_quality_tiers_are_distinct():
    sources = make_generated_sources(seed=0, sizes={"clean": 400, "noisy": 400, "random": 400})
    assert accuracy(sources["clean"]) == 1.0
    assert accuracy(sources["noisy"]) == 0.5  # exactly half corrupted, and a corruption is always wrong
    assert accuracy(sources["random"]) < 0.02
    assert set(sources["noisy"]["instruction"]) == set(sources["clean"]["instruction"])


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="unknown generated sources"):
        make_generated_sources(sizes={"perfect": 10})
    with pytest.raises(ValueError, match="positive integers"):
        make_generated_sources(sizes={"clean": 0})


def test_small_gpt2_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = make_small_gpt2(100, seed=1), make_small_gpt2(100, seed=1), make_small_gpt2(100, seed=2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(a.transformer.wte.weight, b.transformer.wte.weight)
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)
    assert a.config.n_layer == 2 and a.config.n_embd == 64 and a.get_input_embeddings().num_embeddings == 100


def test_clean_data_trains_a_better_model_than_random_data():
    sources = make_generated_sources(seed=0, sizes={"clean": 600, "random": 600})
    held_out = make_generated_sources(seed=1, sizes={"clean": 200})["clean"]
    tokenizer = build_offline_tokenizer(
        (" ".join((r["instruction"], r["input"], r["output"])) for ds in sources.values() for r in ds), vocab_size=400
    )
    add_chat_special_tokens(tokenizer)
    collate = InstructionCollator(tokenizer.pad_token_id)

    def tokenized(ds):
        return tokenize_instruction_dataset(ds, tokenizer, 128, system_prompt="")[0].remove_columns("length")

    validation = collate(list(tokenized(held_out)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add contention on a shared CPU
    try:
        losses = {}
        for name in ("clean", "random"):
            train = tokenized(sources[name])
            model = make_small_gpt2(len(tokenizer), seed=0)
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
            order = torch.randint(len(train), (150, 16), generator=torch.Generator().manual_seed(0))
            for rows in order.tolist():
                loss = model(**collate([train[i] for i in rows])).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                losses[name] = model.eval()(**validation).loss.item()
    finally:
        torch.set_num_threads(threads)
    assert losses["clean"] < losses["random"] - 1.0, losses
