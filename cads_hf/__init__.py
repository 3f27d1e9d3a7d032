"""cads_hf: Computational-budget-Aware Data Selection (CADS) for `transformers.Trainer`."""

from .budget import ComputeBudget
from .config import CADSConfig
from .example_selection import ExampleSelection, train_on_selection
from .final_training import train_for_budget, train_on_mixture
from .mixture import Mixture
from .objective import REWARDS, PenaltyReward, Reward, StepStatistics
from .policies import BernoulliPolicy, TruncatedGaussianPolicy
from .proxy_selection import select_by_proxies
from .sources import SourceMixtureSampler, SourceSet, StratifiedSourceSampler, selected_indices
from .surrogate import LossSurrogate
from .trainer import CADSTrainer

__version__ = "0.1.0"

__all__ = [
    "CADSConfig",
    "CADSTrainer",
    "ComputeBudget",
    "ExampleSelection",
    "train_on_selection",
    "LossSurrogate",
    "Mixture",
    "PenaltyReward",
    "REWARDS",
    "Reward",
    "StepStatistics",
    "BernoulliPolicy",
    "TruncatedGaussianPolicy",
    "SourceMixtureSampler",
    "SourceSet",
    "StratifiedSourceSampler",
    "selected_indices",
    "select_by_proxies",
    "train_for_budget",
    "train_on_mixture",
]
