"""The CUDA path with bf16; skipped where no GPU is present (run it through the device tool when one is lent)."""

import pytest
import torch
import transformers
from toy import ToyClassifier, toy_sources

from cads_hf import CADSConfig, CADSTrainer

transformers.logging.set_verbosity_error()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("reward", ["validation", "penalty"])
def test_bf16_search_on_cuda_moves_the_selection(tmp_path, reward):
    sources, validation = toy_sources(sizes=(120, 120, 120))
    args = CADSConfig(
        output_dir=str(tmp_path), compute_budget=600, per_device_train_batch_size=12, max_steps=20, learning_rate=1e-2,
        report_to="none", save_strategy="no", disable_tqdm=True, bf16=True, selection_eval_batch_size=16,
        surrogate_fractions=[0.2, 0.5, 1.0], reward=reward, logging_steps=10,
    )
    trainer = CADSTrainer(model=ToyClassifier(), args=args, sources=sources, eval_dataset=validation)
    trainer.train()
    assert next(trainer.model.parameters()).is_cuda
    s = trainer.policy.s.detach()
    assert torch.isfinite(s).all() and not torch.allclose(s, torch.full_like(s, 0.5))
    logged = [entry for entry in trainer.state.log_history if "selection/skipped_steps" in entry]
    assert logged and logged[-1]["selection/skipped_steps"] == 0
