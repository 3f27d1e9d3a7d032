import gc

import numpy as np
import pytest
import torch
import transformers
from toy import ToyClassifier, toy_sources

from cads_hf import CADSConfig, CADSTrainer, ComputeBudget, LossSurrogate, Mixture, train_on_mixture
import cads_hf.trainer as trainer_module
from cads_hf.objective import PenaltyReward, ValidationReward, evaluate_objective

transformers.logging.set_verbosity_error()


def make_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path),
        compute_budget=3000,
        per_device_train_batch_size=30,
        max_steps=20,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=10,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        selection_eval_batch_size=64,
        surrogate_fractions=[0.1, 0.3, 0.6, 1.0],
    )
    values.update(overrides)
    return CADSConfig(**values)


def test_acceptance_random_label_source_gets_the_lowest_ratio(tmp_path):
    """Clean, 50% and 100% label noise: the random-label source ends lowest, below half the clean one (3 seeds)."""
    ratios = []
    for seed in range(3):
        sources, validation = toy_sources(seed=seed)
        args = make_args(tmp_path / str(seed), max_steps=80, seed=seed, logging_steps=1000)
        trainer = CADSTrainer(model=ToyClassifier(seed), args=args, sources=sources, eval_dataset=validation)
        trainer.train()
        ratios.append(list(trainer.mixture().ratios.values()))
    clean, half, random_labels = np.mean(ratios, axis=0)
    assert random_labels <= min(clean, half)
    assert random_labels < 0.5 * clean


def test_logs_ratios_sigma_and_objective_and_trains_the_model(tmp_path):
    sources, validation = toy_sources()
    model = ToyClassifier()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = CADSTrainer(model=model, args=make_args(tmp_path), sources=sources, eval_dataset=validation)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2
    for key in ("selection/ratio/noise_0", "selection/ratio/noise_100", "selection/sigma", "selection/objective"):
        assert all(key in entry for entry in logged)
    assert logged[-1]["selection/sigma"] == pytest.approx(0.1 * 0.99**20)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _direct_penalty_gradient(model, batch, validation, samples, sizes, surrogate, alpha):
    """Eq. 7 computed the obvious way, per-source means built with autograd."""
    features, labels, source = batch["features"], batch["labels"], batch["source_id"]
    losses = torch.nn.functional.cross_entropy(model(features)["logits"], labels, reduction="none")
    means = torch.stack([losses[source == j].mean() for j in range(len(sizes))])
    val = torch.nn.functional.cross_entropy(model(validation["features"])["logits"], validation["labels"])
    weights = samples * torch.tensor(sizes, dtype=torch.float64)
    train = (weights * means.double()).sum(-1) / weights.sum(-1)
    target = torch.tensor(surrogate((samples @ torch.tensor(sizes, dtype=torch.float64)).numpy()))
    objective = (val.double() + alpha * (train - target) ** 2).mean()
    return torch.autograd.grad(objective, list(model.parameters()))


def test_model_gradient_equals_direct_penalty_gradient(tmp_path):
    sources, validation = toy_sources(val_size=40)
    surrogate = LossSurrogate([90, 450, 900], [0.3, 0.6, 0.9])
    model = ToyClassifier()
    args = make_args(tmp_path, reward="penalty", penalty_alpha=2.0, selection_eval_batch_size=40)
    trainer = CADSTrainer(model=model, args=args, sources=sources, eval_dataset=validation, surrogate=surrogate)
    trainer.reward = PenaltyReward(surrogate, alpha=2.0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in list(trainer._get_train_sampler())[:30]])
    samples = trainer.policy.sample(args.num_ratio_samples, torch.Generator().manual_seed(args.seed * 1_000_003))
    loss = trainer.compute_loss(model, dict(batch))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    val_batch = trainer.data_collator([validation[i] for i in range(len(validation))])
    expected = _direct_penalty_gradient(model, batch, val_batch, samples, trainer.source_set.sizes, surrogate, 2.0)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-6)


