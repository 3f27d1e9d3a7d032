"""A search killed with SIGKILL and resumed from its last checkpoint ends exactly where an uninterrupted one does.

The slow test kills real processes; the quick ones resume in-process, for every reward.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("resumable_search.py")
sys.path.insert(0, str(SCRIPT.parent))
from resumable_search import MAX_STEPS, SAVE_STEPS, build_trainer  # noqa: E402

TIMEOUT_S = 120


def launch(output_dir, *flags):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SCRIPT.parents[1])}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(output_dir), *flags],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(process):
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output
    return output


def kill_when_paused(process, output_dir):
    """Wait until the run reports that it paused, then SIGKILL it: no handler, no cleanup, like a lost node."""
    marker = Path(output_dir) / "paused"
    deadline = time.monotonic() + TIMEOUT_S
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before it paused:\n{process.communicate()[0]}")
        assert time.monotonic() < deadline, "the run never paused"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL
    marker.unlink()


def checkpoints(output_dir):
    return sorted(int(p.name.split("-")[1]) for p in Path(output_dir).glob("checkpoint-*"))


@pytest.mark.slow
def test_killed_and_resumed_search_equals_the_uninterrupted_one(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    # Killed after step k, with at least one checkpoint saved and at least one still to come.
    kill_step = rng.randint(SAVE_STEPS + 1, MAX_STEPS - SAVE_STEPS - 2)
    last_saved = (kill_step - 1) // SAVE_STEPS * SAVE_STEPS  # step k's own checkpoint is saved after step k ends
    # The resumed run is then killed while it saves a later checkpoint, leaving that checkpoint incomplete.
    save_kill = rng.choice(range(last_saved + SAVE_STEPS, MAX_STEPS, SAVE_STEPS))
    print(f"seed {seed}: killed after step {kill_step}, then while saving checkpoint-{save_kill}")

    reference, run = tmp_path / "reference", tmp_path / "run"
    uninterrupted = launch(reference)
    first = launch(run, "--pause_at_step", str(kill_step))
    kill_when_paused(first, run)
    assert checkpoints(run) == list(range(SAVE_STEPS, kill_step, SAVE_STEPS))
    assert not (run / "final.pt").exists()

    second = launch(run, "--resume", "--pause_in_save", str(save_kill))
    kill_when_paused(second, run)
    incomplete = run / f"checkpoint-{save_kill}"
    assert (incomplete / "selection_state.pt").is_file() and not (incomplete / "trainer_state.json").exists()

    output = finish(launch(run, "--resume"))
    finish(uninterrupted)
    resumed = torch.load(run / "final.pt", weights_only=False)
    expected = torch.load(reference / "final.pt", weights_only=False)
    assert resumed["resumed_from"] == str(run / f"checkpoint-{save_kill - SAVE_STEPS}"), output
    assert resumed["global_step"] == expected["global_step"] == MAX_STEPS
    torch.testing.assert_close(resumed["s"], expected["s"], rtol=0, atol=1e-6)
    assert resumed["ratios"].keys() == expected["ratios"].keys()
    assert all(abs(resumed["ratios"][name] - ratio) <= 1e-6 for name, ratio in expected["ratios"].items())
    assert resumed["sigma"] == pytest.approx(expected["sigma"], rel=1e-12)
    assert resumed["counters"] == expected["counters"]
    for got, want in zip(resumed["params"], expected["params"], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(expected["s"], torch.full_like(expected["s"], 0.5))  # the search did move s


@pytest.mark.parametrize(
    "reward",
    [
        "validation",
        "penalty",
        "horizon",
    ],
)
def test_resume_in_process_is_exact_for_every_reward(tmp_path, reward):
    steps = 3 * SAVE_STEPS - 1  # checkpoints at 3 (between two selection updates: a pending s-gradient) and 6
    full = build_trainer(str(tmp_path), reward, max_steps=steps)
    full.train()
    for checkpoint in (SAVE_STEPS, 2 * SAVE_STEPS):
        resumed = build_trainer(str(tmp_path), reward, max_steps=steps)
        resumed.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{checkpoint}"))
        assert resumed._selection_counters == full._selection_counters
        torch.testing.assert_close(resumed.policy.s, full.policy.s, rtol=0, atol=1e-6)
        torch.testing.assert_close(resumed.learned_s(), full.learned_s(), rtol=0, atol=1e-6)
        for got, want in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
