"""Chat serialization, prompt masking, splitting, collation and tokenizer loading (offline tokenizer)."""

import logging
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from cads_hf.text import (
    ASSISTANT_TOKEN,
    EOS_TOKEN,
    IGNORE_INDEX,
    ROLE_TOKENS,
    SYSTEM_TOKEN,
    TOKENIZED_COLUMNS,
    USER_TOKEN,
    InstructionCollator,
    add_chat_special_tokens,
    build_offline_tokenizer,
    load_tokenizer,
    make_small_gpt2,
    split_dataset,
    tokenize_instruction_dataset,
)
from cads_hf.text.chat_format import TOKENIZED_FEATURES

CORPUS = [
    "Translate the sentence into French.\n\nThe cat sleeps on the mat.",
    "Le chat dort sur le tapis.",
    "What is the sum of 12 and 30? The answer is 42.",
    "Write a haiku about autumn leaves falling slowly.",
] * 20


@pytest.fixture()
def tokenizer():
    tok = build_offline_tokenizer(CORPUS, vocab_size=400)
    add_chat_special_tokens(tok)
    return tok


def records(*rows):
    return datasets.Dataset.from_list(
        [{"instruction": i, "input": x, "output": o, "history": h} for i, x, o, h in rows]
    )


def learned_runs(example):
    """Contiguous runs of input ids whose label is not ignored."""
    runs, current = [], []
    for token_id, label in zip(example["input_ids"], example["labels"]):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token_id
            current.append(token_id)
    return runs + ([current] if current else [])


def test_add_chat_special_tokens_adds_pad_and_roles_once_and_grows_model():
    tok = build_offline_tokenizer(CORPUS, vocab_size=400)
    base = len(tok)
    model = make_small_gpt2(base)
    assert add_chat_special_tokens(tok, model) == 4  # pad + three roles; eos already there
    assert len(tok) == base + 4
    assert all(tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(t)) == t for t in ROLE_TOKENS)
    assert set(ROLE_TOKENS) <= set(tok.all_special_tokens)
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id and model.config.eos_token_id == tok.eos_token_id
    assert add_chat_special_tokens(tok, model) == 0


def test_add_chat_special_tokens_adds_eos_when_missing():
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    assert tok.eos_token is None
    assert add_chat_special_tokens(tok) == 5
    assert tok.eos_token == EOS_TOKEN and tok.pad_token is not None


def test_add_chat_special_tokens_rejects_model_without_resizable_embeddings(tokenizer):
    class Frozen(torch.nn.Module):
        def get_input_embeddings(self):
            raise NotImplementedError("no embeddings here")

    with pytest.raises(ValueError, match="Frozen cannot take the chat special tokens"):
        add_chat_special_tokens(tokenizer, Frozen())


def test_tokenizing_requires_chat_tokens():
    tok = build_offline_tokenizer(CORPUS, vocab_size=400)
    with pytest.raises(ValueError, match="add_chat_special_tokens"):
        tokenize_instruction_dataset(records(("a", "", "b", [])), tok, 64)


def test_prompt_is_masked_token_for_token(tokenizer):
    ds = records(("Translate the sentence into French.", "The cat sleeps.", "Le chat dort.", []))
    out, discarded = tokenize_instruction_dataset(ds, tokenizer, 256, system_prompt="Be brief.")
    assert discarded == 0 and out.column_names == list(TOKENIZED_COLUMNS)
    example = out[0]
    assert example["length"] == len(example["input_ids"]) == len(example["labels"])
    assert example["attention_mask"] == [1] * example["length"]
    (answer,) = learned_runs(example)
    assert tokenizer.decode(answer) == "Le chat dort." + tokenizer.eos_token
    prompt = example["input_ids"][: example["length"] - len(answer)]
    assert tokenizer.decode(prompt) == (
        f"{SYSTEM_TOKEN}Be brief.\n\n{USER_TOKEN}Translate the sentence into French.\n\nThe cat sleeps.\n\n{ASSISTANT_TOKEN}"
    )


def test_history_turns_mask_users_and_learn_every_answer(tokenizer):
    ds = records(("q2", "", "a2", [["q1", "a1"]]))
    example = tokenize_instruction_dataset(ds, tokenizer, 256, system_prompt="S")[0][0]
    eos = tokenizer.eos_token
    assert [tokenizer.decode(run) for run in learned_runs(example)] == ["a1" + eos, "a2" + eos]
    assert tokenizer.decode(example["input_ids"]) == (
        f"{SYSTEM_TOKEN}S\n\n{USER_TOKEN}q1\n\n{ASSISTANT_TOKEN}a1{eos}{USER_TOKEN}q2\n\n{ASSISTANT_TOKEN}a2{eos}"
    )


def test_role_markers_inside_data_stay_plain_text(tokenizer):
    ds = records((f"Explain the {USER_TOKEN} tag.", "", f"{ASSISTANT_TOKEN} is markup.", []))
    example = tokenize_instruction_dataset(ds, tokenizer, 512)[0][0]
    user_id, assistant_id = tokenizer.convert_tokens_to_ids([USER_TOKEN, ASSISTANT_TOKEN])
    assert example["input_ids"].count(user_id) == 1 and example["input_ids"].count(assistant_id) == 1
    assert tokenizer.decode(learned_runs(example)[0]) == f"{ASSISTANT_TOKEN} is markup." + tokenizer.eos_token


