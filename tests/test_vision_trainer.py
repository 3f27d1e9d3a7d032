"""A plain ``transformers.Trainer`` trains, checkpoints and reloads the vision models."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

from cads_hf.vision import ImageCollator, SmallCNN, SmallCNNConfig, synthetic_digits, with_label_noise

STEPS = 80


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the paper CNN on offline synthetic digits; shared by the tests below to train only once."""
    torch.manual_seed(0)
    # Extra columns (clean_label, is_noisy) exercise Trainer's remove_unused_columns on a transformed dataset.
    train = with_label_noise(synthetic_digits(2048, seed=0), 0.0, num_classes=10, seed=0)
    held_out = synthetic_digits(500, seed=1)
    output_dir = tmp_path_factory.mktemp("trainer")
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=64,
        per_device_eval_batch_size=250,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=10,
        save_strategy="steps",
        save_steps=STEPS,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=SmallCNN(SmallCNNConfig()), args=args, train_dataset=train, data_collator=ImageCollator()
    )
    trainer.train()
    return trainer, held_out, output_dir / f"checkpoint-{STEPS}"


def test_trainer_loss_decreases(trained):
    trainer, _, _ = trained
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == STEPS // 10
    assert losses[0] > 1.5  # starts near chance (ln 10 = 2.3)
    assert losses[-1] < 0.5 * losses[0]


def test_synthetic_digits_learnable_above_chance(trained):
    trainer, held_out, _ = trained
    prediction = trainer.predict(held_out)
    accuracy = np.mean(prediction.predictions.argmax(-1) == prediction.label_ids)
    assert accuracy > 0.6  # chance is 0.1


def test_trainer_checkpoint_reloads_with_equal_outputs(trained):
    trainer, held_out, checkpoint = trained
    pixels = held_out[:16]["pixel_values"]
    model = trainer.model.eval()
    for loader in (SmallCNN, AutoModelForImageClassification):
        reloaded = loader.from_pretrained(checkpoint).eval()
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
