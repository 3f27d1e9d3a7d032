"""Publishing a mixture or an example selection: everything short of the network."""

import json
import os

import pytest
from huggingface_hub import HfApi, ModelCard

from cads_hf import Mixture
from cads_hf.example_selection import ExampleSelection


def _mixture():
    return Mixture(
        ratios={"alpaca_gpt4": 0.93, "alpaca": 0.21},
        compute_budget=20000,
        budget_unit="samples",
        source_sizes={"alpaca_gpt4": 899, "alpaca": 4500},
        seed=3,
        reward="validation",
        base_model="gpt2",
    )


def test_hub_folder_holds_the_mixture_and_a_card_that_parses(tmp_path):
    mixture = _mixture()
    mixture.save_for_hub(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["README.md", "mixture.json"]
    assert Mixture.from_pretrained(str(tmp_path)) == mixture
    card = ModelCard.load(str(tmp_path / "README.md"))
    data = card.data.to_dict()
    assert data["compute_budget"] == 20000 and data["budget_unit"] == "samples"
    assert data["base_model"] == "gpt2" and "cads" in data["tags"]
    assert data["sources"] == [
        {"name": "alpaca_gpt4", "ratio": 0.93, "size": 899},
        {"name": "alpaca", "ratio": 0.21, "size": 4500},
    ]
    assert "| alpaca | 4500 | 0.2100 | 945 |" in card.text


def _selection():
    return ExampleSelection(
        example_ids=[0, 3, 4], dataset_size=6, compute_budget=900, scores=[0.9, 0.1, 0.2, 0.8, 0.7, 0.3],
        strategy="top_k", method="cads-e", base_model="small-cnn",
    )


def test_hub_folder_holds_the_example_selection_and_a_card_that_parses(tmp_path):
    selection = _selection()
    selection.save_for_hub(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["README.md", "example_selection.json"]
    assert ExampleSelection.from_pretrained(str(tmp_path)) == selection
    data = ModelCard.load(str(tmp_path / "README.md")).data.to_dict()
    assert data["compute_budget"] == 900 and data["method"] == "cads-e"
    assert data["dataset_size"] == 6 and data["selected_examples"] == 3 and "coreset" in data["tags"]


@pytest.mark.parametrize(
    "artifact, file_name, check",
    [
        (_mixture, "mixture.json", lambda d: d["ratios"] == {"alpaca_gpt4": 0.93, "alpaca": 0.21}),
        (_selection, "example_selection.json", lambda d: d["example_ids"] == [0, 3, 4]),
    ],
)
def test_push_to_hub_uploads_that_folder(monkeypatch, artifact, file_name, check):
    calls = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        calls["create"] = (repo_id, private, exist_ok)

    def upload_folder(self, repo_id, folder_path, commit_message=None, revision=None, **kwargs):
        calls["upload"] = {
            "repo_id": repo_id,
            "files": {name: open(os.path.join(folder_path, name)).read() for name in os.listdir(folder_path)},
            "message": commit_message,
        }
        return type("CommitInfo", (), {"commit_url": f"https://example.invalid/{repo_id}/commit/1"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = artifact().push_to_hub("someone/mix", private=True)
    assert calls["create"] == ("someone/mix", True, True)
    assert calls["upload"]["repo_id"] == "someone/mix" and url.endswith("/commit/1")
    uploaded = calls["upload"]["files"]
    assert set(uploaded) == {file_name, "README.md"}
    assert check(json.loads(uploaded[file_name]))


def test_from_pretrained_of_a_hub_id_offline_fails_fast_with_advice():
    with pytest.raises(ValueError, match="pass a local path"):
        Mixture.from_pretrained("someone/not-here")
