"""Atomic artifact writes, readable errors for corrupted artifacts, and finding the checkpoint to resume from."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile

import torch

logger = logging.getLogger(__name__)


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


TRAINER_STATE_NAME = "trainer_state.json"  # transformers writes it last, after weights, optimizer and RNG states
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_problem(checkpoint: str) -> str | None:
    """Why `checkpoint` cannot be resumed from (a run killed while saving it leaves it incomplete), or None."""
    state = os.path.join(checkpoint, TRAINER_STATE_NAME)
    if not os.path.isfile(state):
        return f"it has no {TRAINER_STATE_NAME} (the run was interrupted while saving it)"
    try:
        with open(state, encoding="utf-8") as f:
            json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"its {TRAINER_STATE_NAME} is truncated or corrupted ({err})"
    return None


def last_complete_checkpoint(output_dir: str) -> str:
    """The `checkpoint-N` folder of `output_dir` with the highest N that was completely written.

    `Trainer(resume_from_checkpoint=True)` takes the highest N even when a kill interrupted its saving; resuming from
    it would fail, or worse, silently restart from step 0 with some of the newer state loaded.
    """
    steps = sorted(
        (int(m.group(1)), name)
        for name in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
        if (m := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    skipped = []
    for _, name in reversed(steps):
        path = os.path.join(output_dir, name)
        problem = checkpoint_problem(path)
        if problem is None:
            if skipped:
                logger.warning("Skipping incomplete checkpoint(s) %s; resuming from %s.", "; ".join(skipped), path)
            return path
        skipped.append(f"{name}: {problem}")
    detail = f" (incomplete: {'; '.join(skipped)})" if skipped else ""
    raise ValueError(f"No complete checkpoint to resume from in {output_dir}{detail}.")