def test_penalty_recomputes_the_validation_forward_instead_of_holding_its_graph(tmp_path):
    """The penalty reward trains the model on L_val: its forward is checkpointed, so the step keeps only the batch
    (not the activations) until the backward, and the gradient is the same as with the graph held."""
    sources, validation = toy_sources(val_size=40)
    model = ToyClassifier(hidden=256)
    trainer = CADSTrainer(model=model, args=make_args(tmp_path, reward="penalty", selection_eval_batch_size=40),
                          sources=sources, eval_dataset=validation, surrogate=LossSurrogate([90, 900], [0.3, 0.9]))

    def saved_bytes_and_grads(recompute):
        saved = []

        def pack(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        trainer._selection_counters["micro_steps"] = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            val_sum, _ = trainer._validation_loss(model, recompute=recompute)
        return sum(saved), torch.autograd.grad(val_sum, list(model.parameters()))

    held, held_grads = saved_bytes_and_grads(False)
    recomputed, grads = saved_bytes_and_grads(True)
    assert recomputed < held / 4
    for got, want in zip(grads, held_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dropout, probe", [(0.0, "central"), (0.3, "central"), (0.0, "one_sided"), (0.3, "one_sided")])
def test_alignment_equals_autograd_inner_products_with_the_validation_gradient(tmp_path, monkeypatch, dropout, probe):
    """The validation reward's per-source alignment is <g_val, g_j> / |g_val| with autograd's gradients, and the
    model still trains on the sampled mixtures. Central differences run in eval mode; the one-sided probe
    differences against the training forward and replays its dropout masks (a probe that drew fresh masks would be
    off by orders of magnitude)."""
    sources, validation = toy_sources(val_size=40)
    model = ToyClassifier(dropout=dropout)
    args = make_args(tmp_path, reward="validation", selection_eval_batch_size=40, alignment_probe=probe)
    trainer = CADSTrainer(model=model, args=args, sources=sources, eval_dataset=validation)
    trainer.reward = ValidationReward()
    seen = []
    monkeypatch.setattr(trainer_module, "evaluate_objective", lambda reward, stats: seen.append(stats) or evaluate_objective(reward, stats))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in list(trainer._get_train_sampler())[:30]])
    model.train()
    torch.manual_seed(7)
    loss = trainer.compute_loss(model, dict(batch))
    grads = torch.autograd.grad(loss, list(model.parameters()))

    # The same masks, drawn in the trainer's order (the validation batch runs in eval mode and draws none).
    params = list(model.parameters())
    flat = lambda tensors: torch.cat([t.reshape(-1) for t in tensors]).double()
    trainer._selection_counters["micro_steps"] = 0
    torch.manual_seed(7)
    val_sum, val_count = trainer._validation_loss(model)
    g_val = flat(torch.autograd.grad(val_sum / val_count, params))
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(batch["features"])["logits"], batch["labels"], reduction="none")
    losses = loss_fn()
    if probe == "central":
        model.eval()
        probed = loss_fn()
        model.train()
    else:
        probed = losses
    means = [losses[batch["source_id"] == j].mean() for j in range(3)]
    probed_means = [probed[batch["source_id"] == j].mean() for j in range(3)]
    expected = torch.stack([flat(torch.autograd.grad(m, params, retain_graph=True)) @ g_val for m in probed_means])
    # One-sided differences err by (step / 2) g'Hg: first order in the step, against second order for central ones.
    rtol = 1e-2 if probe == "one_sided" else 2e-3
    torch.testing.assert_close(seen[0].unit_alignment, expected / g_val.norm(), rtol=rtol, atol=1e-5)

    weights = seen[0].unit_weights
    train = ((weights * torch.stack(means).double()).sum(-1) / weights.sum(-1)).mean()
    for got, want in zip(grads, torch.autograd.grad(train, params)):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-6)


def test_alignment_probe_leaves_batch_norm_statistics_alone(tmp_path):
    """The validation batch runs in eval mode, the central probe too, and the one-sided probe's training-mode
    forward on copies of the buffers: with either probe, batch-norm running statistics see the training batch
    once, as in a plain step."""
    for probe in ("central", "one_sided"):
        sources, validation = toy_sources(val_size=40)
        model = ToyClassifier()
        model.net.insert(1, torch.nn.BatchNorm1d(32))
        args = make_args(tmp_path, reward="horizon", alignment_probe=probe)
        trainer = CADSTrainer(model=model, args=args, sources=sources, eval_dataset=validation)
        trainer.reward = trainer._build_reward()
        batch = trainer.data_collator([trainer.train_dataset[i] for i in list(trainer._get_train_sampler())[:30]])
        model.train()
        trainer.compute_loss(model, dict(batch))
        assert int(model.net[1].num_batches_tracked) == 1, probe


