"""Embedded offline default: generated instruction sources of known quality and a tiny GPT-2.

Three sources share one task family (arithmetic, reversing / sorting / upper-casing / copying /
counting words) and differ only in answer quality:

* ``clean``: every answer is correct;
* ``noisy``: exactly half of the answers (chosen at random) are plausibly wrong: a number off by
  a few, or one word replaced;
* ``random``: answers are random words unrelated to the instruction.

Each source draws its own tasks from a seed derived from (``seed``, source name), so the output is
deterministic and sources do not share examples by construction.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import datasets
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .loading import RECORD_COLUMNS, RECORD_FEATURES

GENERATED_SOURCES = ("clean", "noisy", "random")
DEFAULT_SIZES = {"clean": 1000, "noisy": 1000, "random": 1000}
WORDS = (
    "apple river stone cloud green bright table window garden silver music paper orange candle forest "
    "winter summer yellow rabbit planet ocean mountain coffee pencil basket little quiet circle "
    "dragon engine bottle mirror ladder rocket tiger violet wooden castle harbor island jacket kitten "
    "lemon marble needle pillow pocket puzzle saddle shadow spider thunder tunnel velvet wagon zebra"
).split()


def _word_task(rng: random.Random) -> tuple[str, str, str]:
    words = rng.sample(WORDS, rng.randint(3, 6))
    instruction, solve = rng.choice(_WORD_TASKS)
    return instruction, " ".join(words), solve(words)


def _number_task(rng: random.Random) -> tuple[str, str, str]:
    a, b = sorted(rng.sample(range(10, 100), 2), reverse=True)
    if rng.random() < 0.5:
        return "What is the sum of the two numbers?", f"{a} and {b}", str(a + b)
    return "Subtract the second number from the first.", f"{a} and {b}", str(a - b)


_WORD_TASKS: tuple[tuple[str, Callable[[list[str]], str]], ...] = (
    ("Reverse the order of the words.", lambda w: " ".join(reversed(w))),
    ("Sort the words alphabetically.", lambda w: " ".join(sorted(w))),
    ("Rewrite the words in upper case.", lambda w: " ".join(w).upper()),
    ("Repeat the words exactly.", lambda w: " ".join(w)),
    ("How many words are there?", lambda w: str(len(w))),
)


def _corrupt(answer: str, rng: random.Random) -> str:
    """A wrong answer that still looks like the right kind of answer."""
    if answer.isdigit():
        return str(int(answer) + rng.choice([-3, -2, -1, 1, 2, 3]))
    words = answer.split()
    i = rng.randrange(len(words))
    replacement = rng.choice([w for w in WORDS if w.upper() != words[i].upper()])
    words[i] = replacement.upper() if words[i].isupper() else replacement
    return " ".join(words)


def _records(name: str, size: int, seed: int) -> list[dict]:
    rng = random.Random(f"cads_hf.generated/{name}/{seed}")  # str seeds are stable across runs
    corrupted = set(rng.sample(range(size), size // 2)) if name == "noisy" else set()
    records = []
    for i in range(size):
        instruction, task_input, answer = (_number_task if rng.random() < 0.4 else _word_task)(rng)
        if name == "random":
            answer = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
        elif i in corrupted:
            answer = _corrupt(answer, rng)
        records.append({"instruction": instruction, "input": task_input, "output": answer, "history": []})
    return records


def make_generated_sources(seed: int = 0, sizes: Mapping[str, int] | None = None) -> dict[str, datasets.Dataset]:
    """Generated sources in the ``load_instruction_records`` schema; ``sizes`` maps a subset of
    ``GENERATED_SOURCES`` to record counts (default ``DEFAULT_SIZES``)."""
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    unknown = set(sizes) - set(GENERATED_SOURCES)
    if unknown:
        raise ValueError(f"unknown generated sources {sorted(unknown)}; choose from {GENERATED_SOURCES}")
    if any(not isinstance(n, int) or n < 1 for n in sizes.values()):
        raise ValueError(f"sizes must be positive integers, got {sizes}")
    sources = {}
    for name, size in sizes.items():
        records = _records(name, size, seed)
        columns = {column: [r[column] for r in records] for column in RECORD_COLUMNS}
        sources[name] = datasets.Dataset.from_dict(columns, features=RECORD_FEATURES)
    return sources


def make_small_gpt2(
    vocab_size: int, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, n_positions: int = 256, seed: int = 0, **config_kwargs
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 built from a config (no download); initialisation depends only
    on ``seed`` and leaves the global torch RNG untouched. Special-token ids default to ``None``
    (GPT-2's own 50256 rarely fits a small vocabulary); ``add_chat_special_tokens`` sets pad/eos."""
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        config_kwargs.setdefault(key, None)
    config = GPT2Config(
        vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions, **config_kwargs
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)
