"""Image-classification datasets behind one loader, split the way the paper splits CIFAR-10.

Validation is always held out of the training set with a permutation seeded by `seed` (the paper keeps
5,000 of CIFAR-10's 50,000 training images); the test set is returned whole and never looked at while
training, so a search cannot overfit it.
"""

from __future__ import annotations

import gzip
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from components.trainer.dataset_registry import DATASETS, local_dir
from components.trainer.errors import DatasetError, DatasetFormatError, DatasetNotFound, UnknownDataset

FASHION_MNIST_DIR = DATASETS["fashion-mnist"].default_dir
_FASHION_MNIST_ROLES = ("train_images", "train_labels", "test_images", "test_labels")
FASHION_MNIST_FILES = dict(zip(_FASHION_MNIST_ROLES, DATASETS["fashion-mnist"].push_files, strict=True))
CIFAR10_DIR = DATASETS["cifar10"].default_dir
CIFAR10_FOLDER = DATASETS["cifar10"].unpacks_to
# The digits test split depends on this constant, not on `seed`, so that every run reports on one test set.
DIGITS_TEST_SEED = 0
DIGITS_TEST_SIZE = 360
DIGITS_VAL_SIZE = 360

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetSplits:
    """Train/validation/test splits: images uint8 N×C×H×W, labels int64 N."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]  # per channel, pixel values scaled to [0, 1], from the train split only
    std: tuple[float, ...]
    crop_padding: int  # pixels of padding for the random-crop augmentation
    horizontal_flip: bool  # whether a mirrored image is still the same class

    def __repr__(self) -> str:
        return (
            f"DatasetSplits(name={self.name!r}, train={len(self.train[1])}, val={len(self.val[1])}, "
            f"test={len(self.test[1])}, num_classes={self.num_classes}, image_size={self.image_size})"
        )


@dataclass(frozen=True)
class _Raw:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    val_fraction: float  # of the training pool held out for validation when no size is asked for
    crop_padding: int
    horizontal_flip: bool


def load_dataset(
    name: str = "fashion-mnist",
    *,
    data_dir: str | Path | None = None,
    train_subset: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
) -> DatasetSplits:
    """Load `name` ("fashion-mnist", "digits" or "cifar10") and split it.

    Splits, with the default `val_size`:
    - fashion-mnist: 55,000 train / 5,000 val from the 60,000 training images; the official 10,000 test.
    - cifar10: 45,000 train / 5,000 val from the 50,000 training images; the official 10,000 test.
    - digits (scikit-learn's 1,797 8×8 images): 360 test fixed by a constant seed, then 1,077 train /
      360 val.
    When a directory holds fewer training images than the official set, the validation share is kept.

    `train_subset=N` keeps N training images for quick searches. The validation split then shrinks with
    it: N × (default val / default train), but never under ceil(N / 10) nor over the default size, so
    `train_subset=5000` on fashion-mnist gives 500 val images. An explicit `val_size` always wins.
    Validation images come first in the seeded permutation and training images after them, so the two
    never overlap.

    `data_dir` overrides where fashion-mnist's IDX files (default /usr/share/datasets/fashion-mnist) or
    CIFAR-10's python batches (default ~/.cache/nasrl/cifar-10-batches-py) are read from. The CIFAR-10
    batches are pickles, as published: point `data_dir` only at files you trust.
    """
    if name not in LOADERS:
        raise UnknownDataset(f"dataset: {name!r} is not known (allowed: {', '.join(sorted(LOADERS))})")
    raw = LOADERS[name](data_dir)
    _check_labels(name, raw)
    pool = len(raw.train_labels)
    default_val = max(1, round(pool * raw.val_fraction))
    if train_subset is not None and not 1 <= train_subset <= pool - 1:
        raise ValueError(f"train_subset: {train_subset} is out of range (allowed: 1..{pool - 1} for {name})")
    if val_size is None:
        val_size = default_val
        if train_subset is not None:
            proportional = round(train_subset * default_val / (pool - default_val))
            val_size = min(default_val, max(proportional, math.ceil(train_subset / 10)))
    n_train = pool - val_size if train_subset is None else train_subset
    if val_size < 1 or n_train < 1 or val_size + n_train > pool:
        raise ValueError(
            f"val_size: {val_size} does not fit {name}'s {pool} training images "
            f"with {n_train} for training (allowed: 1..{pool - n_train})"
        )

    order = np.random.default_rng(seed).permutation(pool)
    val_idx, train_idx = order[:val_size], order[val_size : val_size + n_train]
    train = _split(raw.train_images[train_idx], raw.train_labels[train_idx])
    mean, std = _channel_stats(train[0])
    return DatasetSplits(
        name=name,
        train=train,
        val=_split(raw.train_images[val_idx], raw.train_labels[val_idx]),
        test=_split(raw.test_images, raw.test_labels),
        num_classes=raw.num_classes,
        in_channels=raw.train_images.shape[1],
        image_size=(raw.train_images.shape[2], raw.train_images.shape[3]),
        mean=mean,
        std=std,
        crop_padding=raw.crop_padding,
        horizontal_flip=raw.horizontal_flip,
    )


def _check_labels(name: str, raw: _Raw) -> None:
    for split, images, labels in (
        ("train", raw.train_images, raw.train_labels),
        ("test", raw.test_images, raw.test_labels),
    ):
        if len(images) != len(labels):
            raise DatasetFormatError(f"{name}: {len(images)} {split} images but {len(labels)} labels")
        if len(labels) and not 0 <= labels.min() <= labels.max() < raw.num_classes:
            raise DatasetFormatError(f"{name}: labels {labels.min()}..{labels.max()} outside 0..{raw.num_classes - 1}")


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    return (
        # np.require copies read-only buffers (the IDX files are read with np.frombuffer).
        torch.from_numpy(np.require(images, np.uint8, ["C", "W"])),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
    )


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # float64 sums: a float32 sum over 55,000 × 784 pixels loses the digits the std depends on.
    pixels = images.to(torch.float64).div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    std = pixels.std(dim=1, correction=0).clamp_min(1e-6)
    return tuple(pixels.mean(dim=1).tolist()), tuple(std.tolist())


# ---- fashion-mnist: gzipped IDX files --------------------------------------------------------------


def _load_fashion_mnist(data_dir: str | Path | None) -> _Raw:
    directory = Path(data_dir or FASHION_MNIST_DIR).expanduser()
    paths = {key: directory / filename for key, filename in FASHION_MNIST_FILES.items()}
    missing = [path.name for path in paths.values() if not path.is_file()]
    if missing:
        raise DatasetNotFound(
            f"fashion-mnist: {missing} not found in {directory}. Install the Debian package "
            f"(`apt-get install dataset-fashion-mnist`, files land in {FASHION_MNIST_DIR}) "
            "or pass --data-dir with the four *-ubyte.gz files of github.com/zalandoresearch/fashion-mnist."
        )
    train_images = _read_idx(paths["train_images"], ndim=3)[:, None]
    test_images = _read_idx(paths["test_images"], ndim=3)[:, None]
    return _Raw(
        train_images=train_images,
        train_labels=_read_idx(paths["train_labels"], ndim=1),
        test_images=test_images,
        test_labels=_read_idx(paths["test_labels"], ndim=1),
        num_classes=10,
        val_fraction=5_000 / 60_000,
        crop_padding=2,
        # Clothes are (nearly) mirror-symmetric classes; a mirrored shoe is still a shoe.
        horizontal_flip=True,
    )


def _read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (magic 0x0000 08 ndim, then ndim big-endian int32 sizes)."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise DatasetFormatError(f"{path}: magic number {magic:#06x} is not a {ndim}-d uint8 IDX file")
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(shape):
        raise DatasetFormatError(f"{path}: {len(data) - offset} bytes of data, header says shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


# ---- digits: scikit-learn's bundled 8×8 images -------------------------------------------------------


def _load_digits(data_dir: str | Path | None) -> _Raw:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # an extra: nothing but this 8x8 set needs scikit-learn
        raise DatasetError("digits ships inside scikit-learn: pip install 'nasrl[digits]'") from None

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_TEST_SEED).permutation(len(labels))
    test, pool = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return _Raw(
        train_images=images[pool],
        train_labels=labels[pool],
        test_images=images[test],
        test_labels=labels[test],
        num_classes=10,
        val_fraction=DIGITS_VAL_SIZE / len(pool),
        crop_padding=1,
        # A mirrored 2 or 7 is not a digit; mirroring would teach the child wrong labels.
        horizontal_flip=False,
    )


# ---- cifar10: the "python version" pickled batches ---------------------------------------------------


def _load_cifar10(data_dir: str | Path | None) -> _Raw:
    directory = local_dir("cifar10", data_dir)
    names = list(DATASETS["cifar10"].push_files)
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise DatasetNotFound(
            f"cifar10: {missing} not found in {directory}. Download and unpack the CIFAR-10 python version "
            "(https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) and pass its "
            f"{CIFAR10_FOLDER} folder with --data-dir."
        )
    batches = [_read_cifar_batch(directory / name) for name in names[:5]]
    test_images, test_labels = _read_cifar_batch(directory / "test_batch")
    meta = _unpickle(directory / "batches.meta")
    return _Raw(
        train_images=np.concatenate([images for images, _ in batches]),
        train_labels=np.concatenate([labels for _, labels in batches]),
        test_images=test_images,
        test_labels=test_labels,
        num_classes=len(meta.get(b"label_names", range(10))),
        val_fraction=5_000 / 50_000,
        crop_padding=4,
        horizontal_flip=True,
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except KeyError as error:
        raise DatasetFormatError(
            f"{path}: no {error.args[0]!r} entry (a CIFAR-10 batch has b'data' and b'labels')"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DatasetFormatError(f"{path}: data {data.shape} and {len(labels)} labels are not N×3072 and N")
    return data.reshape(-1, 3, 32, 32), labels


def _unpickle(path: Path) -> dict:
    # The batches are pickled by Python 2; bytes keys (b"data") come back with encoding="bytes".
    with open(path, "rb") as file:
        return pickle.load(file, encoding="bytes")


LOADERS: dict[str, Callable[[str | Path | None], _Raw]] = {
    "fashion-mnist": _load_fashion_mnist,
    "digits": _load_digits,
    "cifar10": _load_cifar10,
}
DATASET_NAMES: tuple[str, ...] = tuple(LOADERS)
