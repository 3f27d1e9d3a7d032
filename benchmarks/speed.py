"""Speed of a CADS-S search step against a plain Trainer step on the same model and batch (issue: benchmarks, 5a).

A small GPT-2 (built from a config) trains on random token sequences split into three sources. Each configuration
runs `--steps` optimizer steps; a callback times every step and the median of the steps after `--warmup` is
reported, as a ratio to the plain Trainer's median measured in the same process. Peak memory is the largest
resident set size the process reached while each configuration ran (CPU) or the CUDA peak.

    python benchmarks/speed.py            # full
    python benchmarks/speed.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import torch
import transformers
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from cads_hf import CADSConfig, CADSTrainer

transformers.logging.set_verbosity_error()
RESULTS = os.path.join(os.path.dirname(__file__), "results")


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def token_sources(num_sources=3, per_source=256, length=128, vocab=512, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sources = {}
    for j in range(num_sources):
        ids = torch.randint(0, vocab, (per_source, length), generator=generator).tolist()
        sources[f"source_{j}"] = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * length] * per_source, "labels": ids})
    validation = sources["source_0"].select(range(64))
    return sources, validation


def make_model(vocab=512):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=128, n_embd=128, n_layer=4, n_head=4))


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(kind, steps, batch, val_batch, k=None, output_dir="/tmp/cads_speed"):
    sources, validation = token_sources()
    common = dict(
        output_dir=output_dir, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
        report_to="none", save_strategy="no", disable_tqdm=True, logging_strategy="no",
        use_cpu=not torch.cuda.is_available(),
    )
    timer = StepTimer()
    if kind == "plain":
        union = sources["source_0"]
        for name in ("source_1", "source_2"):
            from datasets import concatenate_datasets

            union = concatenate_datasets([union, sources[name]])
        trainer = Trainer(model=make_model(), args=TrainingArguments(**common), train_dataset=union, callbacks=[timer])
    else:
        args = CADSConfig(**common, compute_budget=10_000, num_ratio_samples=k, reward=kind, selection_eval_batch_size=val_batch)
        from cads_hf import LossSurrogate

        surrogate = LossSurrogate([100, 400, 768], [5.0, 5.5, 6.0]) if kind == "penalty" else None
        trainer = CADSTrainer(model=make_model(), args=args, sources=sources, eval_dataset=validation, surrogate=surrogate, callbacks=[timer])
    trainer.train()
    return timer.times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=os.path.join(RESULTS, "speed.json"))
    options = parser.parse_args()
    steps, warmup = (12, 4) if options.quick else (30, 5)
    batch = 12
    val_batch = batch // 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results = {"batch": batch, "selection_eval_batch_size": val_batch, "steps": steps, "warmup": warmup, "rows": []}
    run("plain", 3, batch, val_batch)  # the first timing on a fresh process is unreliable: warm everything once
    plain = statistics.median(run("plain", steps, batch, val_batch)[warmup:])
    results["plain_step_s"] = plain
    for reward in ("validation", "penalty"):
        for k in (2, 4, 8, 16):
            median = statistics.median(run(reward, steps, batch, val_batch, k=k)[warmup:])
            row = {"reward": reward, "K": k, "step_s": median, "ratio_to_plain": median / plain}
            print(row, flush=True)
            results["rows"].append(row)
    results["peak_memory_mb_process"] = peak_memory_mb()
    results["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(os.path.dirname(options.output), exist_ok=True)
    with open(options.output, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
