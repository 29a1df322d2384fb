"""The pipeline's ``search`` step: the controller as one long-lived step, then the run's top-k
architectures and the final-training plan (every top architecture at every grid point).

The typed pipeline parameters become a search config (the same keys as ``nasrl search``); the
``search_config`` JSON object is merged over them, so any setting the CLI knows (``child.batch_size``,
``reinforce.learning_rate``, the ``kubernetes:`` section ...) can be set from the pipeline without a
new parameter.

With an objective that trades accuracy against a cost (``objective_kind``/``objective_target``, or the
``objective`` section of ``search_config``), the top-k are the best by the objective, as ``summary.json``'s
best is, and the final-training plan carries the objective on to the selection.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from components.final_train.step import KINDS, FinalGrid, is_language_model, objective_of, plan_candidates
from components.trainer.dataset_registry import task_named
from controller.errors import ConfigError, NasrlError
from controller.executors import EXECUTORS
from controller.objective import COST_KEYS, format_cost
from controller.settings import merge
from controller.spaces import SPACES

if TYPE_CHECKING:
    from controller.config import SearchConfig

log = logging.getLogger(__name__)

RUN_PREFIX = "kfp-"


def pipeline_run_dir(store: str, job_id: str) -> str:
    """One run folder per pipeline run, named after the KFP run's id: the search, a retried search (which
    resumes it) and the exit handler find the same place without passing anything to each other."""
    if not job_id:
        raise ConfigError("job_id", job_id, "the KFP run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER)")
    return f"{store.rstrip('/')}/{RUN_PREFIX}{job_id}"


def parse_overrides(search_config: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``search_config`` parameter: a JSON object of search settings, or empty."""
    if not search_config:
        return {}
    if isinstance(search_config, Mapping):
        return dict(search_config)
    example = 'a JSON object, e.g. {"child": {"batch_size": 64}}'
    try:
        value = json.loads(search_config)
    except json.JSONDecodeError as e:
        raise ConfigError("search_config", search_config, f"{example} ({e})") from None
    if not isinstance(value, dict):
        raise ConfigError("search_config", search_config, example)
    return value


def search_settings(
    *,
    store: str,
    job_id: str,
    space: str = "conv",
    dataset: str = "fashion-mnist",
    data_dir: str = "",
    strategy: str = "reinforce",
    trials: int = 100,
    parallelism: int = 4,
    replicas: int = 1,
    batch: int = 5,
    child_epochs: int = 10,
    gpus_per_child: int = 1,
    image: str = "",
    seed: int = 0,
    train_subset: int = 0,
    executor: str = "kubernetes",
    s3_secret_name: str = "",
    metrics_port: int = 0,
    objective_kind: str = "accuracy",
    objective_target: float = 0.0,
    search_config: str | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The search config mapping (for ``controller.config.build_config``) of one pipeline run.

    ``parallelism`` is the local worker count or the Kubernetes executor's Jobs alive at once. With the
    Kubernetes executor, the Jobs go to the controller's own namespace (``POD_NAMESPACE``, which the
    pipeline sets from the downward API) unless ``search_config`` names another. ``metrics_port`` serves
    Prometheus ``/metrics`` on all the pod's interfaces (0: no metrics server). ``objective_kind`` and
    ``objective_target`` (0: none) are the ``objective`` section's kind and target; left at their defaults
    they set nothing, so ``search_config``'s ``objective`` section alone decides.
    """
    if executor not in EXECUTORS:
        raise ConfigError("executor", executor, " | ".join(EXECUTORS))
    env = {} if env is None else env
    overrides = parse_overrides(search_config)
    # A language model's epochs are lm.epochs; the space may come from search_config too.
    trainer = "lm" if is_language_model(overrides.get("space", space)) else "child"
    settings: dict[str, Any] = {
        "space": space,
        "strategy": strategy,
        "trials": trials,
        "seed": seed,
        "replicas": replicas,
        "batch": batch,
        "store": store,
        "run_dir": pipeline_run_dir(store, job_id),
        "dataset": dataset,
        "data_dir": data_dir or None,
        "train_subset": train_subset or None,
        trainer: {"epochs": child_epochs},
    }
    if metrics_port:
        settings |= {"metrics_port": metrics_port, "metrics_host": "0.0.0.0"}  # scraped from outside the pod
    objective = ({"kind": objective_kind} if objective_kind != "accuracy" else {}) | (
        {"target": float(objective_target)} if objective_target else {}
    )
    if objective:  # the config checks the pair: a target needs a kind that trades, and the other way round
        settings["objective"] = objective
    if executor == "local":
        # No "executor" key: the local pool is the config's default, so this works with or without that field.
        settings["workers"] = parallelism
    else:
        kubernetes: dict[str, Any] = {"image": image, "gpus": gpus_per_child, "parallelism": parallelism}
        if s3_secret_name:
            kubernetes["s3_secret_name"] = s3_secret_name
        if env.get("POD_NAMESPACE"):
            kubernetes["namespace"] = env["POD_NAMESPACE"]
        settings |= {"executor": "kubernetes", "kubernetes": kubernetes}
    merged = merge(settings, overrides)
    check_data_dir(str(merged.get("dataset")), merged.get("data_dir"))
    return merged


def check_data_dir(dataset: str, data_dir: str | None) -> None:
    """Refuse a data_dir named after another dataset (the pipeline's default data_dir is Fashion-MNIST's):
    otherwise every trial of the run would fail on it, one by one, hours later."""
    from controller.config import DATASETS

    folder = (data_dir or "").rstrip("/").rsplit("/", 1)[-1]
    if folder in DATASETS and folder != dataset:
        raise ConfigError(
            "data_dir",
            data_dir,
            f"the folder of dataset {dataset!r} (`nasrl data push {dataset} …` prints it), "
            "or empty for the image's own copy",
        )


@dataclass
class SearchStep:
    """What the search step hands on: the component writes these into its outputs."""

    run_dir: str
    summary: dict[str, Any]
    # rank, trial_id, reward, params, architecture, summary; with a trading objective also objective, the
    # traded cost (under its metrics key) and meets_target
    top: list[dict[str, Any]]
    candidates: list[dict[str, Any]]  # the final-training plan, one entry per final-train task
    metrics: dict[str, float]  # best_reward, trials_completed, trials_failed; best_objective with an objective
    table: str  # Markdown: the top-k table
    table_html: str  # the same table as an HTML fragment (components/search/html_report.py)
    lm: dict[str, Any] | None = None  # rnn space: the search's language-model settings

    def architectures(self) -> dict[str, Any]:
        """The top-k artifact's content: enough for anyone to rebuild and retrain the architectures."""
        keys = ("run_id", "space", "strategy", "seed", "objective", "trials_completed", "trials_failed")
        lm = {} if self.lm is None else {"lm": self.lm}
        return {"run_dir": self.run_dir} | {k: self.summary.get(k) for k in keys} | lm | {"top": self.top}


