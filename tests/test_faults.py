"""Faults during a run: non-finite losses never reach the selection, and artifact writes are atomic."""

import math
import os

import pytest
import torch
import transformers
from toy import ToyClassifier, toy_sources
from transformers import TrainerCallback

from cads_hf import CADSConfig, CADSTrainer, LossSurrogate, Mixture
from cads_hf.io import atomic_torch_save, atomic_write_text
from cads_hf.trainer import SelectionAbort

transformers.logging.set_verbosity_error()
NAN, INF = float("nan"), float("inf")
ALL = None  # every forward of the step


class PoisonedClassifier(ToyClassifier):
    """Adds NaN or inf to the logits of chosen forward calls of chosen optimizer steps.

    `poison` maps a step (0-based) to (value, calls): the calls of that step to poison, counted from 1 in the order
    the trainer makes them (1: the validation batch, 2: the training batch, 3: the alignment probe), or ALL.
    """

    def __init__(self, poison):
        super().__init__()
        self.poison, self.step, self.calls = poison, -1, 0

    def forward(self, features, labels=None):
        out = super().forward(features, labels)
        self.calls += 1
        value, calls = self.poison.get(self.step, (None, ()))
        if value is not None and (calls is ALL or self.calls in calls):
            out["logits"] = out["logits"] + value
        return out


class Recorder(TrainerCallback):
    """Keeps s after every optimizer step and tells the model which step runs."""

    def __init__(self, trainer):
        self.trainer, self.s = trainer, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.s[0] = self.trainer.policy.s.detach().clone()

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer.model.step, self.trainer.model.calls = state.global_step, 0

    def on_step_end(self, args, state, control, **kwargs):
        self.s[state.global_step] = self.trainer.policy.s.detach().clone()


def search(tmp_path, poison, **overrides):
    sources, validation = toy_sources(sizes=(36, 36, 36), val_size=24)
    values = dict(
        output_dir=str(tmp_path), compute_budget=300, per_device_train_batch_size=12, max_steps=10,
        learning_rate=1e-2, logging_steps=5, report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
        selection_eval_batch_size=8,
    )
    values.update(overrides)
    surrogate = LossSurrogate([10, 50, 108], [0.2, 0.6, 1.0]) if values.get("reward") == "penalty" else None
    trainer = CADSTrainer(
        model=PoisonedClassifier(poison), args=CADSConfig(**values), sources=sources, eval_dataset=validation,
        surrogate=surrogate,
    )
    recorder = Recorder(trainer)
    trainer.add_callback(recorder)
    return trainer, recorder


@pytest.mark.parametrize("reward", ["validation", "penalty"])
def test_nonfinite_steps_are_skipped_counted_and_never_applied(tmp_path, reward):
    poison = {2: (NAN, ALL), 4: (INF, {1}), 6: (NAN, {2})}
    if reward == "validation":
        poison[8] = (NAN, {3})  # only the reward's alignment probe sees the NaN
    trainer, recorder = search(tmp_path, poison, reward=reward)
    trainer.train()

    assert trainer.state.global_step == 10 and sorted(recorder.s) == list(range(11))
    for step in range(10):
        before, after = recorder.s[step], recorder.s[step + 1]
        if step in poison:
            assert torch.equal(after, before), f"s moved on poisoned step {step}"
        else:
            assert not torch.equal(after, before), f"s did not move on clean step {step}"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    logs = [entry for entry in trainer.state.log_history if "selection/skipped_steps" in entry]
    assert [entry["selection/skipped_steps"] for entry in logs] == [2, len(poison)]  # logged at steps 5 and 10
    assert all(math.isfinite(entry["loss"]) for entry in logs)
    # Skipped steps are not selection updates: sigma anneals once per applied update only.
    assert trainer.policy.sigma == pytest.approx(0.1 * 0.99 ** (10 - len(poison)))


def test_nonfinite_loss_stop_raises_selection_abort(tmp_path):
    trainer, recorder = search(tmp_path, {3: (NAN, {1})}, nonfinite_loss="stop")
    with pytest.raises(SelectionAbort, match="Non-finite loss at step 3"):
        trainer.train()
    assert sorted(recorder.s) == [0, 1, 2, 3]
    assert torch.equal(trainer.policy.s.detach(), recorder.s[3])


# ---------------------------------------------------------------------------------------------- atomic writes
def leftovers(folder):
    return [name for name in os.listdir(folder) if name.startswith(".tmp-")]


@pytest.mark.parametrize("interrupt", [OSError("No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("artifact", ["mixture", "surrogate", "selection_state", "text"])
def test_failure_mid_write_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch, artifact, interrupt):
    """The data is in the temporary file when the write fails (at fsync, before the rename)."""
    writers = {
        "mixture": lambda v: Mixture(ratios={"a": v}, compute_budget=100).save_pretrained(str(tmp_path)),
        "surrogate": lambda v: LossSurrogate([10, 20], [1.0, v]).save(str(tmp_path)),
        "selection_state": lambda v: atomic_torch_save({"s": torch.full((3,), v)}, str(tmp_path / "selection_state.pt")),
        "text": lambda v: atomic_write_text(str(tmp_path / "notes.txt"), f"value {v}\n" * 1000),
    }
    writers[artifact](0.25)
    (path,) = [tmp_path / name for name in os.listdir(tmp_path)]
    previous = path.read_bytes()
    seen = []

    def failing_fsync(fd):
        seen.append(os.fstat(fd).st_size)
        raise interrupt

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(type(interrupt)):
        writers[artifact](0.75)
    assert seen and seen[0] > 0  # the new content had been written to the temporary file
    assert path.read_bytes() == previous
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    writers[artifact](0.75)
    assert path.read_bytes() != previous and leftovers(tmp_path) == []


def test_failure_while_serializing_keeps_the_previous_file(tmp_path):
    path = tmp_path / "selection_state.pt"
    atomic_torch_save({"s": torch.ones(3)}, str(path))
    with pytest.raises(Exception):  # a lambda cannot be pickled: torch.save fails part-way through the file
        atomic_torch_save({"s": torch.zeros(100_000), "bad": lambda: 0}, str(path))
    torch.testing.assert_close(torch.load(path)["s"], torch.ones(3))
    assert leftovers(tmp_path) == []
