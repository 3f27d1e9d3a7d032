"""Vision adapter for CADS: image classifiers, image data sources and a collator."""

from .collator import ImageCollator
from .models import (
    ImageClassifierConfig,
    SmallCNN,
    SmallCNNConfig,
    TorchvisionClassifier,
    TorchvisionClassifierConfig,
)
from .sources import (
    PAPER_NOISE_LEVELS,
    image_folder_source,
    make_noisy_sources,
    noise_source_name,
    read_mnist_idx,
    split_sources,
    synthetic_digits,
    torchvision_source,
    with_label_noise,
)
from .transforms import NormalizePixels

__all__ = [
    "PAPER_NOISE_LEVELS",
    "ImageClassifierConfig",
    "ImageCollator",
    "NormalizePixels",
    "SmallCNN",
    "SmallCNNConfig",
    "TorchvisionClassifier",
    "TorchvisionClassifierConfig",
    "image_folder_source",
    "make_noisy_sources",
    "noise_source_name",
    "read_mnist_idx",
    "split_sources",
    "synthetic_digits",
    "torchvision_source",
    "with_label_noise",
]
