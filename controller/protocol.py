"""The trial protocol: what the controller writes to ``architecture.json`` and a trainer to ``result.json``.

Both files carry ``format`` (1 today). A file without it is format 1: every file written before the key
existed is one, so runs started then still resume. Reading checks every field, so a broken file, wherever it
is read, is a :class:`ProtocolError` naming the file, the field, the value and what is allowed, never a
JSONDecodeError or KeyError from deep inside a trainer or the controller. Unknown fields are refused too:
a misspelt one would otherwise be dropped without a word. A field added later is optional, so older files
still read; a change older readers must not misread gets a new format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Self

from controller.errors import ProtocolError
from controller.executors.base import Outcome

FORMAT = 1  # the version this nasrl writes and the only one it reads

ResultStatus = Literal["COMPLETE", "FAILED"]
# A check takes a decoded JSON value and returns (whether it is allowed, the value to keep, what is allowed).
Check = Callable[[Any], tuple[bool, Any, str]]


@dataclass(frozen=True)
class DatasetSpec:
    """Which data a child trains on; ``seed`` draws the split, one for the whole run so rewards compare."""

    name: str
    data_dir: str | None = None  # a local folder or a store URI; None: the loader's default
    train_subset: int | None = None  # train on this many examples only; None: all of them
    seed: int = 0
    val_size: int | None = None  # validation images held out of the training split; None: the dataset's


class _Record:
    """What both trial files share: JSON bytes in and out, through the record's own ``from_dict``."""

    @classmethod
    def from_json(cls, data: bytes, key: str) -> Self:
        return cls.from_dict(_decode(data, key), key)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> bytes:
        return _encode(self.to_dict())


@dataclass(frozen=True)
class TrialSpec(_Record):
    """``architecture.json``: everything a trainer needs to train one trial, and the controller to rebuild it."""

    trial_id: str
    architecture: dict[str, Any]  # the space's own format; the trainer checks it and fails invalid_architecture
    dataset: DatasetSpec
    seed: int = 0  # the child's own seed (weights, data order)
    run_id: str | None = None
    architecture_id: str | None = None
    policy_version: int | None = None  # the policy weights that sampled the architecture
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig settings; TrainConfig checks them
    lm: dict[str, Any] = field(default_factory=dict)  # LMConfig settings, for a language model
    number: int | None = None  # sampling order: trial ``number`` was the number-th architecture sampled
    replica: int | None = None  # the controller replica whose batch the trial belongs to
    format: int = FORMAT

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], key: str) -> TrialSpec:
        r = _Fields(data, key, cls)
        dataset = _Fields(r.get("dataset", _object, required=True), key, DatasetSpec, prefix="dataset.")
        return cls(
            trial_id=r.get("trial_id", _string, required=True),
            architecture=r.get("architecture", _object, required=True),
            dataset=DatasetSpec(
                name=dataset.get("name", _string, required=True),
                data_dir=dataset.get("data_dir", _optional(_string)),
                train_subset=dataset.get("train_subset", _optional(_positive)),
                val_size=dataset.get("val_size", _optional(_positive)),
                seed=dataset.get("seed", _integer, default=0),
            ),
            seed=r.get("seed", _integer, default=0),
            run_id=r.get("run_id", _optional(_string)),
            architecture_id=r.get("architecture_id", _optional(_string)),
            policy_version=r.get("policy_version", _optional(_integer)),
            train=r.get("train", _object, default={}),
            lm=r.get("lm", _object, default={}),
            number=r.get("number", _optional(_count)),
            replica=r.get("replica", _optional(_count)),
        )


