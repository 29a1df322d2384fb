"""Each fact written once: the journal, the small checkpoint, policy files per version, and a resume that
replays what happened after the last checkpoint into exactly the run that was lost."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from controller import checkpoint as ckpt
from controller.config import SearchConfig, build_config
from controller.run_layout import RunFiles
from controller.runner import make_executor
from controller.search import Search
from controller.show import show_run
from controller.stores import LocalStore
from tests.support.runs import finished, journal


class Crash(Exception):
    """Stands for kill -9: the loop stops where it is, nothing is flushed on the way out."""


def _config(run: Path, **changes) -> SearchConfig:
    settings = {
        "space": "nb201",
        "evaluator": "table",
        "trials": 60,
        "replicas": 3,
        "batch": 4,
        "seed": 5,
        "run_dir": str(run),
        "checkpoint_seconds": 3600,  # one checkpoint after the first event, then only at the end
    }
    return build_config(settings | changes)


def _run(config: SearchConfig, crash_after: int | None = None) -> dict:
    files = RunFiles(LocalStore(config.run_dir))
    seen = Counter[str]()

    def crash(kind, search, payload):
        seen[kind] += 1
        if crash_after is not None and seen["trial_complete"] + seen["trial_reused"] >= crash_after:
            raise Crash

    search = Search(config, make_executor(config, files), files, run_id="r", listeners=[crash])
    return search.run()


def _history(run: Path) -> list[tuple]:
    return [(r.trial_id, r.architecture_id, r.reward, r.policy_version) for r in finished(run)]


@pytest.mark.parametrize("sampling", ["batch", "async"])
def test_a_crash_between_checkpoints_is_replayed_into_the_same_run(tmp_path, sampling):
    whole = tmp_path / "whole"
    _run(_config(whole, sampling=sampling))
    run = tmp_path / "run"
    with pytest.raises(Crash):
        _run(_config(run, sampling=sampling), crash_after=37)
    checkpointed = ckpt.read_checkpoint(LocalStore(run))
    assert checkpointed is not None and checkpointed["state"]["next_number"] < 37  # most of it was never saved

    summary = _run(_config(run, sampling=sampling))
    assert summary["finished"] and summary["trials_completed"] == 60
    assert _history(run) == _history(whole)  # same children, same rewards, same order, same policy versions
    assert summary["policy_version"] == json.loads((whole / "summary.json").read_text())["policy_version"]


def test_async_keeps_every_slot_filled_and_updates_every_m_results(tmp_path):
    updates, in_flight = [], []

    def listen(kind, search, payload):
        if kind == "update":
            updates.append(payload)
        if kind == "trial_started":
            in_flight.append(len(search.executor.running()))

    config = _config(tmp_path / "run", sampling="async", trials=50)
    files = RunFiles(LocalStore(config.run_dir))
    Search(config, make_executor(config, files), files, listeners=[listen]).run()
    assert [len(u["trials"]) for u in updates] == [4] * 12 + [2]  # every m = 4 results, the rest at the end
    # A child is sampled as soon as another finishes: each update learns from children of several versions.
    assert max(max(u["staleness"]) for u in updates) >= 2
    assert sorted(t for u in updates for t in u["trials"]) == [f"t{n:05d}" for n in range(50)]


def test_each_fact_is_written_once(tmp_path):
    writes = Counter[str]()

    class Counting(LocalStore):
        def write(self, key, data):
            writes[key] += 1
            super().write(key, data)

        def write_once(self, key, data):
            writes[key] += 1
            return super().write_once(key, data)

    config = _config(tmp_path / "run", trials=120, checkpoint_seconds=0)  # a checkpoint after every event
    files = RunFiles(Counting(config.run_dir))
    Search(config, make_executor(config, files), files).run()
    per_trial = [k for k in writes if k.startswith("trials/")]
    assert len(per_trial) == 240 and all(writes[k] == 1 for k in per_trial)  # architecture.json, result.json
    segments = [k for k in writes if k.startswith("journal/")]
    assert segments and all(writes[k] == 1 for k in segments)
    versions = [k for k in writes if k.startswith("policy/")]
    assert all(writes[k] == 1 for k in versions)
    # Only the live versions stay: the current one and those of children in flight (none at the end).
    assert sorted(p.name for p in (tmp_path / "run" / "policy").iterdir()) == [f"v{120 // 4:06d}.pt"]
    # The journal holds every finished trial once, in the order they finished.
    contents = journal(tmp_path / "run")
    assert sorted(r.trial_id for r in contents.trials) == [f"t{n:05d}" for n in range(120)]
    assert len(contents.updates) == 30


def test_the_checkpoint_does_not_grow_with_the_run(tmp_path):
    sizes = []
    config = _config(tmp_path / "run", trials=200, checkpoint_seconds=0)
    files = RunFiles(LocalStore(config.run_dir))
    listen = lambda kind, s, p: sizes.append((tmp_path / "run" / "checkpoint.pt").stat().st_size)  # noqa: E731
    Search(
        config, make_executor(config, files), files, listeners=[lambda k, s, p: k == "checkpoint" and listen(k, s, p)]
    ).run()
    assert len(sizes) >= 10
    assert max(sizes[-5:]) <= 1.2 * max(sizes[:5]) and max(sizes) < 20_000
    summary = (tmp_path / "run" / "summary.json").stat().st_size
    assert summary < 10_000  # run-wide figures only; per-trial detail is in the journal


def test_reused_rewards_skip_training_and_still_count(tmp_path):
    config = _config(tmp_path / "run", trials=150, reuse_rewards=True, replicas=1, batch=5, seed=0)
    files = RunFiles(LocalStore(config.run_dir))
    executor = make_executor(config, files)
    files.write_config(config.to_yaml())
    trained = []
    evaluate = executor.evaluate
    executor.evaluate = lambda t: trained.append(t.architecture_id) or evaluate(t)
    summary = Search(config, executor, files).run()
    records = finished(tmp_path / "run")
    reused = [r for r in records if "reused_from" in r.metrics]
    assert reused and summary["trials_completed"] == 150
    assert len(trained) == 150 - len(reused)
    by_id = {r.trial_id: r for r in records}
    for r in reused:
        source = by_id[r.metrics["reused_from"]]
        assert r.architecture_id == source.architecture_id and r.reward == source.reward
        assert source.number < r.number and source.finished_at <= r.finished_at  # reused what was measured
        assert not (tmp_path / "run" / "trials" / r.trial_id / "result.json").exists()
    assert "reused" in show_run(str(tmp_path / "run"))


def _write_format_1(run: Path, search: Search, updates: list[dict]) -> None:
    """What nasrl wrote before the journal: everything in one checkpoint.pt."""
    state = dataclasses.asdict(search.state)
    state["updates"] = updates
    del state["untold"]
    policy = search.policy.state_dict() | search.policy.versioned_state_dict() | {"snapshots": {}}
    old = {
        "format": 1,
        "state": state,
        "policy": policy,
        "ledger": search.ledger.to_list(),
        "finish_order": [r.trial_id for r in search.ledger.finished_in_order()],
    }
    torch.save(old, run / "checkpoint.pt")
    for folder in ("journal", "policy"):
        for p in (run / folder).iterdir():
            p.unlink()


def test_a_run_of_the_first_format_shows_and_resumes(tmp_path):
    run = tmp_path / "run"
    config = _config(run, trials=40, replicas=1)
    files = RunFiles(LocalStore(run))
    files.write_config(config.to_yaml())
    updates: list[dict] = []

    def crash(kind, search, payload):
        if kind == "update":
            updates.append(payload)
        if kind == "trial_complete" and search.ledger.counts()["COMPLETE"] == 22:
            raise Crash

    search = Search(config, make_executor(config, files), files, run_id="r", listeners=[crash])
    with pytest.raises(Crash):
        search.run()
    _write_format_1(run, search, updates)
    assert "rank  trial" in show_run(str(run))  # the top table comes from the old ledger
    before = [r.trial_id for r in search.ledger.finished_in_order()]

    summary = Search(config, make_executor(config, files), files, run_id="r").run()
    assert summary["trials_completed"] == 40
    done = finished(run)
    assert [r.trial_id for r in done][:22] == before
    assert sorted(r.trial_id for r in done) == [f"t{n:05d}" for n in range(40)]
    assert ckpt.read_checkpoint(LocalStore(run))["format"] == ckpt.FORMAT