def test_calibrated_validation_loss_is_the_temperature_scaled_loss_of_the_batch(tmp_path):
    """With validation_calibration="temperature" the search's validation loss is the batch's cross-entropy at the
    temperature scipy finds best, and its gradient is the gradient at that fixed temperature."""
    from scipy.optimize import minimize_scalar

    sources, validation = toy_sources(val_size=40)
    model = ToyClassifier()
    args = make_args(tmp_path, reward="horizon", selection_eval_batch_size=40, validation_calibration="temperature")
    trainer = CADSTrainer(model=model, args=args, sources=sources, eval_dataset=validation)
    val_sum, val_count = trainer._validation_loss(model)
    rows = trainer.data_collator([validation[i] for i in range(40)])  # all 40: the batch is the whole set
    logits, labels = model(rows["features"])["logits"], rows["labels"]
    total = lambda u: float(torch.nn.functional.cross_entropy(logits.detach().double() * np.exp(u), labels, reduction="sum"))
    best = minimize_scalar(total, bounds=(np.log(1e-2), np.log(1e2)), method="bounded", options={"xatol": 1e-10})
    assert float((val_sum / val_count).detach()) == pytest.approx(best.fun / 40, rel=1e-5)
    assert float((val_sum / val_count).detach()) < float(torch.nn.functional.cross_entropy(logits.detach(), labels)) - 1e-3
    params = list(model.parameters())
    fixed = torch.nn.functional.cross_entropy(logits * float(np.exp(best.x)), labels, reduction="sum")
    for got, want in zip(torch.autograd.grad(val_sum, params), torch.autograd.grad(fixed, params)):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="validation_calibration"):
        make_args(tmp_path, validation_calibration="platt")


def test_one_sided_probe_needs_full_precision(tmp_path):
    with pytest.raises(ValueError, match="alignment_probe"):
        make_args(tmp_path, alignment_probe="one_sided", bf16=True)
    sources, validation = toy_sources(val_size=40)
    with pytest.raises(ValueError, match="full-precision trainable weights.*bfloat16"):
        CADSTrainer(model=ToyClassifier().to(torch.bfloat16), args=make_args(tmp_path, alignment_probe="one_sided"),
                    sources=sources, eval_dataset=validation)


def test_a_reward_that_trains_on_validation_must_say_so(tmp_path):
    """The validation graph is freed before the training forward unless the reward declares that its model
    objective uses it; one that uses it without saying so fails loudly instead of losing that gradient."""

    class Undeclared(ValidationReward):
        def model_objective(self, stats, costs):
            return super().model_objective(stats, costs) + stats.val_loss

    sources, validation = toy_sources(val_size=40)
    model = ToyClassifier()
    trainer = CADSTrainer(model=model, args=make_args(tmp_path), sources=sources, eval_dataset=validation)
    trainer.reward = Undeclared()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in list(trainer._get_train_sampler())[:30]])
    with pytest.raises(RuntimeError, match="trains_on_validation"):
        trainer.compute_loss(model, dict(batch))
    trainer.reward.trains_on_validation = True
    trainer.compute_loss(model, dict(batch)).backward()


def test_penalty_reward_collects_surrogate_and_checkpoint_resumes_exactly(tmp_path):
    sources, validation = toy_sources(sizes=(120, 120, 120))

    def run(output_dir, resume=None):
        args = make_args(output_dir, reward="penalty", compute_budget=600, max_steps=12, save_strategy="steps", save_steps=6)
        trainer = CADSTrainer(model=ToyClassifier(), args=args, sources=sources, eval_dataset=validation)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full")
    assert full.surrogate is not None and full.surrogate.cost > 0
    assert (tmp_path / "full" / "checkpoint-6" / "selection_state.pt").is_file()
    resumed = run(tmp_path / "full", resume=str(tmp_path / "full" / "checkpoint-6"))
    np.testing.assert_allclose(resumed.policy.s.detach().numpy(), full.policy.s.detach().numpy(), atol=1e-6)
    assert resumed.policy.sigma == pytest.approx(full.policy.sigma)
    for a, b in zip(resumed.model.parameters(), full.model.parameters()):
        torch.testing.assert_close(a, b)