@dataclass(frozen=True)
class TrialResult(_Record):
    """``result.json``: how a trial ended, written once by its trainer (or the table evaluator).

    COMPLETE carries a finite reward and no reason_code; FAILED carries no reward, and says why in
    ``reason_code`` (machine-readable: ``invalid_architecture``, ``nan_loss``, ...) and ``reason`` (for people).
    """

    trial_id: str
    status: ResultStatus
    reward: float | None = None
    reason_code: str | None = None
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # what the ledger keeps: params, curves, host, ...
    architecture_id: str | None = None  # copied from the spec: the result belongs to the architecture sampled
    reused_from: str | None = None  # the trial whose result this one copies, for an architecture seen before
    started_at: float | None = None  # Unix time
    finished_at: float | None = None
    # The trainer's own result (TrainResult / LMResult) besides its metrics, as trainers have always written it.
    val_accuracy: float | None = None
    val_perplexity: float | None = None
    params: int | None = None
    train_seconds: float | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    format: int = FORMAT

    def __post_init__(self) -> None:
        _check_outcome(f"the result of {self.trial_id}", self.status, self.reward, self.reason_code)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], key: str) -> TrialResult:
        r = _Fields(data, key, cls)
        status = r.get("status", _choice("COMPLETE", "FAILED"), required=True)
        reward = r.get("reward", _optional(_number))
        reason_code = r.get("reason_code", _optional(_string))
        _check_outcome(key, status, reward, reason_code)  # here, where the file's name is known
        return cls(
            trial_id=r.get("trial_id", _string, required=True),
            status=status,
            reward=reward,
            reason_code=reason_code,
            reason=r.get("reason", _optional(_string)),
            metrics=r.get("metrics", _object, default={}),
            architecture_id=r.get("architecture_id", _optional(_string)),
            reused_from=r.get("reused_from", _optional(_string)),
            started_at=r.get("started_at", _optional(_number)),
            finished_at=r.get("finished_at", _optional(_number)),
            val_accuracy=r.get("val_accuracy", _optional(_number)),
            val_perplexity=r.get("val_perplexity", _optional(_number)),
            params=r.get("params", _optional(_count)),
            train_seconds=r.get("train_seconds", _optional(_number)),
            curves=r.get("curves", _curves, default={}),
        )

    def outcome(self) -> Outcome:
        """This result as an executor outcome: the reward, or the reason code and reason as one line."""
        if self.status == "COMPLETE":
            return Outcome(self.trial_id, "COMPLETE", reward=self.reward, metrics=dict(self.metrics))
        reason = self.reason_code or "failed"
        if self.reason:
            reason = f"{reason}: {self.reason}"
        return Outcome(self.trial_id, "FAILED", reason=reason, metrics=dict(self.metrics))


def outcome_from_result(trial_id: str, result: TrialResult | Mapping[str, Any]) -> Outcome:
    """A trial's result (read from result.json, or a plain dict in its shape) as an executor outcome."""
    if not isinstance(result, TrialResult):
        result = TrialResult.from_dict({"trial_id": trial_id, **result}, key=f"the result of {trial_id}")
    check_trial_id(f"the result of {trial_id}", trial_id, result.trial_id)
    return result.outcome()


def check_trial_id(key: str, expected: str, found: str) -> None:
    """A trial file must be the trial's own: a copied or misplaced file would credit the wrong architecture."""
    if found != expected:
        raise ProtocolError(key, "trial_id", found, f"{expected!r}, the trial the file belongs to")


def _check_outcome(key: str, status: str, reward: float | None, reason_code: str | None) -> None:
    if status == "COMPLETE":
        if reward is None or not math.isfinite(reward):
            raise ProtocolError(key, "reward", reward, "a finite number when status is COMPLETE")
        if reason_code is not None:
            raise ProtocolError(key, "reason_code", reason_code, "null when status is COMPLETE")
    elif status == "FAILED":
        if reward is not None:
            raise ProtocolError(key, "reward", reward, "null when status is FAILED")
    else:
        raise ProtocolError(key, "status", status, "'COMPLETE' or 'FAILED'")


