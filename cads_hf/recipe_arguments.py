"""Command-line parsing shared by the recipes: their own defaults under the user's flags, and CPU runs that work
under `accelerate launch`."""

from __future__ import annotations

import torch
from transformers import HfArgumentParser


def parse_with_defaults(dataclass_types: tuple, argv: list[str], defaults: dict[str, str | list[str]]) -> tuple:
    """Parse `argv` into `dataclass_types` with HfArgumentParser, adding each `defaults` flag the user did not give
    (a list value for a flag that takes several, e.g. `--proxy_fractions`).

    Without CUDA, `--use_cpu True` is a default as well: without it Trainer sets up no CPU process group, and each
    of N launched processes would train alone."""
    defaults = dict(defaults)
    if not torch.cuda.is_available():
        defaults.setdefault("--use_cpu", "True")
    given = {arg.split("=")[0] for arg in argv if arg.startswith("--")}
    for flag, value in defaults.items():
        if flag not in given:
            argv = [*argv, flag, *([value] if isinstance(value, str) else value)]
    return HfArgumentParser(dataclass_types).parse_args_into_dataclasses(args=argv)
