"""`HubArtifact`: what the result dataclasses ([`Mixture`], [`ExampleSelection`]) share: the budget and the
provenance of the search, one readable JSON file on disk, loaded back from a folder, a file or a Hub repository,
and published to the Hub with a card."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from .budget import ComputeBudget
from .io import atomic_write_text, read_json

CARD_NAME = "README.md"
FORMAT_VERSION = 1


@dataclass(kw_only=True)
class HubArtifact:
    """Base of the result dataclasses: the fields every result records about its search (keyword-only, so each
    subclass's own fields come first), and the file and Hub I/O. Subclasses set `file_name`, `required_fields` and
    `description`, and write their card in `model_card`.

    Args:
        compute_budget: the budget the selection was learned for.
        budget_unit: `"samples"` or `"tokens"`.
        seed: the seed that fixes which examples the selection keeps.
        reward: the selection reward used in the search.
        surrogate: the surrogate l(n) used, as `LossSurrogate.to_dict()`.
        config: the settings of the search.
        base_model: the model the search ran with.
        metrics: optional results (e.g. validation perplexity of the final model, search cost).
    """

    compute_budget: float
    budget_unit: str = "samples"
    seed: int = 0
    reward: str | None = None
    surrogate: dict | None = None
    config: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    file_name: ClassVar[str]
    required_fields: ClassVar[tuple[str, ...]]
    description: ClassVar[str]  # how messages name the artifact, e.g. "mixture"

    def __post_init__(self):
        ComputeBudget(self.compute_budget, self.budget_unit)  # raises on a bad budget or unit

    @property
    def budget(self) -> ComputeBudget:
        return ComputeBudget(self.compute_budget, self.budget_unit)

    def to_dict(self) -> dict:
        return asdict(self)

    def save_pretrained(self, save_directory: str) -> str:
        """Write the JSON file (atomically) into `save_directory`; returns its path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, self.file_name)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default))
        return path

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str, revision: str | None = None, token: str | None = None):
        """Load from a folder, the JSON file's path, or a Hub repository id."""
        from .hub import resolve_file

        path = resolve_file(path_or_repo_id, cls.file_name, revision=revision, token=token)
        data = read_json(path, what=cls.description)
        missing = [k for k in cls.required_fields if k not in data]
        if missing:
            raise ValueError(f"The {cls.description} file {path} lacks required field(s) {missing}.")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as err:
            raise ValueError(f"The {cls.description} file {path} is invalid: {err}") from err

    def model_card(self) -> str:
        """The README card uploaded beside the JSON file."""
        raise NotImplementedError

    def save_for_hub(self, save_directory: str) -> None:
        """The folder `push_to_hub` uploads: the JSON file and `README.md`."""
        self.save_pretrained(save_directory)
        atomic_write_text(os.path.join(save_directory, CARD_NAME), self.model_card())

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
    ) -> str:
        """Create `repo_id` if needed and upload the JSON file with its card; returns the commit URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_for_hub(folder)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload CADS {self.description}",
                revision=revision,
            )
        return str(getattr(info, "commit_url", info))


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"Cannot serialize {type(value).__name__} in a result file.")
