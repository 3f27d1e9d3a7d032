"""Image-classification data sources as ``datasets.Dataset`` objects.

Every reader returns the same schema:

* ``pixel_values``: ``Array3D(shape=(C, H, W), dtype="uint8")`` -- compact storage;
* ``labels``: ``ClassLabel`` -- class index (``int``);

with :class:`~cads_hf.vision.transforms.NormalizePixels` attached through
``Dataset.with_transform``, so indexing yields float32 ``(C, H, W)`` tensors.
The column is called ``pixel_values`` already on disk so that ``Trainer``'s
``remove_unused_columns`` (which matches stored column names against the
model's ``forward`` signature) keeps it. Swap the normalization with
``ds.set_transform(NormalizePixels(mean, std))``.

:func:`with_label_noise` adds ``clean_label`` and ``is_noisy`` columns;
:func:`split_sources` and :func:`make_noisy_sources` cut one dataset into the
disjoint, named sources that CADS-S weights (paper section 5.2).
"""

from __future__ import annotations

import gzip
import inspect
import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from datasets import Array3D, ClassLabel, Dataset, Features
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import resize

from .transforms import NormalizePixels

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
PAPER_NOISE_LEVELS = (0.0, 0.225, 0.45, 0.675, 0.9)  # section 5.2

# Seven-segment layout of each digit (segments a..g: top, upper right, lower right,
# bottom, lower left, upper left, middle).
_DIGIT_SEGMENTS = ("abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg")