# -- reading a file ------------------------------------------------------------------------------------------
def _decode(data: bytes, key: str) -> dict[str, Any]:
    """The file's JSON object, its format checked; a ProtocolError for anything else."""
    allowed = f"a JSON object in UTF-8, format {FORMAT}"
    if not data.strip():
        raise ProtocolError(key, None, data, allowed, problem="the file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start : e.start + 8]
        shown = repr(bad) + ("..." if len(data) > e.start + 8 else "")
        raise ProtocolError(key, None, bad, allowed, problem=f"byte {e.start} ({shown}) is not UTF-8") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        # A writer that died mid-file leaves a prefix: say so, it is the likely story and the fix differs.
        if e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string"):
            ending = ("..." if len(text) > 40 else "") + repr(text[-40:])
            problem = f"the file ends early, after {len(text)} characters (truncated?): {ending}"
        else:
            problem = f"{text[e.pos : e.pos + 40]!r} at line {e.lineno} column {e.colno} is not JSON ({e.msg})"
        raise ProtocolError(key, None, text, allowed, problem=problem) from None
    except RecursionError:
        raise ProtocolError(key, None, text, allowed, problem="the JSON is nested too deeply to read") from None
    if not isinstance(obj, dict):
        raise ProtocolError(key, None, obj, allowed)
    version = obj.get("format", FORMAT)  # no key: written before formats were numbered, which is format 1
    if not (_is_int(version) and version == FORMAT):
        newer = _is_int(version) and version > FORMAT
        hint = "; a newer nasrl wrote this file, read it with that version" if newer else ""
        raise ProtocolError(key, "format", version, f"{FORMAT}, or no format key{hint}")
    return obj


def _encode(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


class _Fields:
    """Takes the fields of one JSON object by name and type, each error naming the file and the field."""

    def __init__(self, data: Mapping[str, Any], key: str, cls: type, prefix: str = "") -> None:
        self.data, self.key, self.prefix = data, key, prefix
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            name = unknown[0]
            allowed = f"the fields of format {FORMAT}: {', '.join(sorted(known))}"
            raise ProtocolError(key, prefix + name, data[name], allowed, problem="is not a known field")

    def get(self, name: str, check: Check, *, required: bool = False, default: Any = None) -> Any:
        if name not in self.data:
            if required:
                raise ProtocolError(self.key, self.prefix + name, None, check(None)[2], problem="is missing")
            return default
        ok, value, allowed = check(self.data[name])
        if not ok:
            raise ProtocolError(self.key, self.prefix + name, self.data[name], allowed)
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _string(value: Any) -> tuple[bool, Any, str]:
    return isinstance(value, str), value, "a string"


def _integer(value: Any) -> tuple[bool, Any, str]:
    return _is_int(value), value, "an integer"


def _count(value: Any) -> tuple[bool, Any, str]:
    return _is_int(value) and value >= 0, value, "an integer >= 0"


def _positive(value: Any) -> tuple[bool, Any, str]:
    return _is_int(value) and value >= 1, value, "an integer >= 1"


def _number(value: Any) -> tuple[bool, Any, str]:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return ok, float(value) if ok else value, "a number"


def _object(value: Any) -> tuple[bool, Any, str]:
    return isinstance(value, dict), dict(value) if isinstance(value, dict) else value, "a JSON object"


def _curves(value: Any) -> tuple[bool, Any, str]:
    ok = isinstance(value, dict) and all(
        isinstance(curve, list) and all(_number(v)[0] for v in curve) for curve in value.values()
    )
    kept = {name: [float(v) for v in curve] for name, curve in value.items()} if ok else value
    return ok, kept, "a JSON object of lists of numbers, one per curve"


def _optional(check: Check) -> Check:
    def optional(value: Any) -> tuple[bool, Any, str]:
        if value is None:
            return True, None, ""
        ok, kept, allowed = check(value)
        return ok, kept, f"{allowed} or null"

    return optional


def _choice(*allowed: str) -> Check:
    def choice(value: Any) -> tuple[bool, Any, str]:
        return value in allowed, value, " or ".join(repr(a) for a in allowed)

    return choice
