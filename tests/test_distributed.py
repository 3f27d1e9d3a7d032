"""Two CPU processes (gloo) run the same search and must end in exactly the same selection state."""

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
TWO_CPU_PROCESSES = [
    "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]


def _run_two_processes(script, *script_args):
    command = [sys.executable, "-m", "accelerate.commands.launch", *TWO_CPU_PROCESSES, os.path.join(HERE, script),
               *script_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def _launch(tmp_path, reward):
    _run_two_processes("distributed_search.py", str(tmp_path), reward)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


@pytest.mark.slow
@pytest.mark.distributed
# "horizon:1:temperature": the temperature fit all-reduces inside its Newton loop, so ranks must agree on every
# iteration (a rank that stopped early would hang the other).
@pytest.mark.parametrize("reward", ["validation", "penalty", "horizon", "horizon:2", "horizon:1:temperature"])
def test_two_processes_sample_the_same_ratios_and_end_identical(tmp_path, reward):
    rank0, rank1 = _launch(tmp_path, reward)
    assert rank0["world_size"] == rank1["world_size"] == 2
    torch.testing.assert_close(rank0["s"], rank1["s"], atol=1e-6, rtol=0)
    assert not torch.allclose(rank0["s"], torch.full_like(rank0["s"], 0.5))  # the selection did move
    for a, b in zip(rank0["params"], rank1["params"]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_select_the_same_sources_by_proxies(tmp_path):
    _run_two_processes("distributed_proxies.py", str(tmp_path))
    rank0, rank1 = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2))
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["candidates"] == rank1["candidates"] and rank0["ratios"] == rank1["ratios"]
    assert rank0["source_values"] == rank1["source_values"]  # the same order of candidates on both
    assert rank0["ratios"]["noise_0"] == 1.0 and rank0["ratios"]["noise_100"] == 0.0