def _image_dataset(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Dataset:
    """Wrap ``(N, C, H, W)`` uint8 images and int labels in the shared schema and transform."""
    features = Features(
        {"pixel_values": Array3D(shape=images.shape[1:], dtype="uint8"), "labels": ClassLabel(names=list(class_names))}
    )
    dataset = Dataset.from_dict({"pixel_values": images, "labels": labels}, features=features)
    return dataset.with_transform(NormalizePixels())


def _stack_images(
    items: Iterable[tuple[torch.Tensor, int, str]], image_size: int | Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``(uint8 CHW image, label, where)`` items into ``(N, C, H, W)`` images and labels.

    Images are resized to ``image_size`` when given; ``where`` names the item
    (file path or index) in the error raised when sizes differ.
    """
    size = None if image_size is None else ([image_size] * 2 if isinstance(image_size, int) else list(image_size))
    images, labels = [], []
    for image, label, where in items:
        if size is not None:
            image = resize(image, size, antialias=True)
        if images and image.shape != images[0].shape:
            raise ValueError(
                f"{where}: image shape {tuple(image.shape)} differs from {tuple(images[0].shape)}; "
                "pass image_size=... to resize all images"
            )
        images.append(image)
        labels.append(label)
    if not images:
        raise ValueError("no images found")
    return torch.stack(images).numpy(), np.asarray(labels, dtype=np.int64)


def _read_idx(path: str | Path, magic: int, ndim: int) -> np.ndarray:
    """Read a (possibly gzipped) IDX file of unsigned bytes, validating magic number and size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip signature; decide by content, not by file name
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: cannot read IDX file ({exc})") from exc
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    found, *dims = struct.unpack(f">{1 + ndim}I", raw[:header])
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found}, expected {magic}")
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, expected {expected} for an IDX array of shape {tuple(dims)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_mnist_idx(images_path: str | Path, labels_path: str | Path) -> Dataset:
    """Read MNIST-format IDX files (raw or ``.gz``) into a ``(1, H, W)`` image dataset with labels 0-9.

    Raises ``ValueError`` naming the offending file on a wrong magic number
    (images 2051, labels 2049), a truncated/corrupt file, mismatched counts or
    labels outside 0-9.
    """
    images = _read_idx(images_path, IDX_IMAGES_MAGIC, ndim=3)
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC, ndim=1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: label {labels.max()} outside 0-9")
    return _image_dataset(images[:, None], labels.astype(np.int64), [str(d) for d in range(10)])


def image_folder_source(root: str | Path, channels: int = 3, image_size: int | Sequence[int] | None = None) -> Dataset:
    """Read an ImageFolder tree (``root/<class name>/<image>``; classes sorted by name).

    Images are loaded by ``torchvision.datasets.ImageFolder`` (as RGB) and kept
    as RGB (``channels=3``) or converted to grayscale (``channels=1``). All
    images must share one size unless ``image_size`` (an int or
    ``(height, width)``) is given to resize them.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    to_tensor = v2.PILToTensor() if channels == 3 else v2.Compose([v2.Grayscale(), v2.PILToTensor()])
    folder = torchvision.datasets.ImageFolder(str(root), transform=to_tensor)
    items = ((image, label, path) for (image, label), (path, _) in zip(folder, folder.samples))
    return _image_dataset(*_stack_images(items, image_size), folder.classes)


def torchvision_source(
    name: str, root: str | Path, train: bool = True, image_size: int | Sequence[int] | None = None, **dataset_kwargs
) -> Dataset:
    """Read a ``torchvision.datasets`` classification set (e.g. ``"MNIST"``, ``"CIFAR10"``) from local files.

    Never downloads: files must already be under ``root`` in torchvision's
    layout (e.g. ``root/MNIST/raw/``, ``root/cifar-10-batches-py/``), otherwise a
    ``FileNotFoundError`` says where they were expected. ``train`` selects the
    split (mapped to ``split="train"/"test"`` for datasets such as SVHN); other
    constructor arguments go through ``dataset_kwargs``.
    """
    dataset_class = getattr(torchvision.datasets, name, None)
    if not (inspect.isclass(dataset_class) and issubclass(dataset_class, torchvision.datasets.VisionDataset)):
        raise ValueError(f"{name!r} is not a torchvision.datasets dataset")
    params = inspect.signature(dataset_class.__init__).parameters
    if "train" in params:
        dataset_kwargs["train"] = train
    elif "split" in params:
        dataset_kwargs.setdefault("split", "train" if train else "test")
    if "download" in params:
        dataset_kwargs["download"] = False
    try:
        dataset = dataset_class(str(root), transform=v2.PILToTensor(), **dataset_kwargs)
    except (RuntimeError, FileNotFoundError) as exc:
        raise FileNotFoundError(
            f"torchvision dataset {name} not found under {root} (downloads are disabled; "
            f"place the files there in torchvision's layout): {exc}"
        ) from exc
    items = ((image, int(label), f"{name}[{i}]") for i, (image, label) in enumerate(dataset))
    images, labels = _stack_images(items, image_size)
    class_names = getattr(dataset, "classes", None) or [str(c) for c in range(int(labels.max()) + 1)]
    return _image_dataset(images, labels, class_names)


def _seven_segment(digit: int, height: int, width: int, thickness: int) -> np.ndarray:
    """Binary ``(height, width)`` glyph of ``digit`` drawn with strokes ``thickness`` pixels wide."""
    glyph = np.zeros((height, width), dtype=np.float32)
    mid, t = height // 2, thickness
    strokes = {
        "a": (slice(0, t), slice(0, width)),
        "b": (slice(0, mid + 1), slice(width - t, width)),
        "c": (slice(mid, height), slice(width - t, width)),
        "d": (slice(height - t, height), slice(0, width)),
        "e": (slice(mid, height), slice(0, t)),
        "f": (slice(0, mid + 1), slice(0, t)),
        "g": (slice(mid - t // 2, mid - t // 2 + t), slice(0, width)),
    }
    for segment in _DIGIT_SEGMENTS[digit]:
        glyph[strokes[segment]] = 1.0
    return glyph


def synthetic_digits(n: int, seed: int = 0, image_size: int = 28) -> Dataset:
    """Offline stand-in for MNIST: ``n`` seven-segment digits (10 balanced classes) on a noisy background.

    Each ``(1, image_size, image_size)`` image draws its glyph size, stroke
    width, shift from the centre, brightness and Gaussian pixel noise at random, so the task
    is not trivially memorized yet a small CNN learns it well above chance in a
    few hundred steps. Fully determined by ``seed``.
    """
    if image_size < 12:
        raise ValueError(f"image_size must be at least 12, got {image_size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(_DIGIT_SEGMENTS))
    canvas = np.zeros((n, image_size, image_size), dtype=np.float32)
    shift = image_size // 7
    for i, digit in enumerate(labels):
        height = int(rng.integers(round(0.45 * image_size), round(0.65 * image_size) + 1))
        width = int(rng.integers(round(0.3 * image_size), round(0.45 * image_size) + 1))
        thickness = int(rng.integers(max(1, image_size // 14), max(2, image_size // 9) + 1))
        # Centred like MNIST digits, then shifted by up to image_size // 7 pixels (clipped to fit).
        top = int(np.clip((image_size - height) // 2 + rng.integers(-shift, shift + 1), 0, image_size - height))
        left = int(np.clip((image_size - width) // 2 + rng.integers(-shift, shift + 1), 0, image_size - width))
        brightness = rng.uniform(0.6, 1.0)
        canvas[i, top : top + height, left : left + width] = brightness * _seven_segment(digit, height, width, thickness)
    canvas += rng.normal(0.0, 0.15, size=canvas.shape).astype(np.float32)
    images = np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8)[:, None]
    return _image_dataset(images, labels.astype(np.int64), [str(d) for d in range(len(_DIGIT_SEGMENTS))])


def _with_format_of(edited: Dataset, original: Dataset) -> Dataset:
    """Re-attach ``original``'s format (e.g. its ``NormalizePixels`` transform) to ``edited``.

    Edits run on ``original.with_format(None)`` because some ``datasets``
    operations (``add_column`` on an index-mapped dataset) otherwise materialize
    the *transformed* float pixels into the stored table.
    """
    fmt = original.format
    if fmt["type"] == "custom":
        return edited.with_transform(fmt["format_kwargs"]["transform"])
    return edited.with_format(fmt["type"], **fmt["format_kwargs"])


def with_label_noise(
    dataset: Dataset, fraction: float, num_classes: int, seed: int = 0, label_column: str = "labels"
) -> Dataset:
    """Corrupt exactly ``round(fraction * len(dataset))`` labels, chosen at random by ``seed``.

    "Noise" means *changed to a different class*: each chosen label is replaced by
    a class drawn uniformly from the other ``num_classes - 1`` classes, so the
    realized noise rate equals ``fraction`` (up to rounding) instead of
    ``fraction * (1 - 1/num_classes)``. Adds ``clean_label`` (the original label)
    and ``is_noisy`` (bool) columns; the dataset's transform is kept.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if "clean_label" in dataset.column_names:
        raise ValueError("dataset already has label noise (a 'clean_label' column)")
    raw = dataset.with_format(None)
    clean = np.asarray(raw.with_format("numpy", columns=[label_column])[:][label_column], dtype=np.int64)
    if clean.size and (clean.min() < 0 or clean.max() >= num_classes):
        raise ValueError(f"{label_column} values must lie in [0, {num_classes}), found {clean.min()}..{clean.max()}")
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(clean), size=round(fraction * len(clean)), replace=False)
    noisy = clean.copy()
    # An offset in 1..num_classes-1 guarantees a different class, uniformly.
    noisy[flipped] = (clean[flipped] + rng.integers(1, num_classes, size=len(flipped))) % num_classes
    is_noisy = np.zeros(len(clean), dtype=bool)
    is_noisy[flipped] = True
    feature = raw.features[label_column]
    edited = (
        raw.remove_columns(label_column)
        .add_column(label_column, noisy, feature=feature)
        .add_column("clean_label", clean, feature=feature)
        .add_column("is_noisy", is_noisy)
    )
    return _with_format_of(edited, dataset)


def split_sources(dataset: Dataset, sizes: Mapping[str, int] | Sequence[int], seed: int = 0) -> dict[str, Dataset]:
    """Cut disjoint random subsets of the given sizes out of ``dataset``.

    ``sizes`` maps source names to sizes, or is a list of sizes named
    ``source_0``, ``source_1``, ... Examples left over when the sizes sum to
    less than ``len(dataset)`` are dropped. Each source is a contiguous copy
    that keeps the original order of its examples and the dataset's transform.
    """
    named = dict(sizes) if isinstance(sizes, Mapping) else {f"source_{i}": s for i, s in enumerate(sizes)}
    if any(s < 0 for s in named.values()) or sum(named.values()) > len(dataset):
        raise ValueError(f"source sizes {named} must be >= 0 and sum to at most {len(dataset)}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    bounds = np.cumsum([0, *named.values()])
    raw = dataset.with_format(None)
    # flatten_indices: an index-mapped dataset with a transform would store transformed
    # pixels if a caller later used add_column (e.g. to tag a source_id).
    return {
        name: _with_format_of(raw.select(np.sort(order[start:stop])).flatten_indices(), dataset)
        for name, start, stop in zip(named, bounds[:-1], bounds[1:])
    }


def noise_source_name(fraction: float) -> str:
    """Stable source name for a noise level: 0 -> ``noise_0``, 0.225 -> ``noise_22.5``, 0.9 -> ``noise_90``."""
    return f"noise_{round(100 * fraction, 6):g}"


def make_noisy_sources(
    dataset: Dataset,
    noise_levels: Sequence[float] = PAPER_NOISE_LEVELS,
    sizes: int | Sequence[int] | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    label_column: str = "labels",
) -> dict[str, Dataset]:
    """Split ``dataset`` into one source per noise level and corrupt each with :func:`with_label_noise`.

    Reproduces the paper's section 5.2 setup (five equal groups with 0%, 22.5%,
    45%, 67.5% and 90% label noise). ``sizes`` is one size for every source, one
    per level, or ``None`` for ``len(dataset) // len(noise_levels)`` each.
    ``num_classes`` defaults to the label column's ``ClassLabel``. Every source,
    including the clean one, gets ``clean_label`` / ``is_noisy`` so all share one
    schema. Sources are named by :func:`noise_source_name`.
    """
    if num_classes is None:
        feature = dataset.features[label_column]
        if not isinstance(feature, ClassLabel):
            raise ValueError(f"pass num_classes: {label_column!r} is {feature}, not a ClassLabel")
        num_classes = feature.num_classes
    if sizes is None:
        sizes = [len(dataset) // len(noise_levels)] * len(noise_levels)
    elif isinstance(sizes, int):
        sizes = [sizes] * len(noise_levels)
    if len(sizes) != len(noise_levels):
        raise ValueError(f"got {len(sizes)} sizes for {len(noise_levels)} noise levels")
    names = [noise_source_name(p) for p in noise_levels]
    if len(set(names)) != len(names):
        raise ValueError(f"noise levels {noise_levels} are not distinct")
    parts = split_sources(dataset, dict(zip(names, sizes)), seed=seed)
    # Independent, reproducible noise streams per source, distinct from the split's.
    noise_seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(len(names))]
    return {
        name: with_label_noise(parts[name], p, num_classes, noise_seed, label_column)
        for name, p, noise_seed in zip(names, noise_levels, noise_seeds)
    }
