"""`Mixture`: the learned source ratios for one compute budget, as a small artifact to save, load and publish.

On disk it is one readable `mixture.json`; on the Hub it is that file plus a README card whose YAML metadata lists
the budget and each source's size and ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from .artifact import HubArtifact

MIXTURE_NAME = "mixture.json"


@dataclass
class Mixture(HubArtifact):
    """Ratio r_j of each named source: train on the fraction r_j of source j for exactly `compute_budget`.

    Args:
        ratios: source name -> ratio in [0, 1].
        source_sizes: source name -> number of examples the ratios apply to.
        compute_budget, budget_unit, seed, ...: keyword-only, see [`HubArtifact`]; `seed` fixes which examples a
            ratio keeps (`cads_hf.sources.selected_indices`).
    """

    ratios: dict[str, float]
    source_sizes: dict[str, int] = field(default_factory=dict)

    file_name: ClassVar[str] = MIXTURE_NAME
    required_fields: ClassVar[tuple[str, ...]] = ("ratios", "compute_budget")
    description: ClassVar[str] = "mixture"

    def __post_init__(self):
        super().__post_init__()
        if not self.ratios:
            raise ValueError("A Mixture needs at least one source ratio.")
        for name, ratio in self.ratios.items():
            if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
                raise ValueError(f"Ratio of source {name!r} must be a number in [0, 1], got {ratio!r}.")
        unknown = set(self.source_sizes) - set(self.ratios)
        if unknown:
            raise ValueError(f"source_sizes names sources without a ratio: {sorted(unknown)}.")

    def selected_sizes(self) -> dict[str, int]:
        """Examples the mixture keeps from each source."""
        return {name: int(round(self.ratios[name] * size)) for name, size in self.source_sizes.items()}

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
