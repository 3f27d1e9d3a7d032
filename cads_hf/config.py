"""`CADSConfig`: the training arguments of a compute-budget-aware data selection run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

BUDGET_UNITS = ("samples", "tokens")
SELECTION_LEVELS = ("source", "example")
SURROGATE_KINDS = ("spline", "loglinear")
NONFINITE_POLICIES = ("skip", "stop")
AVERAGING = ("last", "mean", "tail")
ALIGNMENT_PROBES = ("central", "one_sided")
VALIDATION_CALIBRATIONS = ("none", "temperature")
PROXY_CANDIDATES = ("auto", "nested", "subsets")


@dataclass
class CADSConfig(TrainingArguments):
    r"""
    Configuration for [`CADSTrainer`]: everything of [`~transformers.TrainingArguments`] plus the selection search.

    The trainer searches, under the configured `reward` (budget-aware by default; the CADS paper's penalty objective,
    eq. 7-9, with `reward="penalty"`), for the data that a model trained for exactly `compute_budget` should see: a
    ratio per source (CADS-S, `selection_level="source"`) or an inclusion score per example (CADS-E,
    `selection_level="example"`). `max_steps` / `num_train_epochs` set the length of the
    *search*; the budget is the cost of the *final* training run on the selected data.

    Parameters:
        compute_budget (`float`):
            Compute of the final training run, in `budget_unit`s. With `"samples"` one unit is one forward and backward
            pass of one example (the paper's "sample usages"); 10 epochs over 1,000 examples is 10,000.
        budget_unit (`str`, defaults to `"samples"`):
            `"samples"` or `"tokens"` (language models: one unit is one trained token).
        selection_level (`str`, defaults to `"source"`):
            `"source"` learns one ratio per named source (CADS-S, truncated Gaussian policy, eq. 11); `"example"`
            learns one inclusion probability per example (CADS-E, Bernoulli policy, eq. 3).
        reward (`str`, defaults to `"horizon"`):
            How each sampled selection is scored. `"penalty"` is the paper's estimator, exactly eq. 7-9 (the model
            trains on validation + penalty; needs the surrogate; L_val cancels under the self-critical baseline, so
            only the penalty moves s). `"validation"` scores a selection by the drop in validation loss that a step
            on it would bring (first order, <g_val, g_u> per unit) while the model trains on the sampled selections.
            `"horizon"` (the best in the benchmarks) scores the same way but trains the model on the current
            selection itself, each source measured on its selected and its left-out examples, so that repetition
            and memorization at this budget show in the score. Neither needs a surrogate. See README, "Which reward".
        penalty_alpha (`float`, defaults to `1.0`):
            Weight alpha of the penalty `(L_trn - l(|m|))^2` in eq. 7.
        num_ratio_samples (`int`, defaults to `64`):
            K, the selections sampled per step. All K share one forward pass, so a step costs the same for any K, and
            many samples make the REINFORCE gradient far less noisy (the paper uses 2-5; in the benchmarks 64
            samples and the smaller learning rate below beat 4 samples at 5e-2 at every budget). CADS-E keeps K
            masks over all examples per step: lower K for pools of many millions.
        sigma_init (`float`, defaults to `0.1`):
            Initial scale sigma_0 of the truncated Gaussian policy (CADS-S).
        sigma_decay (`float`, defaults to `0.99`):
            sigma_t = sigma_0 * sigma_decay^t, t counted in selection updates (outer steps).
        sigma_min (`float`, defaults to `1e-3`):
            Floor of sigma. Without it sigma reaches 1e-5 after 1,000 updates and the score (r - s) / sigma^2
            explodes; set 0 to reproduce the paper's schedule exactly.
        selection_learning_rate (`float`, *optional*):
            Learning rate of the Adam optimizer on the selection parameters s. Defaults to 1e-2 for CADS-S: Adam moves
            s by about this much per update whatever the signal, so a smaller step than the paper's 5e-2 keeps noise
            from random-walking the ratios. Defaults to the paper's 5e-2 for CADS-E, where an example's score only
            moves in the steps whose batch holds that example.
        selection_grad_clip (`float`, defaults to `1.0`):
            Maximum L2 norm of the s-gradient before the Adam step; 0 disables clipping.
        selection_update_interval (`int`, defaults to `1`):
            Optimizer steps of the model per selection update (one outer step). Schedules (sigma) count outer steps.
        selection_measure_interval (`int`, defaults to `1`):
            The reward is measured on one optimizer step in this many; the steps between only train the model on
            the current selection, at the cost of a plain step. The selection is updated after each window of
            `selection_update_interval` steps that measured something, so it gets fewer updates. Only for rewards
            whose model objective needs no measurement (`"validation"`, `"horizon"`). In the scarce-clean
            benchmark, 2 cuts the search from about 2.9x to 1.8x the final run's time, at a cost of up to 1.3 points
            of accuracy (README, "Which reward").
        ratio_init (`float`, defaults to `0.5`):
            Initial s for every source (CADS-S) or example (CADS-E); the paper uses 0.2-0.8.
        min_ratio (`float`, defaults to `0.0`):
            Lower bound of s. Keep 0 so a pure-noise source can be dropped entirely.
        surrogate_fractions (`list[float]`, defaults to `[0.05, 0.1, 0.3, 0.5, 0.9]`):
            Subset fractions at which the surrogate l(n) is measured (paper §C; 5 points suffice, Table 8).
        surrogate_kind (`str`, defaults to `"spline"`):
            `"spline"` (cubic spline in log space, the paper's choice) or `"loglinear"`.
        alignment_probe (`str`, defaults to `"central"`):
            How the validation-driven rewards measure <g_val, g_u> for every unit at once, by a finite difference
            along the validation gradient. `"central"`: two extra forwards in eval mode (step 1e-2). `"one_sided"`:
            one extra forward, differenced against the training forward (step 1e-3) and replaying its random state,
            so dropout draws the same masks in both; it needs full precision (no `bf16`/`fp16`). One-sided makes the
            search step cheaper (on a GPT-2 without dropout in `benchmarks/speed.py`: 1.35x a plain step instead of
            1.56x) but selected worse in the scarce-clean benchmark (0.3-1.1 points lower over 5 seeds; README,
            "Which reward"), so central is the default.
        validation_calibration (`str`, defaults to `"none"`):
            What validation loss the search minimizes. `"none"`: the model's loss, as `Trainer.evaluate` reports it.
            `"temperature"`: the loss after temperature scaling, the logits multiplied by the inverse temperature that
            minimizes the loss of each step's validation batch (fitted on the detached logits; by the envelope theorem
            the gradient at that fixed temperature is the calibrated loss's gradient). Use it when the metric that
            matters is accuracy rather than likelihood: a classifier trained on noisy labels is under-confident, so
            its raw cross-entropy punishes the mixture for confidence, not for wrong answers. In the scarce-clean
            benchmark the calibrated loss of the final models picks the fixed mixtures that accuracy picks, where the
            raw loss often does not; but as the search's per-step signal it selected worse at 1 and 16 epochs and
            better only at 4 (README, "Which reward"), so it is not the default. A custom `per_example_loss` must
            read `outputs["logits"]`.
        proxy_fractions (`list[float]`, *optional*):
            Only for `select_by_proxies`: the fractions of every source on which each candidate is trained, for the
            same fraction of the budget. Two or more let each candidate's validation error be extrapolated to full
            size (a power law in the fraction); in the scarce-clean benchmark one fraction alone kept noisy sources at
            16 epochs, because cutting the small clean source weakens it (README, "Which reward"). Unset, the larger
            of `[0.25, 0.5]` and `[0.1, 0.25]` whose proxies train on at most 2.25 final runs' samples over all
            candidates: `[0.25, 0.5]` for up to three candidates (on text with two sources, every subset, it came
            within 1% of the best fixed mixture at all 4 budgets, for 1.6-1.9x the final run's wall time at the 3
            budgets timed), else `[0.1, 0.25]` (1.75 for the five image sources).
        proxy_candidates (`str`, defaults to `"auto"`):
            Only for `select_by_proxies` when the caller names no `candidates`: which mixtures the proxies compare.
            `"nested"`: the unions of the k most valuable sources, k = 1..J (J candidates; `proxy_value_examples` sets
            how value is measured). `"subsets"`: every non-empty subset of the sources (2^J - 1 candidates).
            `"auto"`: every subset for one or two sources, nested beyond. With two sources the nested candidates try
            only the more valuable one alone, and the value's order is fragile between similar sources (README,
            "Which reward"); every subset is one candidate more. With three it would be seven against three.
        proxy_keep_steps (`bool`, defaults to `True`):
            Only for `select_by_proxies`: cut the batch by the same fraction, so that a proxy takes as many optimizer
            steps as the full run (memorization needs steps as well as epochs). The learning rate is not cut: a batch
            cut to one or two examples may not train at the full run's rate; then set False or lower the rate.
            (Cutting the rate by the square root of the fraction with the batch did not select better in the
            scarce-clean benchmark: README, "Which reward".)
        proxy_refine_fraction (`float`, *optional*, defaults to `0.5`):
            Only for `select_by_proxies`: where the two best candidates' extrapolated errors are within
            `proxy_refine_margin` of each other, both are trained on one more proxy at this fraction and ranked again
            by the power law fitted to all their fractions. A two-point extrapolation over a short range cannot see a
            mixture's error level off (repeated noisy labels memorized): at 16 epochs of the scarce-clean images it
            put clean + 20% noise just below clean alone in two seeds of five, and the 50% proxies reversed the order
            (README, "Which reward"). Skipped where it is not above every proxy fraction (the default `[0.25, 0.5]`);
            None never refines.
        proxy_refine_margin (`float`, defaults to `0.1`):
            Only for `select_by_proxies`: refine (`proxy_refine_fraction`) where the runner-up's extrapolated error is
            at most (1 + margin) times the best's. Each refinement costs two proxies at that fraction (about one more
            final run's samples at 0.5). In the scarce-clean benchmark (15 budget-seed cells) the runners-up of the
            two wrong two-point picks at 16 epochs came within 2.6% and 9.9%, one cell at 4 epochs within 0.2%, and the
            other twelve 15% or more behind: 10% refines those three (README, "Which reward").
        proxy_cache_rows (`bool`, defaults to `True`):
            Only for `select_by_proxies`: keep each row the proxies read (of the cut sources and of the validation set)
            in memory, so that it is read once for all the candidates and repeats; at most the largest fraction of
            each source. A proxy's batch is small, and reading it took about half of a proxy's time on the noisy
            MNIST sources. Set False where reading a row is random (an augmenting transform: a cached row would keep
            one draw) or the rows do not fit in memory.
        proxy_value_examples (`int`, defaults to `256`):
            Only for `select_by_proxies` with the nested candidates: the examples of each source (left out of the
            union's largest proxy) and of the validation set whose mean gradients give each source's value (their
            cosine), which orders the nested candidates. One gradient pass over them, a fixed cost that matters at
            small budgets: on the noisy MNIST sources 256 examples put the five sources in their noise order in every
            cell measured at 1, 4 and 16 epochs (15 of 15; 512: 14 of 15), for less than half the time of 512
            (`benchmarks/source_values.py --examples`).
        selection_eval_batch_size (`int`, *optional*):
            Validation examples per step for L_val(theta); defaults to `per_device_eval_batch_size`.
        selection_averaging (`str`, defaults to `"tail"`):
            Which s the result reports: `"mean"` (s averaged over all outer steps, so the mixture reflects the whole
            search rather than its last few noisy updates), `"tail"` (s averaged over the second half of the outer
            steps: suffix averaging, which keeps the variance reduction but forgets the early transient, so a source
            the late search drops ends near 0) or `"last"` (the final s, as in the paper).
        nonfinite_loss (`str`, defaults to `"skip"`):
            What a NaN or infinite loss does to the selection: `"skip"` drops that step's update (counted in the
            logs as `selection/skipped_steps`), `"stop"` raises.
    """

    compute_budget: float | None = field(
        default=None,
        metadata={"help": "Compute of the final training run in `budget_unit`s (e.g. 10 epochs of 1,000 examples = 10000)."},
    )
    budget_unit: str = field(
        default="samples",
        metadata={"help": "Unit of the budget: 'samples' (forward+backward of one example) or 'tokens'."},
    )
    selection_level: str = field(
        default="source",
        metadata={"help": "'source' learns a ratio per source (CADS-S); 'example' a score per example (CADS-E)."},
    )
    reward: str = field(
        default="horizon",
        metadata={"help": "How sampled selections are scored: 'horizon' (default), 'validation' or 'penalty' (paper eq. 7-9)."},
    )
    penalty_alpha: float = field(default=1.0, metadata={"help": "Weight alpha of the penalty term in eq. 7."})
    num_ratio_samples: int = field(
        default=64, metadata={"help": "K, selections sampled per step; they share one forward pass (paper: 2-5)."}
    )
    sigma_init: float = field(default=0.1, metadata={"help": "Initial scale of the truncated Gaussian (CADS-S)."})
    sigma_decay: float = field(default=0.99, metadata={"help": "Per-outer-step decay of sigma (paper: 0.99)."})
    sigma_min: float = field(default=1e-3, metadata={"help": "Floor of sigma; 0 reproduces the paper's schedule."})
    selection_learning_rate: float | None = field(
        default=None, metadata={"help": "Adam learning rate on s; default 1e-2 (CADS-S) or 5e-2 (CADS-E, the paper's)."}
    )
    selection_grad_clip: float = field(
        default=1.0, metadata={"help": "Maximum L2 norm of the s-gradient; 0 disables clipping."}
    )
    selection_update_interval: int = field(
        default=1, metadata={"help": "Model optimizer steps per selection update (one outer step)."}
    )
    selection_measure_interval: int = field(
        default=1, metadata={"help": "Measure the reward on one optimizer step in this many (validation-driven rewards)."}
    )
    ratio_init: float = field(default=0.5, metadata={"help": "Initial s of every source or example."})
    min_ratio: float = field(default=0.0, metadata={"help": "Lower bound of s; 0 lets a source be dropped."})
    surrogate_fractions: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.3, 0.5, 0.9],
        metadata={"help": "Subset fractions at which the surrogate loss curve is measured."},
    )
    surrogate_kind: str = field(
        default="spline", metadata={"help": "Surrogate fit in log space: 'spline' (cubic) or 'loglinear'."}
    )
    alignment_probe: str = field(
        default="central",
        metadata={"help": "Alignment measurement: 'central' (two eval forwards) or 'one_sided' (one forward; full precision)."},
    )
    validation_calibration: str = field(
        default="none",
        metadata={"help": "Validation loss of the search: 'none' (the model's loss) or 'temperature' (temperature-scaled, for accuracy)."},
    )
    proxy_fractions: list[float] | None = field(
        default=None,
        metadata={"help": "select_by_proxies: fractions of every source (and of the budget) the proxy runs train on "
                          "(unset: [0.25, 0.5] for up to three candidates, else [0.1, 0.25])."},
    )
    proxy_candidates: str = field(
        default="auto",
        metadata={"help": "select_by_proxies: 'nested' (unions of the k most valuable sources), 'subsets' (every "
                          "subset) or 'auto' (every subset for up to two sources, else nested)."},
    )
    proxy_keep_steps: bool = field(
        default=True, metadata={"help": "select_by_proxies: cut the batch with the data, keeping the full run's steps."}
    )
    proxy_refine_fraction: float | None = field(
        default=0.5,
        metadata={"help": "select_by_proxies: one more proxy fraction for the two best candidates when they are close."},
    )
    proxy_refine_margin: float = field(
        default=0.1,
        metadata={"help": "select_by_proxies: refine when the runner-up's error is within this relative margin."},
    )
    proxy_cache_rows: bool = field(
        default=True,
        metadata={"help": "select_by_proxies: read each row once for all proxies (False for random transforms)."},
    )
    proxy_value_examples: int = field(
        default=256,
        metadata={"help": "select_by_proxies: examples per source (and of validation) that measure each source's value."},
    )
    selection_eval_batch_size: int | None = field(
        default=None, metadata={"help": "Validation examples per step for L_val; default per_device_eval_batch_size."}
    )
    selection_averaging: str = field(
        default="tail", metadata={"help": "Result s: 'mean' (average over outer steps), 'tail' (over their second half) or 'last' (final s, the paper)."}
    )
    nonfinite_loss: str = field(
        default="skip", metadata={"help": "On a NaN/inf loss: 'skip' the selection update (counted) or 'stop'."}
    )

    def __post_init__(self):
        if self.selection_learning_rate is None:
            self.selection_learning_rate = 1e-2 if self.selection_level == "source" else 5e-2
        self._validate_selection_fields()
        if self.selection_eval_batch_size is None:
            self.selection_eval_batch_size = self.per_device_eval_batch_size
        super().__post_init__()

    def _validate_selection_fields(self) -> None:
        def check(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"CADSConfig.{name} must be {expected}, got {getattr(self, name)!r}.")

        check(
            self.compute_budget is None or (math.isfinite(self.compute_budget) and self.compute_budget > 0),
            "compute_budget",
            "a positive finite number",
        )
        check(self.budget_unit in BUDGET_UNITS, "budget_unit", f"one of {BUDGET_UNITS}")
        check(self.selection_level in SELECTION_LEVELS, "selection_level", f"one of {SELECTION_LEVELS}")
        from .objective import REWARDS  # the reward registry lives beside the rewards

        check(self.reward in REWARDS, "reward", f"one of {tuple(REWARDS)}")
        check(math.isfinite(self.penalty_alpha) and self.penalty_alpha >= 0, "penalty_alpha", ">= 0")
        check(self.num_ratio_samples >= 2, "num_ratio_samples", ">= 2 (the self-critical baseline needs two)")
        check(0 < self.sigma_init <= 1, "sigma_init", "in (0, 1]")
        check(0 < self.sigma_decay <= 1, "sigma_decay", "in (0, 1]")
        check(0 <= self.sigma_min <= self.sigma_init, "sigma_min", "in [0, sigma_init]")
        check(self.selection_learning_rate > 0, "selection_learning_rate", "> 0")
        check(self.selection_grad_clip >= 0, "selection_grad_clip", ">= 0")
        check(self.selection_update_interval >= 1, "selection_update_interval", ">= 1")
        check(self.selection_measure_interval >= 1, "selection_measure_interval", ">= 1")
        check(
            self.selection_measure_interval == 1 or not REWARDS[self.reward].measures_every_step,
            "selection_measure_interval",
            f"1 for reward={self.reward!r}, whose model objective needs every step's measurement",
        )
        check(0 <= self.min_ratio < 1, "min_ratio", "in [0, 1)")
        check(self.min_ratio <= self.ratio_init <= 1, "ratio_init", "in [min_ratio, 1]")
        check(
            len(self.surrogate_fractions) >= 2 and all(0 < f <= 1 for f in self.surrogate_fractions),
            "surrogate_fractions",
            "at least two fractions in (0, 1]",
        )
        check(self.surrogate_kind in SURROGATE_KINDS, "surrogate_kind", f"one of {SURROGATE_KINDS}")
        check(
            self.proxy_fractions is None or (
                len(self.proxy_fractions) >= 1 and len(set(self.proxy_fractions)) == len(self.proxy_fractions)
                and all(0 < f < 1 for f in self.proxy_fractions)),
            "proxy_fractions",
            "one or more distinct fractions in (0, 1)",
        )
        check(
            self.proxy_refine_fraction is None or 0 < self.proxy_refine_fraction < 1, "proxy_refine_fraction",
            "in (0, 1) or None",
        )
        check(self.proxy_refine_margin >= 0, "proxy_refine_margin", ">= 0")
        check(self.proxy_candidates in PROXY_CANDIDATES, "proxy_candidates", f"one of {PROXY_CANDIDATES}")
        check(self.proxy_value_examples >= 1, "proxy_value_examples", ">= 1")
        check(self.alignment_probe in ALIGNMENT_PROBES, "alignment_probe", f"one of {ALIGNMENT_PROBES}")
        check(
            self.alignment_probe == "central" or not (self.bf16 or self.fp16),
            "alignment_probe",
            "'central' with bf16 or fp16 (a one-sided step of 1e-3 drowns in half-precision rounding)",
        )
        check(
            self.validation_calibration in VALIDATION_CALIBRATIONS,
            "validation_calibration",
            f"one of {VALIDATION_CALIBRATIONS}",
        )
        check(
            self.selection_eval_batch_size is None or self.selection_eval_batch_size >= 1,
            "selection_eval_batch_size",
            ">= 1",
        )
        check(self.selection_averaging in AVERAGING, "selection_averaging", f"one of {AVERAGING}")
        check(self.nonfinite_loss in NONFINITE_POLICIES, "nonfinite_loss", f"one of {NONFINITE_POLICIES}")
