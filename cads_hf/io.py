"""Atomic artifact writes and readable errors for corrupted artifacts."""

from __future__ import annotations

import json
import os
import tempfile

import torch


def _atomic_replace(path: str, write) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename it over `path`.

    A crash mid-write leaves the previous file (or none), never a truncated one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    _atomic_replace(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj, path: str) -> None:
    _atomic_replace(path, lambda f: torch.save(obj, f))


def read_json(path: str, what: str) -> dict:
    """Parse a JSON artifact, naming the file and the artifact kind when it is missing or corrupted."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {what} file at {path}.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"The {what} file {path} is corrupted or truncated: {err}.") from err
    if not isinstance(data, dict):
        raise ValueError(f"The {what} file {path} must hold a JSON object, found {type(data).__name__}.")
    return data
