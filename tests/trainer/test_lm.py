"""Penn Treebank loading, the language model around a searched cell, its training and the paper's reward."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from components.trainer.errors import EXIT_CODES, DatasetNotFound, InvalidConfig
from components.trainer.lm import (
    Corpus,
    LMConfig,
    LMResult,
    batchify,
    build_lm,
    count_parameters,
    evaluate_lm,
    lm_reward,
    load_ptb,
    lr_factor,
    train_lm,
    write_ptb_files,
)
from components.trainer.train import TrainResult
from controller.spaces.rnn import PAPER_CELL

# One thread and no dropout: a few seconds on a busy 2-core machine, and the same numbers every run.
TINY = LMConfig(
    epochs=3,
    batch_size=10,
    hidden_size=32,
    dropout=0.0,
    recurrent_dropout=0.0,
    embedding_dropout=0.0,
    device="cpu",
    num_threads=1,
)


@pytest.fixture(scope="module")
def ptb() -> Corpus:
    return load_ptb()


@pytest.fixture(scope="module")
def tiny_corpus() -> Corpus:
    return load_ptb(token_subset=10_000)


def test_ptb_is_the_standard_mikolov_split(ptb):
    assert (len(ptb.train), len(ptb.valid), len(ptb.test)) == (929_589, 73_760, 82_430)
    assert ptb.vocab_size == 10_000 and {"<unk>", "<eos>", "N"} <= set(ptb.vocab)
    words = [ptb.vocab[i] for i in ptb.train[:27].tolist()]
    assert words[:3] == ["aer", "banknote", "berlitz"] and words[24] == "<eos>" and words[25] == "pierre"
    assert ptb.vocab[ptb.train[-1]] == "<eos>"  # the package's extra trailing newline is dropped
    assert all(t.dtype == torch.int64 for t in (ptb.train, ptb.valid, ptb.test))


def test_token_subset_shrinks_train_and_valid_but_keeps_the_vocabulary(ptb):
    small = load_ptb(token_subset=80_000)
    assert (len(small.train), len(small.valid), len(small.test)) == (80_000, 8_000, 82_430)
    assert small.vocab == ptb.vocab and torch.equal(small.train, ptb.train[:80_000])
    assert len(load_ptb(token_subset=1_000).valid) == 5_000  # validation never below 5,000 tokens
    with pytest.raises(InvalidConfig, match="token_subset: 0 is not allowed"):
        load_ptb(token_subset=0)


def test_ptb_round_trips_through_the_standard_files(tmp_path, ptb):
    paths = write_ptb_files(tmp_path)
    assert [p.name for p in paths] == ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]
    assert paths[0].stat().st_size == 5_101_618  # the size of the standard ptb.train.txt
    again = load_ptb(data_dir=tmp_path)
    assert again.vocab == ptb.vocab
    assert all(torch.equal(getattr(again, s), getattr(ptb, s)) for s in ("train", "valid", "test"))
    with pytest.raises(DatasetNotFound, match=r"ptb\.train\.txt"):
        load_ptb(data_dir=tmp_path / "missing")


def test_batchify_cuts_the_stream_into_contiguous_columns():
    data = batchify(torch.arange(11), 3)
    assert data.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # the 11th token is dropped


def test_reward_is_c_over_perplexity_squared():
    assert lm_reward(80.0) == pytest.approx(80 / 6400)
    assert lm_reward(40.0, c=80) == pytest.approx(0.05) and lm_reward(1.0, c=3.0) == 3.0


@pytest.fixture(scope="module")
def trained(tiny_corpus) -> LMResult:
    return train_lm(PAPER_CELL, tiny_corpus, TINY, keep_model=True)


def test_a_tiny_lm_learns_and_is_rewarded_by_its_perplexity(trained, tiny_corpus):
    assert trained.status == "COMPLETE" and trained.exit_code == 0
    val = trained.curves["val_perplexity"]
    assert len(val) == 3 and val[-1] < val[0] < 10_000  # falls, from below uniform guessing over 10,000 words
    assert trained.val_perplexity == min(val)
    assert trained.reward == pytest.approx(80 / trained.val_perplexity**2)
    valid = batchify(tiny_corpus.valid, TINY.eval_batch_size)
    assert torch.exp(torch.tensor(evaluate_lm(trained.model, valid))).item() == pytest.approx(val[-1], rel=1e-4)


def test_the_result_has_the_image_trainers_shape(trained):
    data = trained.to_dict()
    image_keys = {f.name for f in dataclasses.fields(TrainResult)} - {"model"}
    assert set(data) == image_keys | {"val_perplexity"} and data["val_accuracy"] is None
    assert set(data["curves"]) == {"train_loss", "train_perplexity", "val_loss", "val_perplexity"}
    assert data["params"] == count_parameters(build_lm(PAPER_CELL, 10_000, TINY))


def test_tied_softmax_shares_the_embedding():
    tied = build_lm(PAPER_CELL, 100, LMConfig(hidden_size=8))
    untied = build_lm(PAPER_CELL, 100, LMConfig(hidden_size=8, tie_weights=False))
    assert tied.decoder.weight is tied.embedding.weight
    assert count_parameters(untied) - count_parameters(tied) == 100 * 8


def test_dropout_only_while_training():
    torch.manual_seed(0)
    model = build_lm(PAPER_CELL, 50, LMConfig(hidden_size=8, dropout=0.3, recurrent_dropout=0.3, embedding_dropout=0.3))
    tokens = torch.randint(0, 50, (6, 4))
    model.eval()
    assert torch.equal(model(tokens)[0], model(tokens)[0])
    model.train()
    assert not torch.equal(model(tokens)[0], model(tokens)[0])


def test_a_diverging_model_fails_with_nan_loss(tiny_corpus):
    result = train_lm(PAPER_CELL, tiny_corpus, dataclasses.replace(TINY, epochs=1, learning_rate=1e30))
    assert result.status == "FAILED" and result.reason_code == "nan_loss" and result.reward is None
    assert result.exit_code == EXIT_CODES["nan_loss"]


def test_too_large_and_invalid_architectures_fail_before_training(tiny_corpus):
    big = train_lm(PAPER_CELL, tiny_corpus, dataclasses.replace(TINY, max_parameters=1_000))
    assert big.reason_code == "too_large" and big.params > 1_000 and big.curves["val_perplexity"] == []
    bad = train_lm({**PAPER_CELL, "cell_index_inject": 99}, tiny_corpus, TINY)
    assert bad.reason_code == "invalid_architecture" and "cell_index_inject: 99" in bad.reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bptt": 0}, "bptt: 0 is not allowed"),
        ({"dropout": 1.0}, "dropout: 1.0 is not allowed"),
        ({"optimizer": "rmsprop"}, "optimizer: 'rmsprop' is not allowed (allowed: sgd, adam)"),
        ({"reward_c": 0}, "reward_c: 0 is not allowed"),
    ],
)
def test_config_errors_name_the_field(change, message):
    with pytest.raises(InvalidConfig) as e:
        LMConfig(**change)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_decay_epoch_multiplies_the_schedule_by_a_tenth_from_that_epoch_on(schedule):
    config = LMConfig(epochs=3, lr_schedule=schedule, lr_decay_epoch=2)
    steps = 10  # per epoch
    for step in range(3 * steps):
        cosine = 0.5 * (1 + math.cos(math.pi * step / (3 * steps)))
        expected = (cosine if schedule == "cosine" else 1.0) * (0.1 if step >= 2 * steps else 1.0)
        assert lr_factor(config, step, steps) == pytest.approx(expected, abs=1e-12), step
    assert lr_factor(LMConfig(epochs=3, lr_schedule="constant"), 29, steps) == 1.0  # no decay by default


def test_training_follows_the_decayed_rate(tiny_corpus):
    # The same seed gives the same first epoch; from the decay epoch on the runs part.
    config = dataclasses.replace(TINY, epochs=2, lr_schedule="constant", num_layers=1, hidden_size=16)
    plain = train_lm(PAPER_CELL, tiny_corpus, config, keep_model=True)
    decayed = train_lm(PAPER_CELL, tiny_corpus, dataclasses.replace(config, lr_decay_epoch=1), keep_model=True)
    assert plain.curves["train_loss"][0] == decayed.curves["train_loss"][0]
    assert plain.curves["train_loss"][1] != decayed.curves["train_loss"][1]


@pytest.mark.parametrize("decay", [0, 3, 1.5])
def test_a_decay_epoch_that_never_comes_is_refused(decay):
    with pytest.raises(InvalidConfig, match="lr_decay_epoch"):
        LMConfig(epochs=3, lr_decay_epoch=decay)