def run_search_step(settings: Mapping[str, Any], *, top_k: int, grid: FinalGrid, quiet: bool = False) -> SearchStep:
    """Run (or resume) the search in ``settings["run_dir"]``, then rank its trials and plan the final training.

    A run folder that already holds a checkpoint is resumed, never restarted: that is a retried pipeline
    step (an evicted pod, a lost node) and its finished trials must not be paid for twice.
    """
    from controller.checkpoint import read_checkpoint
    from controller.config import build_config, config_from_yaml_text
    from controller.journal import read_run
    from controller.ledger import Ledger
    from controller.run_layout import RunFiles
    from controller.runner import run_search
    from controller.stores import open_store

    if settings.get("space", "conv") not in KINDS:
        allowed = " | ".join(KINDS) + " (the spaces the final training builds)"
        raise ConfigError("space", settings.get("space"), allowed)
    if top_k < 1:
        raise ConfigError("top_k", top_k, "an integer >= 1")
    config = build_config(dict(settings))  # a dataset that does not fit the space fails here
    grid.validate(config.space, lm_settings(config))  # a grid that cannot train fails now, not after the search
    run_dir = config.run_dir or ""
    files = RunFiles(open_store(run_dir))
    if read_checkpoint(files.store) is not None:
        log.warning("%s already holds this pipeline run's search: resuming it", run_dir)
        config = config_from_yaml_text(files.read_config() or "")
        summary = run_search(config, resume_dir=run_dir, quiet=quiet)
    else:
        summary = run_search(config, quiet=quiet)

    contents = read_run(files.store)
    objective = config.objective
    ledger = Ledger(contents.trials if contents is not None else [], objective=objective)
    # What the search looked for: the objective when it trades accuracy against a cost, as summary.json's best.
    records = ledger.top(top_k, by_objective=objective.trades)
    if not records:
        raise NasrlError(
            f"no trial of {run_dir} completed ({summary['trials_failed']} failed): nothing to train; "
            f"see the reasons with: nasrl show {run_dir}"
        )
    top = []
    task = task_named(SPACES[config.space].task)
    for rank, record in enumerate(records, 1):
        entry = {
            "rank": rank,
            "trial_id": record.trial_id,
            "reward": record.reward,
            "params": record.metrics.get("params"),
            "architecture": record.architecture,
            "summary": config.space_of(record.architecture).summary(record.architecture),
        }
        if task is not None and not task.higher_is_better:  # the reward hides the quality: show it too
            entry[task.metric] = record.metrics.get(task.metric)
        if objective.trades:
            entry["objective"] = ledger.objective_of(record)
            entry[COST_KEYS[objective.kind]] = record.metrics.get(COST_KEYS[objective.kind])  # as params above
            entry["meets_target"] = objective.meets_target(record.metrics)
        top.append(entry)
    lm = lm_settings(config)
    metrics = {
        "best_reward": float(summary["best"]["reward"]),
        "trials_completed": float(summary["trials_completed"]),
        "trials_failed": float(summary["trials_failed"]),
    }
    if objective.trades and summary["best"].get("objective") is not None:
        metrics["best_objective"] = float(summary["best"]["objective"])
    return SearchStep(
        run_dir=run_dir,
        summary=summary,
        top=top,
        candidates=plan_candidates(top, grid, config.space, lm, objective),
        metrics=metrics,
        table=top_k_table(top, summary, run_dir, reward_c=config.lm.reward_c),
        table_html=top_k_html(top_k_rows(top, summary, run_dir, reward_c=config.lm.reward_c)),
        lm=lm,
    )


