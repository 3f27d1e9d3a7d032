"""Instruction-tuning data pipeline: load, serialize with role tokens, mask prompts, split, collate."""

from .chat_format import (
    ASSISTANT_TOKEN,
    DEFAULT_SYSTEM_PROMPT,
    EOS_TOKEN,
    IGNORE_INDEX,
    PAD_TOKEN,
    ROLE_TOKENS,
    SYSTEM_TOKEN,
    TOKENIZED_COLUMNS,
    USER_TOKEN,
    add_chat_special_tokens,
    tokenize_instruction_dataset,
)
from .collator import InstructionCollator
from .generated import GENERATED_SOURCES, make_generated_sources, make_small_gpt2
from .loading import (
    RECORD_COLUMNS,
    RECORD_FEATURES,
    load_instruction_records,
    load_instruction_sources,
    parse_source_spec,
)
from .splits import SPLIT_NAMES, split_dataset
from .tokenizer import build_offline_tokenizer, load_tokenizer

__all__ = [
    "ASSISTANT_TOKEN",
    "DEFAULT_SYSTEM_PROMPT",
    "EOS_TOKEN",
    "GENERATED_SOURCES",
    "IGNORE_INDEX",
    "PAD_TOKEN",
    "RECORD_COLUMNS",
    "RECORD_FEATURES",
    "ROLE_TOKENS",
    "SPLIT_NAMES",
    "SYSTEM_TOKEN",
    "TOKENIZED_COLUMNS",
    "USER_TOKEN",
    "InstructionCollator",
    "add_chat_special_tokens",
    "build_offline_tokenizer",
    "load_instruction_records",
    "load_instruction_sources",
    "load_tokenizer",
    "make_generated_sources",
    "make_small_gpt2",
    "parse_source_spec",
    "split_dataset",
    "tokenize_instruction_dataset",
]
