"""Run under `accelerate launch`: a short CADS-S search whose final state each process writes to a file."""

import gc
import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
from toy import ToyClassifier, toy_sources  # noqa: E402

from cads_hf import CADSConfig, CADSTrainer  # noqa: E402

transformers.logging.set_verbosity_error()
# "<reward>[:<measure interval>[:<validation calibration>]]"
output_dir, (reward, interval, calibration) = sys.argv[1], (sys.argv[2].split(":") + ["", ""])[:3]
use_cpu = len(sys.argv) < 4 or sys.argv[3] != "cuda"
sources, validation = toy_sources(sizes=(120, 120, 120))
args = CADSConfig(
    output_dir=output_dir, compute_budget=600, per_device_train_batch_size=12, max_steps=10, learning_rate=1e-2,
    report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=use_cpu, selection_eval_batch_size=16,
    surrogate_fractions=[0.2, 0.5, 1.0], reward=reward, selection_measure_interval=int(interval or 1),
    validation_calibration=calibration or "none",
    bf16=not use_cpu,
)
trainer = CADSTrainer(model=ToyClassifier(), args=args, sources=sources, eval_dataset=validation)
trainer.train()
state = {
    "s": trainer.policy.s.detach().cpu(),
    "params": [p.detach().float().cpu() for p in trainer.model.parameters()],
    "world_size": trainer.accelerator.num_processes,
    "log": trainer.state.log_history,
}
torch.save(state, os.path.join(output_dir, f"rank{trainer.accelerator.process_index}.pt"))
# Release the DDP-wrapped model (it keeps the gloo group alive) before closing the group: destroyed later, at
# interpreter teardown, gloo can abort the process ("terminate called without an active exception").
accelerator = trainer.accelerator
accelerator.free_memory()
del trainer
gc.collect()
accelerator.end_training()