def lm_settings(config: SearchConfig) -> dict[str, Any] | None:
    """The rnn space's language-model settings, which the final training keeps (hidden size, layers,
    dropout ...) and partly overrides (epochs, learning rate ...); None for other spaces."""
    from controller.config import PER_TRIAL

    if not is_language_model(config.space):
        return None
    return {k: v for k, v in dataclasses.asdict(config.lm).items() if k not in PER_TRIAL}


@dataclass(frozen=True)
class TopTable:
    """The top-k table's content, rendered as Markdown (``top_k_table``) and as HTML (``top_k_html``)."""

    title: str
    caption: str
    header: list[str]
    numeric: list[bool]  # right-aligned columns
    rows: list[list[str]]
    run_dir: str


def top_k_rows(
    top: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], run_dir: str, reward_c: float = 80.0
) -> TopTable:
    """For the rnn space with each cell's validation perplexity, since its reward c / perplexity² is hard
    to read on its own; with an objective that trades, with each one's objective and traded cost."""
    rnn = is_language_model(summary.get("space", "conv"))
    reward = f"{reward_c:g} / (validation perplexity)²" if rnn else "validation accuracy"
    objective = objective_of(summary)
    cost = objective.kind if objective.trades and objective.kind != "parameters" else None  # params: a column
    columns = [("rank", True), ("trial", False), ("reward", True)]
    columns += [("val perplexity", True)] if rnn else []
    columns += [("objective", True)] if objective.trades else []
    columns += [(cost, True)] if cost else []
    columns += [("parameters", True), ("architecture", False)]
    rows = []
    for entry in top:
        params, perplexity = entry.get("params"), entry.get("val_perplexity")
        row = [str(entry["rank"]), entry["trial_id"], f"{entry['reward']:{'.4g' if rnn else '.4f'}}"]
        row += [f"{perplexity:.2f}" if perplexity is not None else "-"] if rnn else []
        if objective.trades:
            row += [f"{entry['objective']:.4g}" if entry.get("objective") is not None else "-"]
        row += [format_cost(cost, entry.get(COST_KEYS[cost]))] if cost else []
        row += [f"{params:,}" if params is not None else "-", entry.get("summary", "")]
        rows.append(row)
    ranked = f" Ranked by the objective {objective.describe()}." if objective.trades else ""
    return TopTable(
        title=f"Top {len(top)} architecture{'s' if len(top) != 1 else ''}",
        caption=f"{summary.get('strategy', '?')} search over the {summary.get('space', '?')} space: "
        f"{summary.get('trials_completed', 0)} trials completed, {summary.get('trials_failed', 0)} failed. "
        f"Reward: {reward}.{ranked}",
        header=[name for name, _ in columns],
        numeric=[numeric for _, numeric in columns],
        rows=rows,
        run_dir=run_dir,
    )


def top_k_table(
    top: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], run_dir: str, reward_c: float = 80.0
) -> str:
    """The Markdown the KFP UI renders for the search step."""
    table = top_k_rows(top, summary, run_dir, reward_c)
    lines = [
        f"### {table.title}",
        "",
        table.caption,
        "",
        "| " + " | ".join(table.header) + " |",
        "|" + "".join("---:|" if numeric else "---|" for numeric in table.numeric),
    ]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in table.rows]
    lines += ["", f"Run: `{run_dir}`", ""]
    return "\n".join(lines)


def top_k_html(table: TopTable) -> str:
    """The same table as an HTML fragment, for the search step's HTML page."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in table.header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(cell)}</td>' if numeric else f"<td>{html.escape(cell)}</td>"
            for cell, numeric in zip(row, table.numeric, strict=True)
        )
        + "</tr>\n"
        for row in table.rows
    )
    return (
        f"<h2>{html.escape(table.title)}</h2>\n<p>{html.escape(table.caption)}</p>\n"
        f"<table>\n<tr>{head}</tr>\n{body}</table>\n<p>Run: <code>{html.escape(table.run_dir)}</code></p>\n"
    )


def _cell(text: str) -> str:
    # Summaries hold "<img" (a layer fed by the image): escaped, or the UI would render an HTML tag.
    return html.escape(text).replace("|", "\\|")
