"""`HubArtifact`: what the result dataclasses ([`Mixture`], [`ExampleSelection`]) share: one readable JSON file on
disk, loaded back from a folder, a file or a Hub repository, and published to the Hub with a card."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, fields
from typing import ClassVar

from .io import atomic_write_text, read_json

CARD_NAME = "README.md"


class HubArtifact:
    """Mixin for a dataclass result. Subclasses set `file_name`, `required_fields` and `description`, and write
    their card in `model_card`."""

    file_name: ClassVar[str]
    required_fields: ClassVar[tuple[str, ...]]
    description: ClassVar[str]  # how messages name the artifact, e.g. "mixture"

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
