"""speed: a CADS-S search step against a plain Trainer step on the same model and batch, and peak memory.

(a) Step time. A small GPT-2 (4 layers, 128 wide, built from a config) trains on random token sequences split into
three sources, batch 12 x 128 tokens, validation batch 6. GPT-2's dropout of 0.1 is kept; two rows repeat the
default with dropout 0 (as in Llama-style models; suffix `@nodropout`), against a plain run of that model, with the
default central alignment probe and with `alignment_probe="one_sided"` (one forward fewer). Configurations run interleaved in rounds (plain, then each
reward x K x measure interval) so that background load hits them alike; each run times `--steps` optimizer steps
with a callback and, after the warmup, keeps the median over windows of `selection_measure_interval` consecutive
steps of the window's mean step time (one measured step and the plain ones after it; for interval 1, the median
step); the reported ratio is the median over rounds of (configuration / plain of the same round). K must be >= 2
(the self-critical baseline needs two samples).
(b) End to end. One budget of 40 batches (quick: 10): a plain Trainer run on all sources, against CADS-S with the
defaults (a search of as many steps as the budget, then a fresh model trained on the learned mixture for exactly
the budget), and the same with `selection_measure_interval=2`; the median over rounds of (CADS-S total / plain run).
(c) CADS-E against Bilevel-CADS as the budget grows (paper Fig. 11), on the pooled sources: CADS-E with the paper's
penalty reward (surrogate collection at 4 subset sizes, each a run of the budget, then a search of budget / batch
steps) against Bilevel-CADS with the paper's M = 100 outer steps of K = 5 inner runs. Bilevel's time is one outer
step measured, times M: its outer steps all cost the same K x C (stated in the JSON as `bilevel_extrapolated`).
(d) Peak memory. Each configuration runs again in a fresh process, once per round; its peak resident set size while
training, above the resident size just before training (CPU), or its peak CUDA allocation, is compared with a plain
Trainer's measured the same way (medians over rounds).

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

from cads_hf import CADSConfig, CADSTrainer, ComputeBudget, LossSurrogate, train_on_mixture
from cads_hf.baselines import BilevelCADS
from cads_hf.final_training import plain_training_args

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


def make_model(dropout: float = 0.1):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=128, n_layer=4, n_head=4,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return GPT2LMHeadModel(config)


def parse(config: str) -> tuple[str, float]:
    """("plain" or "<reward>:<K>:<measure interval>[:<alignment probe>]", dropout) of a configuration name."""
    name, _, variant = config.partition("@")
    return name, 0.0 if variant == "nodropout" else 0.1


def common_args(steps: int, **extra) -> dict:
    return dict(
        output_dir="/tmp/cads_speed", per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=1e-4,
        report_to="none", save_strategy="no", disable_tqdm=True, logging_strategy="no", log_level="error",
        use_cpu=not torch.cuda.is_available(), **extra,
    )


def run(config: str, steps: int, on_start=None) -> list[float]:
    """Train `steps` steps of `config` (see `parse`; "@nodropout" for the dropout-free model); returns the time of every step. `on_start` is called once everything is built, just before
    training."""
    sources, validation = token_sources()
    common = common_args(steps)
    timer = StepTimer()
    config, dropout = parse(config)
    if config == "plain":
        union = concatenate_datasets(list(sources.values()))
        trainer = Trainer(model=make_model(dropout), args=TrainingArguments(**common), train_dataset=union,
                          callbacks=[timer])
    else:
        reward, k, interval, *probe = config.split(":")
        args = CADSConfig(**common, compute_budget=10_000, num_ratio_samples=int(k), reward=reward,
                          selection_measure_interval=int(interval), selection_eval_batch_size=VAL_BATCH,
                          alignment_probe=probe[0] if probe else "central")
        # The penalty's surrogate is given (its collection is a separate, one-off cost measured in noisy_sources).
        surrogate = LossSurrogate([100, 400, 768], [5.0, 5.5, 6.0]) if reward == "penalty" else None
        trainer = CADSTrainer(model=make_model(dropout), args=args, sources=sources, eval_dataset=validation,
                              surrogate=surrogate, callbacks=[timer])
    if on_start is not None:
        on_start()
    trainer.train()
    return timer.times


def typical_step(times: list[float], interval: int) -> float:
    """Median over windows of `interval` consecutive steps of their mean step time: what a step costs on average
    when one in `interval` measures, robust to a stray slow step like a plain median."""
    windows = [times[i : i + interval] for i in range(0, len(times) - interval + 1, interval)]
    return statistics.median(statistics.fmean(window) for window in windows)


def end_to_end(steps: int, measure_interval: int = 1) -> float:
    """(CADS-S search + final run on the learned mixture) / one plain run, all for a budget of `steps` batches."""
    sources, validation = token_sources()
    budget = steps * BATCH
    start = time.perf_counter()
    plain = Trainer(model=make_model(), args=TrainingArguments(**common_args(steps)),
                    train_dataset=concatenate_datasets(list(sources.values())))
    plain.train()
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    args = CADSConfig(**common_args(steps), compute_budget=budget, selection_eval_batch_size=VAL_BATCH,
                      selection_measure_interval=measure_interval)
    search = CADSTrainer(model=make_model(), args=args, sources=sources, eval_dataset=validation)
    search.train()
    train_on_mixture(make_model(), sources, search.mixture().ratios, ComputeBudget(budget), plain_training_args(args))
    return (time.perf_counter() - start) / plain_s


def cads_e_against_bilevel(steps: int, outer_steps: int = 100, k: int = 5) -> dict:
    """Wall time of CADS-E (surrogate + search) and of Bilevel-CADS (one outer step measured, times `outer_steps`)."""
    sources, validation = token_sources()
    pool = concatenate_datasets(list(sources.values()))
    budget = steps * BATCH
    start = time.perf_counter()
    args = CADSConfig(**common_args(steps), compute_budget=budget, selection_level="example", reward="penalty",
                      surrogate_fractions=[0.1, 0.3, 0.6, 1.0], selection_eval_batch_size=VAL_BATCH)
    CADSTrainer(model=make_model(), args=args, sources=pool, eval_dataset=validation).train()
    cads_e_s = time.perf_counter() - start
    start = time.perf_counter()
    bilevel_args = CADSConfig(**common_args(steps, per_device_eval_batch_size=32), compute_budget=budget,
                              selection_level="example", num_ratio_samples=k)
    BilevelCADS(lambda: make_model(), pool, validation, bilevel_args).step()  # model_init: no arguments
    outer_step_s = time.perf_counter() - start
    return {"budget_samples": budget, "cads_e_s": cads_e_s, "bilevel_outer_step_s": outer_step_s,
            "bilevel_s": outer_step_s * outer_steps, "speedup": outer_step_s * outer_steps / cads_e_s}


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
    rounds, steps, warmup = (2, 8, 2) if options.quick else (3, 14, 4)  # warmup even: windows start on a measured step
    ks = (2, 64) if options.quick else (2, 4, 16, 64)
    configs = [f"{reward}:{k}:1" for reward in ("validation", "horizon", "penalty") for k in ks]
    configs += [f"{reward}:{ks[-1]}:2" for reward in ("validation", "horizon")]
    configs += [f"horizon:{ks[-1]}:1@nodropout", f"horizon:{ks[-1]}:1:one_sided@nodropout"]
    run("plain", 3)  # the first timing in a fresh process is unreliable: warm everything once
    ratios = {config: [] for config in configs}
    plain_medians = []
    for _ in range(rounds):
        plain = {dropout: statistics.median(run(name, steps)[warmup:])
                 for name, dropout in map(parse, ("plain", "plain@nodropout"))}
        plain_medians.append(plain[0.1])
        for config in configs:
            name, dropout = parse(config)
            interval = int(name.split(":")[2])
            ratios[config].append(typical_step(run(config, steps)[warmup:], interval) / plain[dropout])
            print(config, round(ratios[config][-1], 3), flush=True)
    rows = [
        {"reward": name.split(":")[0], "K": int(name.split(":")[1]), "measure_interval": int(name.split(":")[2]),
         "alignment_probe": (name.split(":")[3:] or ["central"])[0], "dropout": dropout,
         "ratio_to_plain": statistics.median(r), "per_round": r}
        for (name, dropout), r in ((parse(c), r) for c, r in ratios.items())
    ]
    e2e_steps = 10 if options.quick else 40
    e2e = [end_to_end(e2e_steps) for _ in range(1 if options.quick else 3)]
    e2e_interval_2 = [end_to_end(e2e_steps, measure_interval=2) for _ in range(1 if options.quick else 3)]
    print("end to end", e2e, e2e_interval_2, flush=True)
    bilevel = [cads_e_against_bilevel(s) for s in ((5, 10) if options.quick else (10, 20, 40))]
    print("bilevel", bilevel, flush=True)
    memory_configs = ["plain"] + [f"{reward}:{ks[-1]}:1" for reward in ("validation", "horizon", "penalty")]
    memory_configs += ["plain@nodropout", f"horizon:{ks[-1]}:1@nodropout", f"horizon:{ks[-1]}:1:one_sided@nodropout"]
    memory_rounds = {config: [] for config in memory_configs}
    for _ in range(rounds):  # interleaved, like the step times; a single probe varies by about 0.1x
        for config in memory_configs:
            probe = subprocess.run([sys.executable, __file__, "--memory_probe", config], capture_output=True,
                                   text=True, check=True, cwd=os.path.dirname(os.path.abspath(__file__)))
            memory_rounds[config].append(json.loads(probe.stdout.strip().splitlines()[-1])["peak_mb"])
    memory = {config: statistics.median(values) for config, values in memory_rounds.items()}
    results = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "batch": BATCH, "selection_eval_batch_size": VAL_BATCH, "sequence_length": LENGTH, "steps": steps,
        "warmup": warmup, "rounds": rounds, "plain_step_s": statistics.median(plain_medians), "rows": rows,
        "end_to_end": {"budget_steps": e2e_steps, "per_round": e2e, "ratio_to_plain": statistics.median(e2e)},
        "end_to_end_measure_interval_2": {"budget_steps": e2e_steps, "per_round": e2e_interval_2,
                                          "ratio_to_plain": statistics.median(e2e_interval_2)},
        "cads_e_against_bilevel": {"outer_steps": 100, "k": 5, "bilevel_extrapolated": True, "rows": bilevel},
        "peak_memory_mb": memory,
        "peak_memory_mb_per_round": memory_rounds,
        "peak_memory_ratio": {c: m / memory["plain" + (c[c.index("@"):] if "@" in c else "")]
                              for c, m in memory.items() if not c.startswith("plain")},
        "quick": options.quick,
    }
    path = write_results("speed" + ("_quick" if options.quick else ""), results, options.output)
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
