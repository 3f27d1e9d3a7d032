"""Image classifiers with the Hugging Face model interface.

Both models are ``transformers.PreTrainedModel`` subclasses, so a plain
``transformers.Trainer`` (and ``CADSTrainer``) can train, checkpoint and reload
them, and ``AutoModelForImageClassification.from_pretrained`` finds them. They
are called as ``model(pixel_values=..., labels=...)`` and return an
``ImageClassifierOutput`` whose ``loss`` is the *mean* cross-entropy over the
batch; per-example losses are recomputed from ``logits`` by the CADS core.

* :class:`SmallCNN` -- the paper's MNIST network (appendix B.2).
* :class:`TorchvisionClassifier` -- any ``torchvision.models`` classifier,
  e.g. the ResNet-18 of appendix B.3.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

DEFAULT_NUM_LABELS = 10


class ImageClassifierConfig(PreTrainedConfig):
    """Fields shared by the vision classifiers.

    Args:
        num_labels: number of classes (HF convention; defaults to 10 rather than HF's 2).
        in_channels: channels of ``pixel_values``.
        input_mean, input_std: optional fixed per-channel (or scalar) normalization
            applied inside the model (paper B.2, "when enabled"). Leave ``None`` when
            the dataset transform already normalizes, to avoid normalizing twice.
    """

    in_channels: int = 1
    input_mean: list[float] | None = None
    input_std: list[float] | None = None

    def __post_init__(self, **kwargs):
        if self.id2label is None:  # fresh config: HF would otherwise default to 2 classes
            kwargs.setdefault("num_labels", DEFAULT_NUM_LABELS)
        if (self.input_mean is None) != (self.input_std is None):
            raise ValueError("input_mean and input_std must be given together")
        super().__post_init__(**kwargs)


class SmallCNNConfig(ImageClassifierConfig):
    """Configuration of :class:`SmallCNN`; defaults reproduce paper appendix B.2 on 28x28 MNIST.

    Args:
        image_size: input height and width (an int for square inputs); only used to
            size the first fully connected layer.
        conv_channels: output channels of the successive 5x5 convolutions.
        kernel_size: convolution kernel size (no padding).
        max_pool: apply 2x2 max-pooling after each convolution.
        hidden_size: units of the fully connected hidden layer.
    """

    model_type = "cads_small_cnn"

    image_size: int | list[int] = 28
    conv_channels: list[int] = (32, 64)
    kernel_size: int = 5
    max_pool: bool = True
    hidden_size: int = 128

    def __post_init__(self, **kwargs):
        self.conv_channels = list(self.conv_channels)  # JSON round-trips tuples as lists
        super().__post_init__(**kwargs)


class TorchvisionClassifierConfig(ImageClassifierConfig):
    """Configuration of :class:`TorchvisionClassifier`.

    Args:
        architecture: a ``torchvision.models.get_model`` name, e.g. ``"resnet18"``.
        architecture_kwargs: extra JSON-serializable keyword arguments for the
            torchvision constructor (e.g. ``{"image_size": 32}`` for ViTs).
    """

    model_type = "cads_torchvision_classifier"

    architecture: str = "resnet18"
    in_channels: int = 3
    architecture_kwargs: dict | None = None


class _ImageClassifier(PreTrainedModel):
    """Shared forward: optional fixed normalization, ``self.net`` logits, mean cross-entropy."""

    main_input_name = "pixel_values"
    config_class = ImageClassifierConfig
    net: nn.Module

    def _init_weights(self, module: nn.Module) -> None:
        # Keep the initialization done by the torch / torchvision constructors (HF's
        # generic N(0, 0.02) would discard e.g. torchvision's ResNet init).
        pass

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        """Classify a ``(B, C, H, W)`` float batch; ``loss`` is the batch-mean cross-entropy when ``labels`` is given."""
        if self.config.input_mean is not None:
            mean = pixel_values.new_tensor(self.config.input_mean).view(1, -1, 1, 1)
            std = pixel_values.new_tensor(self.config.input_std).view(1, -1, 1, 1)
            pixel_values = (pixel_values - mean) / std
        logits = self.net(pixel_values)
        loss = None if labels is None else F.cross_entropy(logits, labels, reduction="mean")
        return ImageClassifierOutput(loss=loss, logits=logits)


class SmallCNN(_ImageClassifier):
    """Paper appendix B.2 CNN: [conv5x5 -> ReLU -> maxpool2x2] x {32, 64} -> FC 128 -> ReLU -> linear.

    The flatten size is computed from ``config.image_size`` (4*4*64 = 1024 for
    28x28 inputs), so other input sizes work. No dropout.
    """

    config_class = SmallCNNConfig

    def __init__(self, config: SmallCNNConfig):
        super().__init__(config)
        height, width = (config.image_size, config.image_size) if isinstance(config.image_size, int) else config.image_size
        layers: list[nn.Module] = []
        channels = config.in_channels
        for out_channels in config.conv_channels:
            layers += [nn.Conv2d(channels, out_channels, config.kernel_size), nn.ReLU()]
            height, width = height - config.kernel_size + 1, width - config.kernel_size + 1
            if config.max_pool:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out_channels
        if height < 1 or width < 1:
            raise ValueError(f"image_size={config.image_size} is too small for {len(config.conv_channels)} conv/pool stages")
        layers += [
            nn.Flatten(),
            nn.Linear(channels * height * width, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, config.num_labels),
        ]
        self.net = nn.Sequential(*layers)
        self.post_init()


class TorchvisionClassifier(_ImageClassifier):
    """Wraps a randomly initialized ``torchvision.models`` classifier.

    Inputs with ``in_channels != 3`` are handled by replacing the network's first
    ``nn.Conv2d`` (in registration order, e.g. ResNet's ``conv1``) with a fresh
    convolution taking ``in_channels`` inputs and keeping its kernel, stride and
    padding. Inputs are not repeated to 3 channels, so the first layer costs no
    more than the data requires. The classification head is built by torchvision
    with ``num_classes=config.num_labels``.
    """

    config_class = TorchvisionClassifierConfig

    def __init__(self, config: TorchvisionClassifierConfig):
        super().__init__(config)
        net = torchvision.models.get_model(
            config.architecture, weights=None, num_classes=config.num_labels, **(config.architecture_kwargs or {})
        )
        if config.in_channels != 3:
            name, conv = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
            net.set_submodule(
                name,
                nn.Conv2d(
                    config.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    stride=conv.stride,
                    padding=conv.padding,
                    dilation=conv.dilation,
                    bias=conv.bias is not None,
                    padding_mode=conv.padding_mode,
                ),
            )
        self.net = net
        self.post_init()

    @classmethod
    def from_torchvision(
        cls,
        architecture: str,
        num_classes: int = DEFAULT_NUM_LABELS,
        in_channels: int = 3,
        input_mean: list[float] | None = None,
        input_std: list[float] | None = None,
        **architecture_kwargs,
    ) -> TorchvisionClassifier:
        """Build e.g. ``TorchvisionClassifier.from_torchvision("resnet18", num_classes=10, in_channels=1)``."""
        return cls(
            TorchvisionClassifierConfig(
                architecture=architecture,
                num_labels=num_classes,
                in_channels=in_channels,
                input_mean=input_mean,
                input_std=input_std,
                architecture_kwargs=architecture_kwargs or None,
            )
        )


for _config, _model in ((SmallCNNConfig, SmallCNN), (TorchvisionClassifierConfig, TorchvisionClassifier)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForImageClassification.register(_config, _model, exist_ok=True)
