"""A CADS-S search with checkpoints, run as a subprocess by tests/test_kill_resume.py.

    python tests/resumable_search.py OUTPUT_DIR [--resume] [--reward R] [--pause_at_step N] [--pause_in_save N]

`--pause_at_step N` stops after optimizer step N (before its checkpoint is saved) and `--pause_in_save N` stops in
the middle of saving checkpoint-N (weights, optimizer and selection state written; RNG and trainer state not):
either way the process writes OUTPUT_DIR/paused and sleeps until the test kills it with SIGKILL. A run that
finishes writes OUTPUT_DIR/final.pt with s, the learned ratios, sigma, counters and the model's parameters.
"""

import argparse
import os
import sys
import time

import torch
import transformers
from transformers import TrainerCallback

sys.path.insert(0, os.path.dirname(__file__))
from toy import ToyClassifier, toy_sources  # noqa: E402

from cads_hf import CADSConfig, CADSTrainer, LossSurrogate  # noqa: E402
from cads_hf.io import last_complete_checkpoint  # noqa: E402

MAX_STEPS, SAVE_STEPS = 20, 3


def pause(output_dir: str) -> None:
    with open(os.path.join(output_dir, "paused"), "w") as f:
        f.write(str(os.getpid()))
    while True:  # wait for SIGKILL
        time.sleep(1)


class PauseAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            pause(args.output_dir)


def build_trainer(output_dir: str, reward: str = "horizon", max_steps: int = MAX_STEPS) -> CADSTrainer:
    sources, validation = toy_sources(sizes=(60, 60, 60), val_size=40)
    args = CADSConfig(
        output_dir=output_dir, compute_budget=600, per_device_train_batch_size=12, max_steps=max_steps,
        learning_rate=1e-2, logging_steps=5, report_to="none", save_strategy="steps", save_steps=SAVE_STEPS,
        disable_tqdm=True, use_cpu=True, selection_eval_batch_size=16, reward=reward,
        # Two model steps per selection update, so that checkpoints at odd steps hold a pending s-gradient.
        selection_update_interval=2, seed=7,
        selection_averaging="mean",  # the result is the mean of s over the search: its running sum must resume too
    )
    surrogate = LossSurrogate([18, 90, 180], [0.3, 0.6, 0.9]) if reward == "penalty" else None
    return CADSTrainer(
        model=ToyClassifier(seed=3), args=args, sources=sources, eval_dataset=validation, surrogate=surrogate
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--reward", default="horizon")
    parser.add_argument("--pause_at_step", type=int)
    parser.add_argument("--pause_in_save", type=int)
    cli = parser.parse_args()

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    trainer = build_trainer(cli.output_dir, cli.reward)
    if cli.pause_at_step is not None:
        trainer.add_callback(PauseAtStep(cli.pause_at_step))
    if cli.pause_in_save is not None:
        save_rng_state = trainer._save_rng_state

        def interrupted_save(output_dir):
            if trainer.state.global_step == cli.pause_in_save:
                pause(cli.output_dir)
            save_rng_state(output_dir)

        trainer._save_rng_state = interrupted_save
    resumed_from = last_complete_checkpoint(cli.output_dir) if cli.resume else None
    trainer.train(resume_from_checkpoint=True if cli.resume else None)
    torch.save(
        {
            "s": trainer.policy.s.detach().clone(),
            "ratios": trainer.mixture().ratios,
            "sigma": trainer.policy.sigma,
            "counters": dict(trainer._selection_counters),
            "params": [p.detach().clone() for p in trainer.model.parameters()],
            "global_step": trainer.state.global_step,
            "resumed_from": resumed_from,
        },
        os.path.join(cli.output_dir, "final.pt"),
    )


if __name__ == "__main__":
    main()
