"""A trial the store kept from its result.json: what it says, and that it crosses process boundaries intact."""

from __future__ import annotations

import pickle

import pytest

from components.trainer.errors import TrialNotPublished
from components.trainer.trial import PUBLISH_DEADLINE, exit_code, publish_deadline
from controller.errors import NasrlError
from controller.protocol import TrialResult


def test_it_says_what_was_trained_and_that_the_trial_runs_again():
    trained = TrialNotPublished("t00003", TrialResult("t00003", "COMPLETE", reward=0.9312), "store down")
    assert str(trained) == (
        "t00003 trained (reward 0.9312), but its result.json could not be published: store down; "
        "the trial is run again once the store answers"
    )
    assert str(TrialNotPublished("t00004", None, "store down")).startswith("t00004 was not trained: store down")
    assert exit_code(trained) == 6


def test_it_survives_pickling_as_a_batch_worker_returns_it():
    e = TrialNotPublished("t00003", TrialResult("t00003", "COMPLETE", reward=0.5), "store down")
    copy = pickle.loads(pickle.dumps(e))
    assert (copy.trial_id, copy.result, copy.cause, str(copy)) == (e.trial_id, e.result, e.cause, str(e))


def test_the_publish_deadline_comes_from_the_environment():
    assert publish_deadline({}) == PUBLISH_DEADLINE
    assert publish_deadline({"NASRL_PUBLISH_DEADLINE": "0"}) == 0.0
    for wrong in ("-1", "soon", "nan"):
        with pytest.raises(NasrlError, match=r"NASRL_PUBLISH_DEADLINE: .* is not allowed"):
            publish_deadline({"NASRL_PUBLISH_DEADLINE": wrong})
