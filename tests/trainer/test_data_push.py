"""``nasrl data push``: a dataset uploaded once is what a trainer without the files reads back."""

from __future__ import annotations

import pytest

from components.trainer.data_store import PUSHABLE, fetch_dataset, push_dataset
from components.trainer.dataset_registry import DATASETS
from components.trainer.errors import DatasetNotFound, UnknownDataset
from components.trainer.lm import load_ptb


def test_the_corpus_inside_the_wheel_is_pushed_and_read_back(tmp_path):
    manifest = push_dataset("ptb", str(tmp_path / "datasets"))
    assert sorted(manifest["files"]) == sorted(DATASETS["ptb"].push_files)
    assert all(meta["size"] > 100_000 for meta in manifest["files"].values())
    copy = fetch_dataset(str(tmp_path / "datasets" / "ptb"), cache=tmp_path / "cache")
    assert load_ptb(data_dir=copy).vocab_size == load_ptb().vocab_size


def test_a_folder_without_the_files_is_named(tmp_path):
    with pytest.raises(DatasetNotFound, match=r"cifar10: data_batch_1, .* not found in .* \(use --from DIR\)"):
        push_dataset("cifar10", str(tmp_path / "datasets"), from_dir=str(tmp_path))


def test_a_dataset_that_ships_in_a_package_has_nothing_to_push(tmp_path):
    assert "digits" not in PUSHABLE
    with pytest.raises(UnknownDataset, match="digits ships with scikit-learn"):
        push_dataset("digits", str(tmp_path))
