"""speed: a CADS-S search step against a plain Trainer step on the same model and batch, and peak memory.

(a) Step time. A small GPT-2 (4 layers, 128 wide, built from a config) trains on random token sequences split into
three sources, batch 12 x 128 tokens, validation batch 6. Configurations run interleaved in rounds (plain, then each
reward x K) so that background load hits them alike; each run times `--steps` optimizer steps with a callback and
keeps the median after `--warmup`; the reported ratio is the median over rounds of (configuration median / plain
median of the same round). K must be >= 2 (the self-critical baseline needs two samples).
(d) Peak memory. Each configuration runs once more in a fresh process; its peak resident set size while training,
above the resident size just before training (CPU), or its peak CUDA allocation, is compared with a plain
Trainer's measured the same way.

    python benchmarks/speed.py --quick
    python benchmarks/speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import transformers
from common import write_results
from datasets import Dataset, concatenate_datasets
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from cads_hf import CADSConfig, CADSTrainer, LossSurrogate

transformers.logging.set_verbosity_error()
BATCH, VAL_BATCH, LENGTH, VOCAB = 12, 6, 128, 512


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def token_sources(per_source=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sources = {}
    for j in range(3):
        ids = torch.randint(0, VOCAB, (per_source, LENGTH), generator=generator).tolist()
        sources[f"source_{j}"] = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * LENGTH] * per_source, "labels": ids})
    return sources, sources["source_0"].select(range(64))


def make_model():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=128, n_layer=4, n_head=4))


def run(config: str, steps: int, on_start=None) -> list[float]:
    """Train `steps` steps of `config` ("plain" or "<reward>:<K>"); returns the time of every step. `on_start` is
    called once everything is built, just before training."""
    sources, validation = token_sources()
    common = dict(
        output_dir="/tmp/cads_speed", per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=1e-4,
        report_to="none", save_strategy="no", disable_tqdm=True, logging_strategy="no", log_level="error",
        use_cpu=not torch.cuda.is_available(),
    )
    timer = StepTimer()
    if config == "plain":
        union = concatenate_datasets(list(sources.values()))
        trainer = Trainer(model=make_model(), args=TrainingArguments(**common), train_dataset=union, callbacks=[timer])
    else:
        reward, k = config.split(":")
        args = CADSConfig(**common, compute_budget=10_000, num_ratio_samples=int(k), reward=reward,
                          selection_eval_batch_size=VAL_BATCH)
        # The penalty's surrogate is given (its collection is a separate, one-off cost measured in noisy_sources).
        surrogate = LossSurrogate([100, 400, 768], [5.0, 5.5, 6.0]) if reward == "penalty" else None
        trainer = CADSTrainer(model=make_model(), args=args, sources=sources, eval_dataset=validation,
                              surrogate=surrogate, callbacks=[timer])
    if on_start is not None:
        on_start()
    trainer.train()
    return timer.times


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def reset_peak_memory() -> float:
    """Start a fresh peak (Linux: writing 5 to clear_refs resets VmHWM); returns the resident size now."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS")


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_mb("VmHWM")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory_probe", default=None, help=argparse.SUPPRESS)  # internal: one config, print peak
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    if options.memory_probe:
        # Peak memory of training itself: above the resident size once data, model and libraries are loaded.
        baseline = []
        run(options.memory_probe, 6, on_start=lambda: baseline.append(reset_peak_memory()))
        print(json.dumps({"peak_mb": peak_memory_mb() - baseline[0]}))
        return
    rounds, steps, warmup = (2, 8, 3) if options.quick else (3, 14, 4)
    ks = (2, 8) if options.quick else (2, 4, 8, 16)
    configs = [f"{reward}:{k}" for reward in ("validation", "horizon", "penalty") for k in ks]
    run("plain", 3)  # the first timing in a fresh process is unreliable: warm everything once
    ratios = {config: [] for config in configs}
    plain_medians = []
    for _ in range(rounds):
        plain = statistics.median(run("plain", steps)[warmup:])
        plain_medians.append(plain)
        for config in configs:
            ratios[config].append(statistics.median(run(config, steps)[warmup:]) / plain)
            print(config, round(ratios[config][-1], 3), flush=True)
    rows = [
        {"reward": c.split(":")[0], "K": int(c.split(":")[1]), "ratio_to_plain": statistics.median(r), "per_round": r}
        for c, r in ratios.items()
    ]
    memory = {}
    for config in ["plain"] + [f"{reward}:{ks[0]}" for reward in ("validation", "horizon", "penalty")]:
        probe = subprocess.run([sys.executable, __file__, "--memory_probe", config], capture_output=True, text=True,
                               check=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        memory[config] = json.loads(probe.stdout.strip().splitlines()[-1])["peak_mb"]
    results = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "batch": BATCH, "selection_eval_batch_size": VAL_BATCH, "sequence_length": LENGTH, "steps": steps,
        "warmup": warmup, "rounds": rounds, "plain_step_s": statistics.median(plain_medians), "rows": rows,
        "peak_memory_mb": memory,
        "peak_memory_ratio": {c: m / memory["plain"] for c, m in memory.items() if c != "plain"},
        "quick": options.quick,
    }
    path = write_results("speed" + ("_quick" if options.quick else ""), results, options.output)
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
