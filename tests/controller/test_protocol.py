"""The trial protocol: architecture.json and result.json as typed, versioned records that refuse a broken file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.trainer.trial import exit_code, run_trial
from controller.config import build_config
from controller.errors import NasrlError, ProtocolError
from controller.executors import local
from controller.executors.base import Outcome
from controller.protocol import DatasetSpec, TrialResult, TrialSpec, outcome_from_result
from controller.run_layout import RunFiles, architecture_key, result_key
from controller.runner import make_executor
from controller.search import Search
from controller.stores import KeyNotFound, MemoryStore, open_store

ARCH_KEY = "trials/t00007/architecture.json"
RESULT_KEY = "trials/t00007/result.json"
CONV = {
    "space": "conv",
    "layers": [
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8, "inputs": []}
    ],
}

# What Search.trial_payload wrote before the protocol had a format: no format, number or replica.
OLD_SPEC = {
    "run_id": "digits__reinforce__0__20250101",
    "trial_id": "t00007",
    "architecture": CONV,
    "architecture_id": "a1b2c3",
    "policy_version": 2,
    "seed": 7,
    "dataset": {"name": "digits", "data_dir": None, "train_subset": 300, "seed": 0},
    "train": {"epochs": 1, "batch_size": 64, "lr_schedule": "cosine"},
    "lm": {"hidden_size": 200},
}
# What the trainer published before: TrainResult's fields, its metrics, the trial id and the times.
OLD_RESULT = {
    "status": "COMPLETE",
    "reward": 0.8125,
    "val_accuracy": 0.8125,
    "reason_code": None,
    "reason": None,
    "params": 1234,
    "train_seconds": 1.5,
    "curves": {"val_accuracy": [0.5, 0.8125]},
    "metrics": {"params": 1234, "train_seconds": 1.5, "val_accuracy": 0.8125, "host": "node-1"},
    "trial_id": "t00007",
    "started_at": 1700000000.0,
    "finished_at": 1700000002.5,
}


def _json(obj: dict) -> bytes:
    return json.dumps(obj).encode()


# -- round trips ---------------------------------------------------------------------------------------------
def test_a_spec_round_trips_through_its_file():
    spec = TrialSpec.from_dict(OLD_SPEC | {"number": 7, "replica": 1}, ARCH_KEY)
    assert spec.dataset == DatasetSpec("digits", None, 300, 0) and (spec.number, spec.replica) == (7, 1)
    assert TrialSpec.from_json(spec.to_json(), ARCH_KEY) == spec
    assert json.loads(spec.to_json())["format"] == 1


def test_a_result_round_trips_and_carries_the_architecture_it_belongs_to():
    result = TrialResult.from_dict(OLD_RESULT | {"architecture_id": "a1b2c3", "reused_from": "t00003"}, RESULT_KEY)
    assert TrialResult.from_json(result.to_json(), RESULT_KEY) == result
    assert (result.architecture_id, result.reused_from, result.format) == ("a1b2c3", "t00003", 1)


def test_old_files_without_a_format_still_read():
    spec = TrialSpec.from_json(_json(OLD_SPEC), ARCH_KEY)
    assert (spec.format, spec.trial_id, spec.seed, spec.train["epochs"]) == (1, "t00007", 7, 1)
    assert (spec.number, spec.replica) == (None, None)  # not written then
    result = TrialResult.from_json(_json(OLD_RESULT), RESULT_KEY)
    assert (result.format, result.reward, result.architecture_id, result.reused_from) == (1, 0.8125, None, None)
    # The smallest file a trainer ever needed: what the worker tests and the image test still write.
    minimal = TrialSpec.from_json(_json({"trial_id": "t7", "architecture": CONV, "dataset": {"name": "digits"}}), "k")
    assert (minimal.seed, minimal.dataset.seed, minimal.train, minimal.lm) == (0, 0, {}, {})


def test_run_files_write_and_read_the_protocol():
    files = RunFiles(MemoryStore())
    files.write_architecture("t00007", OLD_SPEC)  # a dict, as Search.trial_payload passes, is checked first
    assert files.read_architecture("t00007") == TrialSpec.from_dict(OLD_SPEC, ARCH_KEY)
    assert files.read_result("t00007") is None
    assert files.publish_result("t00007", OLD_RESULT) is True
    assert files.publish_result("t00007", TrialResult("t00007", "FAILED", reason_code="nan_loss")) is False
    assert files.read_result("t00007") == TrialResult.from_dict(OLD_RESULT, RESULT_KEY)  # the first one stands
    with pytest.raises(KeyNotFound):
        files.read_architecture("t00008")


def test_a_file_under_another_trials_name_is_refused():
    files = RunFiles(MemoryStore())
    with pytest.raises(ProtocolError) as e:
        files.write_architecture("t00008", OLD_SPEC)
    assert str(e.value) == (
        "trials/t00008/architecture.json: trial_id: \"t00007\" is not allowed (allowed: 't00008', the trial the file "
        "belongs to)"
    )
    files.store.write(result_key("t00008"), _json(OLD_RESULT))
    with pytest.raises(ProtocolError, match="trial_id"):
        files.read_result("t00008")


# -- broken files --------------------------------------------------------------------------------------------
FILE = "a JSON object in UTF-8, format 1"
BROKEN = {
    "empty": (b"", f"{ARCH_KEY}: the file is empty (allowed: {FILE})"),
    "blank": (b" \n", f"{ARCH_KEY}: the file is empty (allowed: {FILE})"),
    "truncated": (
        _json(OLD_SPEC)[:30],
        f"{ARCH_KEY}: the file ends early, after 30 characters (truncated?): "
        f'\'{{"run_id": "digits__reinforce_\' (allowed: {FILE})',
    ),
    "cut inside a string": (
        b'{"trial_id": "t000',
        f'{ARCH_KEY}: the file ends early, after 18 characters (truncated?): \'{{"trial_id": "t000\' (allowed: {FILE})',
    ),
    "not UTF-8 (a binary file)": (
        bytes(range(128, 256)),
        f"{ARCH_KEY}: byte 0 (b'\\x80\\x81\\x82\\x83\\x84\\x85\\x86\\x87'...) is not UTF-8 (allowed: {FILE})",
    ),
    "not UTF-8": (
        b'{"trial_id": "\xff\xfe\x00\x01"}',
        f"{ARCH_KEY}: byte 14 (b'\\xff\\xfe\\x00\\x01\"}}') is not UTF-8 (allowed: {FILE})",
    ),
    "garbage": (
        b"<html>502 Bad Gateway</html>",
        f"{ARCH_KEY}: '<html>502 Bad Gateway</html>' at line 1 column 1 is not JSON (Expecting value) "
        f"(allowed: {FILE})",
    ),
    "not an object": (b"[1, 2]", f"{ARCH_KEY}: [1, 2] is not allowed (allowed: {FILE})"),
    "future format": (
        _json(OLD_SPEC | {"format": 2}),
        f"{ARCH_KEY}: format: 2 is not allowed (allowed: 1, or no format key; a newer nasrl wrote this file, read "
        "it with that version)",
    ),
    "format as text": (
        _json(OLD_SPEC | {"format": "1"}),
        f'{ARCH_KEY}: format: "1" is not allowed (allowed: 1, or no format key)',
    ),
    "wrong type": (
        _json(OLD_SPEC | {"seed": "7"}),
        f'{ARCH_KEY}: seed: "7" is not allowed (allowed: an integer)',
    ),
    "a bool for an integer": (
        _json(OLD_SPEC | {"policy_version": True}),
        f"{ARCH_KEY}: policy_version: true is not allowed (allowed: an integer or null)",
    ),
    "wrong nested type": (
        _json(OLD_SPEC | {"dataset": {"name": "digits", "train_subset": 0}}),
        f"{ARCH_KEY}: dataset.train_subset: 0 is not allowed (allowed: an integer >= 1 or null)",
    ),
    "missing field": (
        _json({k: v for k, v in OLD_SPEC.items() if k != "architecture"}),
        f"{ARCH_KEY}: architecture is missing (allowed: a JSON object)",
    ),
    "missing nested field": (
        _json(OLD_SPEC | {"dataset": {"seed": 0}}),
        f"{ARCH_KEY}: dataset.name is missing (allowed: a string)",
    ),
    "unknown field": (
        _json(OLD_SPEC | {"sead": 7}),
        f"{ARCH_KEY}: sead is not a known field (allowed: the fields of format 1: architecture, architecture_id, "
        "dataset, format, lm, number, policy_version, replica, run_id, seed, train, trial_id)",
    ),
}


@pytest.mark.parametrize(("data", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_spec_is_a_protocol_error_naming_file_field_value_and_rule(data: bytes, message: str):
    with pytest.raises(ProtocolError) as e:
        TrialSpec.from_json(data, ARCH_KEY)
    assert str(e.value) == message
    assert isinstance(e.value, NasrlError)  # the CLI prints it without a traceback


BROKEN_RESULTS = {
    "complete without a reward": (
        {"trial_id": "t00007", "status": "COMPLETE"},
        "reward: null is not allowed (allowed: a finite number when status is COMPLETE)",
    ),
    "a NaN reward": (
        {"trial_id": "t00007", "status": "COMPLETE", "reward": float("nan")},
        "reward: NaN is not allowed (allowed: a finite number when status is COMPLETE)",
    ),
    "failed with a reward": (
        {"trial_id": "t00007", "status": "FAILED", "reward": 0.5},
        "reward: 0.5 is not allowed (allowed: null when status is FAILED)",
    ),
    "complete with a reason code": (
        {"trial_id": "t00007", "status": "COMPLETE", "reward": 0.5, "reason_code": "nan_loss"},
        'reason_code: "nan_loss" is not allowed (allowed: null when status is COMPLETE)',
    ),
    "unknown status": (
        {"trial_id": "t00007", "status": "DONE"},
        "status: \"DONE\" is not allowed (allowed: 'COMPLETE' or 'FAILED')",
    ),
    "missing status": ({"trial_id": "t00007"}, "status is missing (allowed: 'COMPLETE' or 'FAILED')"),
    "missing trial id": ({"status": "FAILED"}, "trial_id is missing (allowed: a string)"),
    "text for a number": (
        OLD_RESULT | {"train_seconds": "1.5"},
        'train_seconds: "1.5" is not allowed (allowed: a number or null)',
    ),
    "a curve that is not numbers": (
        OLD_RESULT | {"curves": {"val_accuracy": [0.5, None]}},
        'curves: {"val_accuracy": [0.5, null]} is not allowed (allowed: a JSON object of lists of numbers, one per '
        "curve)",
    ),
}


@pytest.mark.parametrize(("data", "message"), BROKEN_RESULTS.values(), ids=BROKEN_RESULTS.keys())
def test_a_broken_result_is_a_protocol_error_naming_file_field_value_and_rule(data: dict, message: str):
    files = RunFiles(MemoryStore())
    files.store.write(result_key("t00007"), _json(data))
    with pytest.raises(ProtocolError) as e:
        files.read_result("t00007")
    assert str(e.value) == f"{RESULT_KEY}: {message}"


def test_a_truncated_result_is_a_protocol_error_not_a_json_traceback():
    files = RunFiles(MemoryStore())
    files.store.write(result_key("t00007"), _json(OLD_RESULT)[:-1])
    with pytest.raises(ProtocolError, match=rf"^{RESULT_KEY}: the file ends early, after \d+ characters \(truncated"):
        files.read_result("t00007")


def test_a_result_that_breaks_the_rules_cannot_be_built_or_published():
    with pytest.raises(ProtocolError, match="reward: null is not allowed"):
        TrialResult("t00007", "COMPLETE")
    with pytest.raises(ProtocolError, match="reason_code"):
        RunFiles(MemoryStore()).publish_result("t00007", OLD_RESULT | {"reason_code": "nan_loss"})


# -- outcomes ------------------------------------------------------------------------------------------------
def test_a_result_becomes_the_executors_outcome():
    complete = TrialResult.from_dict(OLD_RESULT, RESULT_KEY)
    assert complete.outcome() == Outcome("t00007", "COMPLETE", reward=0.8125, metrics=OLD_RESULT["metrics"])
    failed = TrialResult("t00007", "FAILED", reason_code="nan_loss", reason="loss is NaN at epoch 2")
    assert failed.outcome() == Outcome("t00007", "FAILED", reason="nan_loss: loss is NaN at epoch 2")
    assert TrialResult("t00007", "FAILED").outcome().reason == "failed"
    # A plain dict in result.json's shape works too; the trial id may come from the caller alone.
    assert outcome_from_result("t00007", OLD_RESULT) == complete.outcome()
    assert outcome_from_result("t00007", {"status": "FAILED", "reason_code": "trainer_error"}).status == "FAILED"
    assert local.outcome_from_result is outcome_from_result  # where the Kubernetes executor imports it from
    with pytest.raises(ProtocolError, match="trial_id"):
        outcome_from_result("t00008", complete)


# -- the trainer and the table evaluator -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "trials/t00007/architecture.json: the file is empty"),
        (_json(OLD_SPEC)[:-3], "trials/t00007/architecture.json: the file ends early"),
        (b"\x80\x81 not text", "trials/t00007/architecture.json: byte 0"),
        (_json(OLD_SPEC | {"seed": 1.5}), "trials/t00007/architecture.json: seed: 1.5 is not allowed"),
        (_json(OLD_SPEC | {"format": 9}), "trials/t00007/architecture.json: format: 9 is not allowed"),
        (_json(OLD_SPEC | {"train": {"epochz": 1}}), "trials/t00007/architecture.json: train: "),
        (None, "architecture.json is missing"),
    ],
    ids=["empty", "truncated", "not UTF-8", "wrong type", "future format", "unknown train setting", "missing"],
)
def test_the_trainer_turns_a_broken_architecture_file_into_an_invalid_architecture_result(
    tmp_path: Path, data: bytes | None, reason: str
):
    run = str(tmp_path / "run")
    files = RunFiles(open_store(run))
    if data is not None:
        files.store.write(architecture_key("t00007"), data)
    result = run_trial(run, "t00007", num_threads=1)
    assert (result.status, result.reason_code, exit_code(result)) == ("FAILED", "invalid_architecture", 3)
    assert result.reason is not None and result.reason.startswith(reason)
    assert files.read_result("t00007") == result  # published, for the controller to record


def test_the_trainer_copies_the_architecture_id_into_its_result(tmp_path: Path):
    run = str(tmp_path / "run")
    files = RunFiles(open_store(run))
    broken_wiring = {"space": "conv", "layers": [dict(CONV["layers"][0], inputs=[3])]}  # fails before training
    files.write_architecture("t00007", OLD_SPEC | {"architecture": broken_wiring})
    result = run_trial(run, "t00007", num_threads=1)
    assert result.reason_code == "invalid_architecture" and result.reason.startswith("layers[0].inputs")
    assert result.architecture_id == "a1b2c3" and result.started_at <= result.finished_at


def test_a_table_search_writes_and_reads_only_protocol_files():
    files = RunFiles(MemoryStore())
    config = build_config({"space": "nb201", "evaluator": "table", "trials": 6, "batch": 3})
    Search(config, make_executor(config, files), files, run_id="nb201__reinforce__0__test").run()
    for n in range(6):
        spec, result = files.read_architecture(f"t{n:05d}"), files.read_result(f"t{n:05d}")
        assert result is not None and result.status == "COMPLETE" and 0 < result.reward <= 1
        assert result.architecture_id == spec.architecture_id is not None
