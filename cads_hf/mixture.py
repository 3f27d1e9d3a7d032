"""`Mixture`: the learned source ratios for one compute budget, as a small artifact to save, load and publish.

On disk it is one readable `mixture.json`; on the Hub it is that file plus a README card whose YAML metadata lists
the budget and each source's size and ratio.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from .io import atomic_write_text, read_json

MIXTURE_NAME = "mixture.json"
CARD_NAME = "README.md"
FORMAT_VERSION = 1


@dataclass
class Mixture:
    """Ratio r_j of each named source: train on the fraction r_j of source j for exactly `compute_budget`.

    Args:
        ratios: source name -> ratio in [0, 1].
        compute_budget: the budget the ratios were learned for.
        budget_unit: `"samples"` or `"tokens"`.
        source_sizes: source name -> number of examples the ratios apply to.
        seed: the seed that fixes which examples a ratio keeps (`cads_hf.sources.selected_indices`).
        reward: the selection reward used in the search.
        surrogate: the surrogate l(n) used, as `LossSurrogate.to_dict()`.
        config: the selection settings of the search.
        base_model: the model the search ran with.
        metrics: optional results (e.g. validation perplexity of the final model).
    """

    ratios: dict[str, float]
    compute_budget: float
    budget_unit: str = "samples"
    source_sizes: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    reward: str | None = None
    surrogate: dict | None = None
    config: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if not self.ratios:
            raise ValueError("A Mixture needs at least one source ratio.")
        for name, ratio in self.ratios.items():
            if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
                raise ValueError(f"Ratio of source {name!r} must be a number in [0, 1], got {ratio!r}.")
        unknown = set(self.source_sizes) - set(self.ratios)
        if unknown:
            raise ValueError(f"source_sizes names sources without a ratio: {sorted(unknown)}.")
        if self.budget_unit not in ("samples", "tokens"):
            raise ValueError(f"budget_unit must be 'samples' or 'tokens', got {self.budget_unit!r}.")

    def selected_sizes(self) -> dict[str, int]:
        """Examples the mixture keeps from each source."""
        return {name: int(round(self.ratios[name] * size)) for name, size in self.source_sizes.items()}

    def to_dict(self) -> dict:
        return asdict(self)

    # ---------------------------------------------------------------------------------------------- local files
    def save_pretrained(self, save_directory: str) -> str:
        """Write `mixture.json` (atomically) into `save_directory`; returns its path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, MIXTURE_NAME)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default))
        return path

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str, revision: str | None = None, token: str | None = None) -> Mixture:
        """Load from a folder, a `mixture.json` path, or a Hub repository id."""
        from .hub import resolve_file

        path = resolve_file(path_or_repo_id, MIXTURE_NAME, revision=revision, token=token)
        data = read_json(path, what="mixture")
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("ratios", "compute_budget") if k not in data]
        if missing:
            raise ValueError(f"The mixture file {path} lacks required field(s) {missing}.")
        return cls(**{k: v for k, v in data.items() if k in known})

    # -------------------------------------------------------------------------------------------------- the Hub
    def model_card(self) -> str:
        """A README card: YAML metadata (budget, unit, sources with sizes and ratios, base model, tags) and prose."""
        from huggingface_hub import ModelCard, ModelCardData

        sources = [
            {"name": name, "ratio": round(float(ratio), 6), "size": int(self.source_sizes.get(name, 0))}
            for name, ratio in self.ratios.items()
        ]
        data = ModelCardData(
            tags=["cads", "data-selection", "data-mixture"],
            base_model=self.base_model,
            compute_budget=self.compute_budget,
            budget_unit=self.budget_unit,
            sources=sources,
        )
        rows = "\n".join(
            f"| {s['name']} | {s['size']} | {s['ratio']:.4f} | {int(round(s['ratio'] * s['size']))} |" for s in sources
        )
        content = (
            f"---\n{data.to_yaml()}\n---\n\n"
            "# Learned data mixture (CADS-S)\n\n"
            f"Source ratios learned by [cads_hf](https://github.com/) for a compute budget of "
            f"{self.compute_budget:g} {self.budget_unit}: train on the fraction *ratio* of each source for exactly "
            "that budget.\n\n| source | size | ratio | examples kept |\n|---|---|---|---|\n"
            f"{rows}\n\n"
            "```python\nfrom cads_hf import Mixture\nmixture = Mixture.from_pretrained(\"<this repo>\")\n```\n"
        )
        return str(ModelCard(content))

    def save_for_hub(self, save_directory: str) -> None:
        """The folder `push_to_hub` uploads: `mixture.json` and `README.md`."""
        self.save_pretrained(save_directory)
        atomic_write_text(os.path.join(save_directory, CARD_NAME), self.model_card())

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload CADS mixture",
        revision: str | None = None,
    ) -> str:
        """Create `repo_id` if needed and upload `mixture.json` with its card; returns the commit URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_for_hub(folder)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision
            )
        return str(getattr(info, "commit_url", info))


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"Cannot serialize {type(value).__name__} in a mixture.")
