"""Tokenizer construction: pretrained (local folder, GGUF file or Hub id) or trained offline."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..hub import require_hub

OFFLINE_EOS_TOKEN = "<|endoftext|>"  # GPT-2's, so offline and GPT-2 tokenizers behave alike
# Files that let AutoTokenizer pick the tokenizer class by itself.
_AUTO_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local folder, a ``.gguf`` file or a Hub id.

    A folder holding only GPT-2 style ``vocab.json`` + ``merges.txt`` is read as a GPT-2
    byte-level BPE tokenizer (AutoTokenizer cannot tell the class from those files alone).
    """
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"{path}: no such GGUF file")
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if path.is_dir():
        if any((path / name).is_file() for name in _AUTO_FILES):
            return AutoTokenizer.from_pretrained(str(path))
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return GPT2TokenizerFast.from_pretrained(str(path))
        raise ValueError(
            f"{path}: folder holds no tokenizer files (expected one of {', '.join(_AUTO_FILES)}, "
            "or vocab.json + merges.txt)"
        )
    if path.exists():
        raise ValueError(f"{path}: not a tokenizer folder or .gguf file")
    require_hub(str(name_or_path), "tokenizer")
    return AutoTokenizer.from_pretrained(str(name_or_path))


def build_offline_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer on ``texts`` (no network); eos is ``<|endoftext|>``."""
    if vocab_size <= 257:
        raise ValueError(f"vocab_size must exceed the 256 byte symbols plus eos, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[OFFLINE_EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=OFFLINE_EOS_TOKEN)
