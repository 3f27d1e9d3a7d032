"""Load instruction-response records from JSON / JSONL files, folders or Hub datasets.

Every source is flattened into one schema (``RECORD_FEATURES``): ``instruction``, ``input``,
``output`` and ``history`` (earlier ``[user, assistant]`` turns, empty for single-turn records).
Understood layouts: Alpaca (``instruction``/``input``/``output``), GPTeacher and Self-Instruct
predictions (answer under ``response``), LLaMA-Factory multi-turn (``history``) and Self-Instruct
tasks (``instances`` lists, one record per instance). Nothing is dropped: a record that does not
fit raises a ``ValueError`` naming its file and line or record index.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from ..hub import require_hub

logger = logging.getLogger(__name__)

RECORD_COLUMNS = ("instruction", "input", "output", "history")
RECORD_FEATURES = datasets.Features(
    {
        "instruction": datasets.Value("string"),
        "input": datasets.Value("string"),
        "output": datasets.Value("string"),
        "history": datasets.List(datasets.List(datasets.Value("string"))),
    }
)
OUTPUT_KEYS = ("output", "response")  # first one present wins
DATA_SUFFIXES = (".json", ".jsonl")
_SOURCE_NAME = re.compile(r"^[\w.-]+$")


def load_instruction_records(path_or_id: str | Path, *, split: str = "train") -> datasets.Dataset:
    """Load one source: a ``.json`` array (or JSON lines), a ``.jsonl`` file, a folder (its
    ``.json``/``.jsonl`` files, not recursive, in sorted order) or a Hub dataset id."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        entries = sorted(path.iterdir())
        files = [p for p in entries if p.is_file() and p.suffix in DATA_SUFFIXES]
        if not files:
            raise ValueError(f"{path}: folder holds no .json or .jsonl file")
        skipped = [p.name for p in entries if p not in files]
        if skipped:
            logger.warning("%s: not reading %d entries that are not .json/.jsonl files: %s", path, len(skipped), skipped)
        records = [record for file in files for record in _read_file(file)]
    elif path.is_file():
        records = _read_file(path)
    elif str(path_or_id).endswith(DATA_SUFFIXES):
        raise ValueError(f"{path_or_id}: no such file")
    else:
        records = _read_hub(str(path_or_id), split)
    logger.info("loaded %d instruction records from %s", len(records), path_or_id)
    columns = {column: [record[column] for record in records] for column in RECORD_COLUMNS}
    return datasets.Dataset.from_dict(columns, features=RECORD_FEATURES)


def parse_source_spec(spec: str) -> tuple[str, str]:
    """Split ``"name=path_or_hub_id"`` into ``(name, path_or_hub_id)``."""
    name, sep, location = spec.partition("=")
    name, location = name.strip(), location.strip()
    if not sep or not location or not _SOURCE_NAME.match(name):
        raise ValueError(
            f"source spec {spec!r}: expected NAME=PATH, where NAME uses letters, digits, '_', '.', '-' "
            "and PATH is a local file/folder or a Hub dataset id"
        )
    return name, location


def load_instruction_sources(specs: Sequence[str]) -> dict[str, datasets.Dataset]:
    """Load several ``name=path`` sources; names must be unique."""
    if not specs:
        raise ValueError("no instruction sources given; pass at least one NAME=PATH")
    locations: dict[str, str] = {}
    for name, location in map(parse_source_spec, specs):
        if name in locations:
            raise ValueError(
                f"source name {name!r} is given twice ({locations[name]!r} and {location!r}); "
                "every source needs a unique name"
            )
        locations[name] = location
    return {name: load_instruction_records(location) for name, location in locations.items()}


def _read_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix not in DATA_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type; expected .json or .jsonl")
    text = path.read_text(encoding="utf-8")
    # A .json file may hold either one array or JSON lines; the first character tells which.
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
        located: Iterable[tuple[str, Any]] = ((f"{path}: record {i}", row) for i, row in enumerate(rows))
    else:
        located = _json_lines(path, text)
    records = [record for where, row in located for record in _normalize(row, where)]
    if not records:
        raise ValueError(f"{path}: file holds no records")
    return records


def _json_lines(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines carry no record
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {lineno}: invalid JSON: {err.msg} (column {err.colno})") from err
        yield f"{path}: line {lineno}", row


def _read_hub(name: str, split: str) -> list[dict[str, Any]]:
    require_hub(name, "dataset")
    rows = datasets.load_dataset(name, split=split)
    records = [record for i, row in enumerate(rows) for record in _normalize(row, f"{name} [{split}] row {i}")]
    if not records:
        raise ValueError(f"{name} [{split}]: Hub dataset holds no records")
    return records


def _normalize(row: Any, where: str) -> list[dict[str, Any]]:
    """Map one raw row to records of the common schema; Self-Instruct tasks give one per instance."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    instruction = _text(row, "instruction", where, required=True)
    if "instances" in row and not any(key in row for key in OUTPUT_KEYS):
        instances = row["instances"]
        if not isinstance(instances, list) or not instances:
            raise ValueError(f"{where}: 'instances' must be a non-empty list")
        return [_record(instruction, instance, f"{where} instance {j}") for j, instance in enumerate(instances)]
    return [_record(instruction, row, where)]


def _record(instruction: str, row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    output_key = next((key for key in OUTPUT_KEYS if row.get(key) is not None), None)
    if output_key is None:
        raise ValueError(f"{where}: missing 'output' (or 'response')")
    return {
        "instruction": instruction,
        "input": _text(row, "input", where, required=False),
        "output": _text(row, output_key, where, required=True),
        "history": _history(row.get("history"), where),
    }


def _text(row: Mapping, key: str, where: str, *, required: bool) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}: missing {key!r}")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _history(value: Any, where: str) -> list[list[str]]:
    if value is None:
        return []
    pairs = value if isinstance(value, list) else None
    if pairs is None or not all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair) for pair in pairs
    ):
        raise ValueError(f"{where}: 'history' must be a list of [user, assistant] string pairs")
    return [list(pair) for pair in pairs]
