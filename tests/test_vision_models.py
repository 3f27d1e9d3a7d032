"""Vision classifiers: interface, shapes, loss reduction, normalization, serialization."""

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput

from cads_hf.vision import SmallCNN, SmallCNNConfig, TorchvisionClassifier


def _batch(channels, size, n=4, num_classes=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, channels, size, size, generator=generator)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return pixels, labels


def _check_forward_backward(model, channels, size, num_classes=10):
    pixels, labels = _batch(channels, size, num_classes=num_classes)
    out = model(pixel_values=pixels, labels=labels)
    assert isinstance(out, ImageClassifierOutput)
    assert out.logits.shape == (4, num_classes)
    assert out.loss.ndim == 0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_small_cnn_matches_paper_architecture():
    model = SmallCNN(SmallCNNConfig())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (5, 5)), (32, 64, (5, 5))]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 2
    assert [(l.in_features, l.out_features) for l in linears] == [(4 * 4 * 64, 128), (128, 10)]
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert model.main_input_name == "pixel_values"


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 20)])
def test_small_cnn_forward_backward(channels, size):
    model = SmallCNN(SmallCNNConfig(in_channels=channels, image_size=size, num_labels=7))
    _check_forward_backward(model, channels, size, num_classes=7)


def test_small_cnn_rejects_too_small_input():
    with pytest.raises(ValueError, match="too small"):
        SmallCNN(SmallCNNConfig(image_size=10))


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_resnet18_forward_backward(channels, size):
    model = TorchvisionClassifier.from_torchvision("resnet18", num_classes=10, in_channels=channels)
    assert model.net.conv1.in_channels == channels
    assert model.net.conv1.out_channels == 64 and model.net.conv1.stride == (2, 2)
    assert model.net.fc.out_features == 10
    _check_forward_backward(model, channels, size)


def test_first_conv_adapted_for_other_architectures():
    model = TorchvisionClassifier.from_torchvision("mobilenet_v3_small", num_classes=5, in_channels=1)
    assert model.net.features[0][0].in_channels == 1
    _check_forward_backward(model, 1, 32, num_classes=5)


@pytest.mark.parametrize(
    "make_model",
    [lambda: SmallCNN(SmallCNNConfig()), lambda: TorchvisionClassifier.from_torchvision("resnet18", in_channels=1)],
    ids=["small_cnn", "resnet18"],
)
def test_loss_is_mean_of_per_example_cross_entropy(make_model):
    model = make_model().eval()
    pixels, labels = _batch(1, 28, n=6)
    out = model(pixel_values=pixels, labels=labels)
    per_example = F.cross_entropy(out.logits, labels, reduction="none")
    torch.testing.assert_close(out.loss, per_example.mean())
    assert model(pixel_values=pixels).loss is None


def test_fixed_input_normalization_is_applied():
    torch.manual_seed(0)
    plain = SmallCNN(SmallCNNConfig()).eval()
    normalizing = SmallCNN(SmallCNNConfig(input_mean=[0.1307], input_std=[0.3081])).eval()
    normalizing.load_state_dict(plain.state_dict())
    pixels, _ = _batch(1, 28)
    torch.testing.assert_close(
        normalizing(pixel_values=pixels).logits, plain(pixel_values=(pixels - 0.1307) / 0.3081).logits
    )
    with pytest.raises(ValueError, match="together"):
        SmallCNNConfig(input_mean=[0.5])


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: SmallCNN(SmallCNNConfig(image_size=[24, 32], conv_channels=[8, 16], num_labels=3)),
        lambda: TorchvisionClassifier.from_torchvision("resnet18", num_classes=4, in_channels=1),
    ],
    ids=["small_cnn", "resnet18"],
)
def test_save_pretrained_round_trip(tmp_path, make_model):
    model = make_model().eval()
    channels = model.config.in_channels
    pixels = torch.randn(2, channels, 24, 32)
    model.save_pretrained(tmp_path)
    for loader in (type(model), AutoModelForImageClassification):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert type(reloaded) is type(model)
        assert reloaded.config.to_dict() | {"_name_or_path": ""} == model.config.to_dict()
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