def test_bad_setups_fail_before_training(tmp_path):
    sources, validation = toy_sources()
    with pytest.raises(ValueError, match="validation set"):
        CADSTrainer(model=ToyClassifier(), args=make_args(tmp_path), sources=sources, eval_dataset=None)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        CADSTrainer(model=ToyClassifier(), args=make_args(tmp_path, compute_budget=10), sources=sources, eval_dataset=validation)
    with pytest.raises(ValueError, match="Source 'noise_0' is empty"):
        CADSTrainer(
            model=ToyClassifier(), args=make_args(tmp_path), sources={**sources, "noise_0": sources["noise_0"].select([])},
            eval_dataset=validation,
        )
    with pytest.raises(TypeError, match="sources="):
        CADSTrainer(model=ToyClassifier(), args=make_args(tmp_path), train_dataset=sources["noise_0"], eval_dataset=validation)


def test_final_training_consumes_exactly_the_budget(tmp_path):
    sources, _ = toy_sources()
    seen = []

    def counting_collator(rows):
        seen.append(len(rows))
        return transformers.default_data_collator(rows)

    args = make_args(tmp_path, per_device_train_batch_size=32)
    trainer = train_on_mixture(
        ToyClassifier(), sources, {"noise_0": 1.0, "noise_50": 0.2, "noise_100": 0.0}, ComputeBudget(250), args,
        data_collator=counting_collator,
    )
    assert sum(seen) == 250 and trainer.state.global_step == 8


