"""Vision data sources: readers, transform, label noise, source splitting."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms.v2.functional import to_pil_image

from cads_hf.vision import (
    NormalizePixels,
    image_folder_source,
    make_noisy_sources,
    noise_source_name,
    read_mnist_idx,
    split_sources,
    synthetic_digits,
    torchvision_source,
    with_label_noise,
)

SHARED_DATA = Path(os.environ.get("CADS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MNIST_DIR = SHARED_DATA / "vision" / "mnist"
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _column(dataset, name):
    return np.asarray(dataset.with_format("numpy", columns=[name])[:][name])


def _write_idx(path, array, magic, compress=False):
    data = struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _fake_mnist(tmp_path, n=12, compress=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    images = _write_idx(tmp_path / f"images{suffix}", rng.integers(0, 256, (n, 28, 28)), 2051, compress)
    labels = _write_idx(tmp_path / f"labels{suffix}", np.arange(n) % 10, 2049, compress)
    return images, labels


# --- readers -----------------------------------------------------------------------------------------------


def test_real_mnist_test_set():
    images, labels = MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        pytest.skip(f"real MNIST not found under {MNIST_DIR} (set CADS_SHARED_DATA)")
    dataset = read_mnist_idx(images, labels)
    assert len(dataset) == 10_000
    assert dataset.features["pixel_values"].shape == (1, 28, 28)
    assert np.bincount(_column(dataset, "labels"), minlength=10).tolist() == MNIST_TEST_COUNTS
    assert dataset.features["pixel_values"].dtype == "uint8"
    raw = np.asarray(dataset.with_format("numpy")[0]["pixel_values"])
    assert raw.max() == 255 and raw.min() == 0


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_reader_round_trips_idx(tmp_path, compress):
    images, labels = _fake_mnist(tmp_path, compress=compress)
    dataset = read_mnist_idx(images, labels)
    assert len(dataset) == 12
    assert _column(dataset, "labels").tolist() == (np.arange(12) % 10).tolist()
    expected = np.random.default_rng(0).integers(0, 256, (12, 28, 28)).astype(np.uint8)
    np.testing.assert_array_equal(_column(dataset, "pixel_values")[:, 0], expected)


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_idx_error_names_file(tmp_path, compress):
    images, labels = _fake_mnist(tmp_path, compress=compress)
    images.write_bytes(images.read_bytes()[:-50])
    with pytest.raises(ValueError, match=str(images)):
        read_mnist_idx(images, labels)


def test_idx_bad_magic_and_count_mismatch_name_files(tmp_path):
    images, labels = _fake_mnist(tmp_path)
    with pytest.raises(ValueError, match=rf"{labels}.*magic number 2049, expected 2051"):
        read_mnist_idx(labels, labels)
    short_labels = _write_idx(tmp_path / "short.gz", np.arange(5), 2049, compress=True)
    with pytest.raises(ValueError, match=str(short_labels)):
        read_mnist_idx(images, short_labels)
    header_only = tmp_path / "header"
    header_only.write_bytes(b"\x00\x00\x08")
    with pytest.raises(ValueError, match=str(header_only)):
        read_mnist_idx(header_only, labels)


def test_transform_yields_normalized_float_tensors():
    dataset = synthetic_digits(4, seed=0)
    raw = np.asarray(dataset.with_format("numpy")[1]["pixel_values"])
    pixels = dataset[1]["pixel_values"]
    assert isinstance(pixels, torch.Tensor) and pixels.dtype == torch.float32 and pixels.shape == (1, 28, 28)
    torch.testing.assert_close(pixels, (torch.from_numpy(raw).float() / 255 - 0.5) / 0.5)
    assert isinstance(dataset[1]["labels"], int)
    dataset.set_transform(NormalizePixels(mean=0.1307, std=0.3081))
    torch.testing.assert_close(dataset[1]["pixel_values"], (torch.from_numpy(raw).float() / 255 - 0.1307) / 0.3081)
    with pytest.raises(TypeError, match="uint8"):
        NormalizePixels()({"pixel_values": [[[[0.5]]]]})


def _write_image_folder(root, sizes):
    for class_name, (height, width) in zip(["cat", "dog", "dog"], sizes):
        (root / class_name).mkdir(parents=True, exist_ok=True)
        index = len(list((root / class_name).iterdir()))
        image = torch.full((3, height, width), 40 * (index + 1), dtype=torch.uint8)
        to_pil_image(image).save(root / class_name / f"{index}.png")


def test_image_folder_source(tmp_path):
    _write_image_folder(tmp_path, [(8, 8)] * 3)
    dataset = image_folder_source(tmp_path)
    assert dataset.features["labels"].names == ["cat", "dog"]
    assert _column(dataset, "labels").tolist() == [0, 1, 1]
    assert dataset[0]["pixel_values"].shape == (3, 8, 8)
    np.testing.assert_array_equal(_column(dataset, "pixel_values")[2], np.full((3, 8, 8), 80, np.uint8))
    assert image_folder_source(tmp_path, channels=1)[0]["pixel_values"].shape == (1, 8, 8)


def test_image_folder_sizes_must_match_unless_resized(tmp_path):
    _write_image_folder(tmp_path, [(8, 8), (8, 8), (6, 10)])
    with pytest.raises(ValueError, match=r"dog[/\\]1\.png"):
        image_folder_source(tmp_path)
    assert image_folder_source(tmp_path, image_size=(5, 7))[2]["pixel_values"].shape == (3, 5, 7)


def test_torchvision_source_reads_local_files_only(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 6), ("t10k", 4)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", np.full((n, 28, 28), 7), 2051)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    test = torchvision_source("MNIST", tmp_path, train=False)
    assert len(test) == 4 and len(torchvision_source("MNIST", tmp_path)) == 6
    assert _column(test, "labels").tolist() == [0, 1, 2, 3]
    assert test.features["labels"].num_classes == 10
    assert (_column(test, "pixel_values") == 7).all()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        torchvision_source("CIFAR10", tmp_path / "missing")
    with pytest.raises(ValueError, match="not a torchvision"):
        torchvision_source("utils", tmp_path)


def test_synthetic_digits_deterministic_and_balanced():
    a, b, c = synthetic_digits(200, seed=3), synthetic_digits(200, seed=3), synthetic_digits(200, seed=4)
    np.testing.assert_array_equal(_column(a, "pixel_values"), _column(b, "pixel_values"))
    assert not np.array_equal(_column(a, "pixel_values"), _column(c, "pixel_values"))
    assert np.bincount(_column(a, "labels")).tolist() == [20] * 10
    assert a.features["pixel_values"].shape == (1, 28, 28)
    assert synthetic_digits(3, seed=0, image_size=32)[0]["pixel_values"].shape == (1, 32, 32)


# --- label noise and sources ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    dataset = synthetic_digits(1000, seed=0)
    return dataset.add_column("example_id", np.arange(len(dataset)))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 60), fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_label_noise_realizes_exact_fraction(n, fraction, seed):
    dataset = synthetic_digits(n, seed=0)
    noisy = with_label_noise(dataset, fraction, num_classes=10, seed=seed)
    labels, clean, is_noisy = (_column(noisy, k) for k in ("labels", "clean_label", "is_noisy"))
    assert is_noisy.sum() == round(fraction * n)
    assert (labels != clean).tolist() == is_noisy.tolist()  # every noisy label differs, no other label changed
    np.testing.assert_array_equal(clean, _column(dataset, "labels"))


def test_label_noise_deterministic_and_uses_all_other_classes(digits):
    first = with_label_noise(digits, 0.45, num_classes=10, seed=7)
    again = with_label_noise(digits, 0.45, num_classes=10, seed=7)
    other = with_label_noise(digits, 0.45, num_classes=10, seed=8)
    for key in ("labels", "is_noisy"):
        np.testing.assert_array_equal(_column(first, key), _column(again, key))
    assert not np.array_equal(_column(first, "is_noisy"), _column(other, "is_noisy"))
    noisy = _column(first, "is_noisy")
    offsets = (_column(first, "labels") - _column(first, "clean_label"))[noisy] % 10
    assert set(offsets.tolist()) == set(range(1, 10))
    assert isinstance(first.features["labels"], ClassLabel) and first.features["clean_label"] == first.features["labels"]
    assert first[0]["pixel_values"].dtype == torch.float32  # transform kept
    np.testing.assert_array_equal(_column(first, "pixel_values"), _column(digits, "pixel_values"))


def test_label_noise_rejects_bad_arguments(digits):
    with pytest.raises(ValueError, match="fraction"):
        with_label_noise(digits, 1.5, num_classes=10)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        with_label_noise(digits, 0.1, num_classes=5)
    with pytest.raises(ValueError, match="already"):
        with_label_noise(with_label_noise(digits, 0.1, num_classes=10), 0.1, num_classes=10)


def test_split_sources_disjoint_sized_and_seeded(digits):
    sources = split_sources(digits, {"a": 300, "b": 200, "c": 100}, seed=1)
    assert list(sources) == ["a", "b", "c"]
    assert [len(s) for s in sources.values()] == [300, 200, 100]
    ids = [set(_column(s, "example_id").tolist()) for s in sources.values()]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 600
    again = split_sources(digits, {"a": 300, "b": 200, "c": 100}, seed=1)
    assert _column(again["b"], "example_id").tolist() == _column(sources["b"], "example_id").tolist()
    assert _column(split_sources(digits, [300], seed=2)["source_0"], "example_id").tolist() != sorted(ids[0])
    assert sources["a"][0]["pixel_values"].dtype == torch.float32
    with pytest.raises(ValueError, match="sum to at most 1000"):
        split_sources(digits, [600, 500])


def test_sources_accept_new_columns_without_materializing_pixels(digits):
    # A core tagging sources with add_column must not store transformed float pixels.
    source = split_sources(digits, [100], seed=0)["source_0"]
    tagged = source.add_column("source_id", [2] * len(source))
    assert tagged.features["pixel_values"] == digits.features["pixel_values"]
    torch.testing.assert_close(tagged[5]["pixel_values"], source[5]["pixel_values"])


def test_make_noisy_sources_paper_setup(digits):
    sources = make_noisy_sources(digits, seed=0)
    assert list(sources) == ["noise_0", "noise_22.5", "noise_45", "noise_67.5", "noise_90"]
    ids = set()
    for (name, source), level in zip(sources.items(), (0.0, 0.225, 0.45, 0.675, 0.9)):
        assert len(source) == 200 and source.column_names[-2:] == ["clean_label", "is_noisy"]
        assert _column(source, "is_noisy").sum() == round(level * 200)
        ids |= set(_column(source, "example_id").tolist())
    assert len(ids) == 1000
    again = make_noisy_sources(digits, seed=0)
    assert _column(again["noise_45"], "labels").tolist() == _column(sources["noise_45"], "labels").tolist()
    assert [len(s) for s in make_noisy_sources(digits, (0.0, 0.5), sizes=[10, 30]).values()] == [10, 30]
    assert noise_source_name(0.675) == "noise_67.5" and noise_source_name(1 / 3) == "noise_33.3333"
    with pytest.raises(ValueError, match="not distinct"):
        make_noisy_sources(digits, (0.1, 0.1))
