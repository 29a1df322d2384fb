"""Every loader returns the same splits shape: validation from the training set, the test set whole."""

from __future__ import annotations

import gzip
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from components.trainer.datasets import FASHION_MNIST_DIR, DatasetSplits, load_dataset
from components.trainer.errors import DatasetFormatError, DatasetNotFound, UnknownDataset

needs_fashion_mnist = pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file(),
    reason=f"no {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist",
)


def rows(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> Counter[bytes]:
    """Each (image, label) as bytes, counted: comparing these proves a split is a partition of a source."""
    images, labels = np.asarray(images), np.asarray(labels)
    return Counter(image.tobytes() + bytes([int(label)]) for image, label in zip(images, labels, strict=True))


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def assert_normalisation_from_train(data: DatasetSplits) -> None:
    pixels = data.train[0].double().div(255).transpose(0, 1).reshape(data.in_channels, -1)
    np.testing.assert_allclose(data.mean, pixels.mean(dim=1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(data.std, pixels.std(dim=1, correction=0).numpy(), rtol=1e-6)


@needs_fashion_mnist
def test_fashion_mnist_holds_out_validation_from_train_and_keeps_the_official_test_set() -> None:
    data = load_dataset("fashion-mnist")
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (28, 28))
    assert data.train[0].shape == (55_000, 1, 28, 28) and data.train[0].dtype == torch.uint8
    assert data.val[0].shape == (5_000, 1, 28, 28) and data.val[1].dtype == torch.int64
    assert data.test[0].shape == (10_000, 1, 28, 28)

    directory = Path(FASHION_MNIST_DIR)
    official = {
        name: read_idx(directory / f"{name}-idx{3 if 'images' in name else 1}-ubyte.gz")
        for name in ("train-images", "train-labels", "t10k-images", "t10k-labels")
    }
    # A partition of the official training set: disjoint, and nothing from the test set.
    assert rows(*data.train) + rows(*data.val) == rows(official["train-images"], official["train-labels"])
    np.testing.assert_array_equal(data.test[0][:, 0].numpy(), official["t10k-images"])
    np.testing.assert_array_equal(data.test[1].numpy(), official["t10k-labels"])
    assert_normalisation_from_train(data)
    assert data.horizontal_flip


@needs_fashion_mnist
def test_fashion_mnist_train_subset_shrinks_validation_to_a_tenth() -> None:
    data = load_dataset("fashion-mnist", train_subset=5_000, seed=3)
    assert (len(data.train[1]), len(data.val[1]), len(data.test[1])) == (5_000, 500, 10_000)
    assert not set(rows(*data.train)) & set(rows(*data.val))
    assert_normalisation_from_train(data)


def test_fashion_mnist_reads_idx_files_from_data_dir(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train_images, train_labels = rng.integers(0, 256, (120, 28, 28)), rng.integers(0, 10, 120)
    test_images, test_labels = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 10, 30)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_labels)

    data = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert (len(data.train[1]), len(data.val[1]), len(data.test[1])) == (110, 10, 30)
    assert rows(data.train[0][:, 0], data.train[1]) + rows(data.val[0][:, 0], data.val[1]) == rows(
        train_images.astype(np.uint8), train_labels
    )
    np.testing.assert_array_equal(data.test[0][:, 0].numpy(), test_images)


@pytest.mark.parametrize(
    ("train_labels", "message"),
    [
        (np.zeros(5), "4 train images but 5 labels"),
        (np.zeros((4, 1, 1)), "train-labels-idx1-ubyte.gz: magic number 0x0803"),
    ],
)
def test_corrupt_idx_files_are_format_errors(tmp_path: Path, train_labels: np.ndarray, message: str) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2))
    with pytest.raises(DatasetFormatError, match=message):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as caught:
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    message = str(caught.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_digits_splits_are_seeded_and_the_test_set_never_moves() -> None:
    data = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    again = load_dataset("digits", seed=0)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (8, 8))
    assert (len(data.train[1]), len(data.val[1]), len(data.test[1])) == (1_077, 360, 360)
    assert data.train[0].dtype == torch.uint8 and int(data.train[0].max()) == 255
    assert not data.horizontal_flip  # a mirrored digit is not a digit
    torch.testing.assert_close(data.test[0], other.test[0])
    torch.testing.assert_close(data.val[0], again.val[0])
    assert not torch.equal(data.val[1], other.val[1])
    # Same pool of train + val images under any seed, and none of them is a test image.
    assert rows(*data.train) + rows(*data.val) == rows(*other.train) + rows(*other.val)
    assert_normalisation_from_train(data)


def test_train_subset_and_val_size() -> None:
    small = load_dataset("digits", train_subset=200)
    assert (len(small.train[1]), len(small.val[1]), len(small.test[1])) == (200, 67, 360)
    tiny = load_dataset("digits", train_subset=20)
    assert len(tiny.val[1]) == 7
    explicit = load_dataset("digits", train_subset=100, val_size=50)
    assert (len(explicit.train[1]), len(explicit.val[1])) == (100, 50)
    with pytest.raises(ValueError, match="train_subset: 5000"):
        load_dataset("digits", train_subset=5_000)
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("digits", val_size=1_437)


def write_cifar10(directory: Path, per_batch: int, test_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiny batches in the CIFAR-10 python format; returns the training data and labels as written."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    written = []
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        size = test_size if name == "test_batch" else per_batch
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, size)],
            b"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(size)],
        }
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
        written.append(batch)
    names = "airplane automobile bird cat deer dog frog horse ship truck"
    meta = {b"label_names": [name.encode() for name in names.split()]}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    data = np.concatenate([batch[b"data"] for batch in written[:5]])
    labels = np.concatenate([batch[b"labels"] for batch in written[:5]])
    return data, labels


def test_cifar10_reads_python_batches_into_channel_planes(tmp_path: Path) -> None:
    data_rows, labels = write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=20, test_size=15)
    data = load_dataset("cifar10", data_dir=tmp_path)  # the parent folder of the unpacked tarball works too
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, (32, 32))
    assert (len(data.train[1]), len(data.val[1]), len(data.test[1])) == (90, 10, 15)
    # Each row is the red plane, then green, then blue, each 32×32 row-major.
    expected = data_rows.reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(expected[:, 0].reshape(-1, 1024), data_rows[:, :1024])
    assert rows(*data.train) + rows(*data.val) == rows(expected, labels)
    test_batch = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    np.testing.assert_array_equal(data.test[0].numpy(), test_batch[b"data"].reshape(-1, 3, 32, 32))
    assert data.horizontal_flip and data.crop_padding == 4
    assert_normalisation_from_train(data)


def test_cifar10_missing_batch_is_named(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=2, test_size=2)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(DatasetNotFound, match=r"data_batch_4.*--data-dir"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_unknown_dataset_lists_the_allowed_names() -> None:
    with pytest.raises(UnknownDataset, match=r"'mnist'.*cifar10, digits, fashion-mnist"):
        load_dataset("mnist")