class _RecordFreezeCount(transformers.TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        self.frozen = gc.get_freeze_count()


def test_training_runs_with_long_lived_objects_frozen_and_restores_the_callers_gc(tmp_path):
    # Trainer.train's full collection at its start would scan every object alive before the run (~0.3 s each time).
    sources, _ = toy_sources()
    args = make_args(tmp_path, per_device_train_batch_size=32)
    assert gc.get_freeze_count() == 0
    record = _RecordFreezeCount()
    train_on_mixture(ToyClassifier(), sources, [1.0, 0.0, 0.0], ComputeBudget(64), args, callbacks=[record])
    assert record.frozen > 100_000 and gc.get_freeze_count() == 0
    gc.freeze()  # a caller that froze its own objects keeps them frozen, and no more
    try:
        frozen = gc.get_freeze_count()
        train_on_mixture(ToyClassifier(), sources, [1.0, 0.0, 0.0], ComputeBudget(64), args, callbacks=[record])
        # Frozen objects that die leave the count; freezing again would have added the objects made since.
        assert 100_000 < record.frozen <= frozen and 100_000 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_mixture_artifact_from_a_search(tmp_path):
    sources, validation = toy_sources()
    trainer = CADSTrainer(model=ToyClassifier(), args=make_args(tmp_path, max_steps=4), sources=sources, eval_dataset=validation)
    trainer.train()
    mixture = trainer.mixture()
    assert mixture.source_sizes == {"noise_0": 300, "noise_50": 300, "noise_100": 300}
    assert mixture.compute_budget == 3000 and mixture.reward == "horizon"
    mixture.save_pretrained(str(tmp_path / "mix"))
    assert Mixture.from_pretrained(str(tmp_path / "mix")) == mixture


class _RecordS(transformers.TrainerCallback):
    def __init__(self, trainer):
        self.trainer, self.history = trainer, []

    def on_step_end(self, args, state, control, **kwargs):
        self.history.append(self.trainer.policy.s.detach().clone())


@pytest.mark.parametrize("averaging, kept", [("mean", slice(0, 20)), ("tail", slice(10, 20)), ("last", slice(19, 20))])
def test_learned_s_averages_the_outer_steps_the_averaging_keeps(tmp_path, averaging, kept):
    sources, validation = toy_sources()
    args = make_args(tmp_path, selection_averaging=averaging, selection_update_interval=2, max_steps=40)
    trainer = CADSTrainer(model=ToyClassifier(), args=args, sources=sources, eval_dataset=validation)
    recorder = _RecordS(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    after_outer_steps = torch.stack(recorder.history[1::2])  # s after each of the 20 selection updates
    assert not torch.allclose(after_outer_steps[0], after_outer_steps[-1])
    torch.testing.assert_close(trainer.learned_s(), after_outer_steps[kept].mean(0), rtol=0, atol=1e-6)


def test_measure_interval_measures_one_step_in_n_and_resumes_exactly(tmp_path):
    """Interval 2 with updates every 3 steps: the validation set is read on steps 0, 2, 4..., s is updated after each
    window that measured, and a checkpoint taken with a measurement pending (step 5) resumes to the same s and model."""
    sources, validation = toy_sources(sizes=(120, 120, 120))

    def run(output_dir, resume=None):
        args = make_args(
            output_dir, max_steps=12, selection_measure_interval=2, selection_update_interval=3, save_strategy="steps",
            save_steps=5,
        )
        trainer = CADSTrainer(model=ToyClassifier(), args=args, sources=sources, eval_dataset=validation)
        reads = []
        read = trainer._validation_loss
        trainer._validation_loss = lambda model, **kw: reads.append(trainer.state.global_step) or read(model, **kw)
        trainer.train(resume_from_checkpoint=resume)
        return trainer, reads

    full, reads = run(tmp_path / "full")
    assert reads == [0, 2, 4, 6, 8, 10]
    assert full._selection_counters["outer_steps"] == 4
    resumed, reads = run(tmp_path / "full", resume=str(tmp_path / "full" / "checkpoint-5"))
    assert reads == [6, 8, 10]
    torch.testing.assert_close(resumed.policy.s, full.policy.s, rtol=0, atol=1e-7)
    torch.testing.assert_close(resumed.learned_s(), full.learned_s(), rtol=0, atol=1e-7)
    for a, b in zip(resumed.model.parameters(), full.model.parameters()):
        torch.testing.assert_close(a, b)


def test_measure_interval_needs_a_reward_that_trains_without_measuring(tmp_path):
    sources, validation = toy_sources()
    surrogate = LossSurrogate([90, 450, 900], [0.3, 0.6, 0.9])
    with pytest.raises(ValueError, match="PenaltyReward measures every step"):
        CADSTrainer(
            model=ToyClassifier(), args=make_args(tmp_path, selection_measure_interval=2), sources=sources,
            eval_dataset=validation, reward=PenaltyReward(surrogate),
        )


def test_surrogate_sweep_reads_smaller_budgets_off_the_largest_budgets_runs(tmp_path, caplog):
    """With a constant learning rate, the sweep's surrogates equal one collection per budget (budgets here are whole
    batches, so there is no partial last batch), for the largest budget's compute alone; other schedules refuse."""
    sources, validation = toy_sources(sizes=(120, 120, 120))
    budgets = [300, 600, 1200]

    def trainer(budget, **overrides):
        args = make_args(tmp_path / str(budget), compute_budget=budget, surrogate_fractions=[0.25, 0.5, 1.0], **overrides)
        return CADSTrainer(model=ToyClassifier(), args=args, sources=sources, eval_dataset=validation)

    sweep = trainer(1200).collect_surrogate_sweep(budgets)
    assert sorted(sweep) == budgets
    separate = {budget: trainer(budget).collect_surrogate() for budget in budgets}
    for budget in budgets:
        np.testing.assert_allclose(sweep[budget].losses, separate[budget].losses, rtol=1e-5)
        assert sweep[budget].sizes == separate[budget].sizes == [90.0, 180.0, 360.0]
    assert len({tuple(s.losses) for s in sweep.values()}) == 3  # the budgets really differ
    assert sweep[1200].cost < sum(s.cost for s in separate.values())
    with pytest.raises(ValueError, match="lr_scheduler_type='constant'"):
        trainer(1200, lr_scheduler_type="linear").collect_surrogate_sweep(budgets)
    assert "not a whole number of batches" not in caplog.text
    trainer(1200).collect_surrogate_sweep([310, 1200])  # 310 = 10 batches of 30 and a partial one of 10
    assert "budget(s) [310.0] are not a whole number of batches" in caplog.text