def test_overlong_examples_are_discarded_counted_and_logged(tokenizer, caplog):
    ds = records(*[("Repeat.", "", "word " * n, []) for n in (1, 5, 20, 40, 80)])
    full, none_discarded = tokenize_instruction_dataset(ds, tokenizer, 10_000)
    assert none_discarded == 0
    max_length = sorted(full["length"])[2]  # keeps exactly three
    with caplog.at_level(logging.INFO, logger="cads_hf.text.chat_format"):
        kept, discarded = tokenize_instruction_dataset(ds, tokenizer, max_length, name="toy")
    assert (len(kept), discarded) == (3, 2)
    assert max(kept["length"]) == max_length
    assert "toy: kept 3 examples, discarded 2 longer than" in caplog.text


def test_tokenized_sources_share_one_schema(tokenizer):
    short, _ = tokenize_instruction_dataset(records(("a", "", "b", [])), tokenizer, 512)
    long, _ = tokenize_instruction_dataset(records(("c " * 30, "d", "e " * 30, [])), tokenizer, 512)
    assert short.features == long.features == TOKENIZED_FEATURES
    assert len(datasets.concatenate_datasets([short, long])) == 2


def test_split_by_ratios_is_a_deterministic_partition():
    ds = datasets.Dataset.from_dict({"idx": list(range(100))})
    parts = split_dataset(ds, seed=3)
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [90, 5, 5]
    ids = {split: list(parts[split]["idx"]) for split in parts}
    assert sorted(ids["train"] + ids["validation"] + ids["test"]) == list(range(100))
    assert list(split_dataset(ds, seed=3)["test"]["idx"]) == ids["test"]
    assert list(split_dataset(ds, seed=4)["test"]["idx"]) != ids["test"]


def test_split_by_sizes_and_its_errors():
    ds = datasets.Dataset.from_dict({"idx": list(range(20))})
    parts = split_dataset(ds, sizes=(10, 3, 2))
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [10, 3, 2]
    assert len(set(parts["train"]["idx"]) | set(parts["validation"]["idx"]) | set(parts["test"]["idx"])) == 15
    with pytest.raises(ValueError, match="need 21 examples but the dataset has 20"):
        split_dataset(ds, sizes=(15, 3, 3))
    with pytest.raises(ValueError, match="three non-negative counts"):
        split_dataset(ds, sizes=(10, 5))
    with pytest.raises(ValueError, match="summing to 1"):
        split_dataset(ds, ratios=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="too few examples"):
        split_dataset(datasets.Dataset.from_dict({"idx": [0, 1]}))


def test_collator_pads_to_longest_and_passes_integer_features():
    collate = InstructionCollator(pad_token_id=7)
    batch = collate([
        {"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": [-100, 2, 3], "source_id": 2, "length": 3},
        {"input_ids": [4], "attention_mask": [1], "labels": [4], "source_id": 0, "length": 1},
    ])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["source_id"].tolist() == [2, 0] and batch["source_id"].dtype == torch.long
    assert batch["length"].tolist() == [3, 1]


def test_collator_pad_to_multiple_missing_mask_and_bad_features():
    collate = InstructionCollator(pad_token_id=0, pad_to_multiple_of=4)
    batch = collate([{"input_ids": torch.tensor([5, 6, 7, 8, 9]), "example_id": torch.tensor(11)}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0]]
    assert "labels" not in batch and batch["example_id"].tolist() == [11]
    with pytest.raises(TypeError, match="feature 'text'"):
        collate([{"input_ids": [1], "text": "raw"}])
    with pytest.raises(ValueError, match="pad_token_id is None"):
        InstructionCollator(pad_token_id=None)


def test_collated_batch_trains_a_small_gpt2(tokenizer):
    tokenized, _ = tokenize_instruction_dataset(
        records(("Sum 12 and 30.", "", "42", []), ("Write a haiku.", "", "Leaves fall slowly down.", [])), tokenizer, 128
    )
    model = make_small_gpt2(len(tokenizer))
    batch = InstructionCollator(tokenizer.pad_token_id)([dict(row) for row in tokenized])
    batch.pop("length")
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and model.transformer.wte.weight.grad is not None


def test_load_tokenizer_from_saved_folder_and_errors(tokenizer, tmp_path, monkeypatch):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    text = f"{USER_TOKEN}What is the sum of 12 and 30?"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no tokenizer files"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(ValueError, match="no such GGUF file"):
        load_tokenizer(tmp_path / "model.gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ValueError, match="tokenizer 'gpt2' is not an existing local path.*offline"):
        load_tokenizer("gpt2")
    assert time.monotonic() - start < 5


def test_offline_tokenizer_round_trips_any_text():
    tok = build_offline_tokenizer(CORPUS, vocab_size=300)
    text = "Unseen wörds, digits 9876 and emoji 🙂!"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token == "<|endoftext|>" and len(tok) <= 300
    with pytest.raises(ValueError, match="vocab_size"):
        build_offline_tokenizer(CORPUS, vocab_size=100)
