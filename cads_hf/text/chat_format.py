"""Serialize instruction records into token ids with prompt-masked labels (paper, Appendix B.5).

Layout of one example (role markers and eos are single special tokens)::

    <system>{system prompt}\\n\\n
    <user>{history user 1}\\n\\n<assistant>{history answer 1}<eos>      (one pair per history turn)
    <user>{instruction}[\\n\\n{input}]\\n\\n<assistant>{output}<eos>

Labels are ``IGNORE_INDEX`` on the system and user segments and on the ``<assistant>`` marker, so
the loss covers only answers and their ``<eos>``. Earlier assistant turns from ``history`` are
learned too: they are real answers to real prompts, and learning them keeps the ``<eos>`` after
each turn meaningful. Segments are tokenized separately and their ids concatenated, so BPE merges
can never move the prompt/answer boundary.
"""

from __future__ import annotations

import logging
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SYSTEM_TOKEN = "<system>"
USER_TOKEN = "<user>"
ASSISTANT_TOKEN = "<assistant>"
ROLE_TOKENS = (SYSTEM_TOKEN, USER_TOKEN, ASSISTANT_TOKEN)
PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
IGNORE_INDEX = -100
DEFAULT_SYSTEM_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
TOKENIZED_COLUMNS = ("input_ids", "attention_mask", "labels", "length")
# Fixed schema, so tokenized sources can always be concatenated (inferred int widths may differ).
TOKENIZED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "attention_mask": datasets.List(datasets.Value("int8")),
        "labels": datasets.List(datasets.Value("int32")),
        "length": datasets.Value("int32"),
    }
)


def add_chat_special_tokens(tokenizer: PreTrainedTokenizerBase, model: Any = None) -> int:
    """Add the pad, eos (each only if missing) and role tokens; grow ``model``'s embeddings to match.

    Returns the number of tokens added to the vocabulary. Calling it twice adds nothing.
    """
    if model is not None:
        try:  # before the tokenizer changes, so that a model that cannot take the tokens leaves it untouched
            model.get_input_embeddings().num_embeddings, model.resize_token_embeddings  # noqa: B018
        except (AttributeError, NotImplementedError) as err:
            raise ValueError(
                f"{type(model).__name__} cannot take the chat special tokens: it has no resizable token "
                f"embeddings ({err})"
            ) from err
    new_tokens: dict[str, Any] = {"extra_special_tokens": list(ROLE_TOKENS)}
    if tokenizer.pad_token is None:
        new_tokens["pad_token"] = PAD_TOKEN
    if tokenizer.eos_token is None:
        new_tokens["eos_token"] = EOS_TOKEN
    added = tokenizer.add_special_tokens(new_tokens, replace_extra_special_tokens=False)
    if model is not None:
        try:
            # Only grow: some checkpoints pad their embedding matrix beyond the tokenizer's size.
            if model.get_input_embeddings().num_embeddings < len(tokenizer):
                model.resize_token_embeddings(len(tokenizer))
        except (AttributeError, NotImplementedError) as err:
            raise ValueError(
                f"{type(model).__name__} cannot take the chat special tokens: resizing its token "
                f"embeddings to {len(tokenizer)} failed ({err})"
            ) from err
        # generate() reads generation_config, the loss and padding logic read config.
        for config in (model.config, getattr(model, "generation_config", None)):
            if config is not None:
                config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    return added


def tokenize_instruction_dataset(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    *,
    name: str | None = None,
) -> tuple[datasets.Dataset, int]:
    """Tokenize records into ``input_ids``, ``attention_mask``, ``labels`` and ``length``.

    Examples longer than ``max_length`` tokens are discarded (not truncated); returns the
    tokenized dataset and the number discarded. ``name`` labels the source in the log.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    role_ids = [_special_id(tokenizer, token) for token in ROLE_TOKENS]
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token; call add_chat_special_tokens(tokenizer) first")
    prefix = [role_ids[0], *_encode(tokenizer, [system_prompt + "\n\n"])[0]]
    tokenized = dataset.map(
        _encode_batch,
        batched=True,
        remove_columns=dataset.column_names,
        features=TOKENIZED_FEATURES,
        fn_kwargs={
            "tokenizer": tokenizer,
            "prefix": prefix,
            "user_id": role_ids[1],
            "assistant_id": role_ids[2],
            "max_length": max_length,
        },
        desc=f"tokenizing {name or 'instructions'}",
    )
    n_discarded = len(dataset) - len(tokenized)
    logger.info(
        "%s: kept %d examples, discarded %d longer than %d tokens",
        name or "dataset", len(tokenized), n_discarded, max_length,
    )
    return tokenized, n_discarded


def _special_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    # Unknown tokens map to the unk id (GPT-2: eos), so check the round trip.
    if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
        raise ValueError(f"tokenizer has no {token!r} token; call add_chat_special_tokens(tokenizer, model) first")
    return token_id


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    # split_special_tokens: a literal "<user>" inside data must not become a role marker.
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _encode_batch(
    batch: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    prefix: list[int],
    user_id: int,
    assistant_id: int,
    max_length: int,
) -> dict[str, list]:
    n_rows = len(batch["instruction"])
    histories = batch.get("history") or [[]] * n_rows
    inputs = batch.get("input") or [""] * n_rows
    turn_counts, texts = [], []
    for instruction, extra, output, history in zip(batch["instruction"], inputs, batch["output"], histories):
        user = f"{instruction}\n\n{extra}" if extra else instruction
        turns = [*history, (user, output)]
        turn_counts.append(len(turns))
        for user_text, answer in turns:
            texts += [user_text + "\n\n", answer]
    pieces = iter(_encode(tokenizer, texts))  # one tokenizer call per batch, consumed in order
    eos_id = tokenizer.eos_token_id
    out: dict[str, list] = {column: [] for column in TOKENIZED_COLUMNS}
    for n_turns in turn_counts:
        input_ids, labels = list(prefix), [IGNORE_INDEX] * len(prefix)
        for _ in range(n_turns):
            prompt = [user_id, *next(pieces), assistant_id]
            answer = [*next(pieces), eos_id]
            input_ids += prompt + answer
            labels += [IGNORE_INDEX] * len(prompt) + answer
        if len(input_ids) > max_length:
            continue
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
        out["length"].append(len(input_ids))
    return out
