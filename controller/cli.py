"""The ``nasrl`` command."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from controller.config import PER_TRIAL, SearchConfig, build_config, config_from_yaml_text, load_yaml
from controller.errors import NasrlError, SearchStopped
from controller.settings import add_arguments, nest
from controller.stores import StoreUnavailable


class _Parser(argparse.ArgumentParser):
    """argparse with errors a person can act on: a command's own short usage and one error line, and a
    mistyped flag answered by the command it was meant for, with the flag it resembles."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and " " in self.prog:  # a command's parser: say it here, not in the top-level usage
            self.error(_unknown(extras, self._option_string_actions))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:  # a mistyped command: name the one it resembles
            close = difflib.get_close_matches(wrong[1], re.findall(r"'([^']*)'", wrong[2]), n=1)
            message += f"; did you mean {close[0]}?" if close else ""
        hint = f"{self.prog} --help lists every setting" if self.prog == "nasrl search" else f"{self.prog} --help"
        self.exit(2, f"{self.format_usage()}{self.prog}: error: {message} ({hint})\n")


def _unknown(extras: list[str], known: Mapping[str, Any]) -> str:
    flag = extras[0].split("=", 1)[0]
    close = difflib.get_close_matches(flag, list(known), n=1, cutoff=0.6)
    if flag.startswith("-") and close:
        return f"unrecognized argument {flag}: did you mean {close[0]}?"
    return f"unrecognized arguments: {' '.join(extras)}"


def _registries() -> dict[str, Iterable[str]]:
    """The names each choice setting takes, from the registries themselves: help can never drift from them."""
    from components.trainer.dataset_registry import DATASETS
    from controller.evaluators import EVALUATORS
    from controller.executors import EXECUTORS
    from controller.policies import STRATEGY_CLASSES
    from controller.spaces import SPACES

    return {
        "space": SPACES,
        "strategy": STRATEGY_CLASSES,
        "evaluator": EVALUATORS,
        "dataset": DATASETS,
        "executor": EXECUTORS,
    }


def _search_summary(choices: Mapping[str, Iterable[str]]) -> str:
    names = {key: ",".join(values) for key, values in choices.items()}
    return f"""Run an architecture search (Zoph & Le, ICLR 2017). The settings most runs change:

  --config FILE        a YAML file of settings (same names as the flags); flags override it
  --resume RUN         continue a stopped run (its own config)
  --space {{{names["space"]}}}   --dataset {{{names["dataset"]}}}
  --strategy {{{names["strategy"]}}}   --evaluator {{{names["evaluator"]}}}
  --trials N  --seed N  --workers N  --executor {{{names["executor"]}}}
  --store DIR|s3://BUCKET/PREFIX  --metrics-port PORT

Every setting follows, by group: run, search space, strategy and REINFORCE, objective, child training,
language model, Kubernetes, metrics. The README explains each."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nasrl",
        description="Neural Architecture Search with Reinforcement Learning (Zoph & Le, ICLR 2017).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    choices = _registries()
    search = sub.add_parser(
        "search",
        help="run an architecture search",
        usage="nasrl search [--config FILE] [--resume RUN] [--quiet] [--SETTING VALUE ...]",
        description=_search_summary(choices),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("--config", metavar="FILE", help="YAML file of settings; flags override it")
    search.add_argument("--resume", metavar="RUN", help="continue the run in this run directory")
    search.add_argument("--quiet", action="store_true", help="no progress display")
    per_trial = [f"{section}.{name}" for section in ("lm", "child") for name in PER_TRIAL]
    add_arguments(search, SearchConfig, skip=(*per_trial, "kubernetes.namespace"), choices=choices)
    search.add_argument(
        "--namespace",
        dest="kubernetes.namespace",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="namespace of the trial Jobs with --executor kubernetes (default: default)",
    )

    train = sub.add_parser("train", help="train trials' children and publish their results (what a worker or Job runs)")
    train.add_argument(
        "--trial",
        required=True,
        action="append",
        metavar="RUN/trials/ID",
        help="a trial folder; repeat it for a batch, trained in this order",
    )
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument(
        "--children-per-gpu",
        type=int,
        default=1,
        metavar="N",
        help="train N trials of the batch at once, sharing the GPU (default: 1)",
    )

    report = sub.add_parser("report", help="write PNG plots of one or more runs (overlaid)")
    report.add_argument("runs", nargs="+", metavar="RUN", help="run directories; the first one is the main run")
    report.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: FIRST_RUN/report)")

    data = sub.add_parser("data", help="datasets in the store, for cluster Jobs")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    push = data_sub.add_parser(
        "push", help="upload a dataset once: nasrl data push fashion-mnist s3://BUCKET/datasets/"
    )
    push.add_argument("name", help="fashion-mnist or cifar10")
    push.add_argument("dest", help="store URI; the files go to DEST/NAME/ (use DEST/NAME as --data-dir)")
    push.add_argument("--from", dest="from_dir", metavar="DIR", help="where the files are (default: the usual place)")

    pipeline = sub.add_parser("pipeline", help="the Kubeflow pipeline: compile it, submit a run, run it locally")
    pipe_sub = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    compile_ = pipe_sub.add_parser("compile", help="write the compiled pipeline YAML")
    compile_.add_argument("--output", metavar="FILE", help="default: pipelines/nasrl_pipeline.yaml")
    compile_.add_argument("--s3-secret-name", metavar="NAME", help="Secret with the MinIO keys (default: nasrl-s3)")
    submit = pipe_sub.add_parser("submit", help="upload the pipeline (or a new version) and start a run")
    submit.add_argument("--host", help="KFP API endpoint (default: $KFP_HOST); the token comes from $KFP_TOKEN")
    submit.add_argument("--token-path", metavar="FILE", help="a file holding the bearer token (service accounts)")
    submit.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    submit.add_argument("--experiment", default="nasrl", help="experiment to file the run under")
    submit.add_argument("--run-name", help="default: nasrl-<time>")
    submit.add_argument("--service-account", help="ServiceAccount of the run's pods (needs rights on Jobs)")
    submit.add_argument("--package", metavar="FILE", help="compiled pipeline (default: pipelines/nasrl_pipeline.yaml)")
    submit.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="a pipeline parameter")
    upload = pipe_sub.add_parser("upload", help="upload the pipeline (or a new version), start no run")
    upload.add_argument("--host", help="KFP API endpoint (default: $KFP_HOST)")
    upload.add_argument("--token-path", metavar="FILE", help="a file holding the bearer token (service accounts)")
    upload.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    upload.add_argument("--package", metavar="FILE", help="compiled pipeline (default: pipelines/nasrl_pipeline.yaml)")
    local = pipe_sub.add_parser("run-local", help="run the whole pipeline here with kfp.local (tiny defaults)")
    local.add_argument("--store", required=True, metavar="DIR", help="where the run and its export go")
    local.add_argument("--root", required=True, metavar="DIR", help="kfp.local's pipeline root (step outputs)")
    local.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="a pipeline parameter")
    local.add_argument(
        "--verbose", action="store_true", help="print kfp.local's whole log here (default: into ROOT/run-local-*.log)"
    )

    show = sub.add_parser("show", help="print a run's summary and its top trials")
    show.add_argument("run", metavar="RUN", help="run directory")
    show.add_argument("--top", type=int, default=10, help="how many trials to list (default: 10)")
    show.add_argument("--pareto", action="store_true", help="list the children no other beats in reward and cost")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="nasrl: %(levelname)s: %(message)s")
    try:
        if args.command == "search":
            return cmd_search(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "report":
            from controller.report import write_report

            for path in write_report(args.runs, args.out):
                print(path)
            return 0
        if args.command == "data":
            from components.trainer.data_store import push_dataset

            manifest = push_dataset(args.name, args.dest, args.from_dir)
            total = sum(f["size"] for f in manifest["files"].values())
            where = args.dest.rstrip("/") + "/" + args.name
            print(
                f"{args.name}: {len(manifest['files'])} files, {total / 1e6:.1f} MB -> {where} (use --data-dir {where})"
            )
            return 0
        if args.command == "pipeline":
            from controller.cli_pipeline import cmd_pipeline

            return cmd_pipeline(args)
        if args.command == "show":
            from controller.show import show_run

            print(show_run(args.run, top=args.top, pareto=args.pareto))
            return 0
    except SearchStopped as e:
        print(f"nasrl: {e}", file=sys.stderr)
        return e.exit_code
    except StoreUnavailable as e:
        print(f"nasrl: error: {e}{_what_now(args, e)}", file=sys.stderr)
        return 2
    except NasrlError as e:
        print(f"nasrl: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `nasrl show RUN | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        # Outside a search loop (a search stops on its own, with SearchStopped): nothing was started, or
        # it was a command that keeps no state.
        print("nasrl: interrupted", file=sys.stderr)
        return 130
    return 0


def _what_now(args: argparse.Namespace, e: StoreUnavailable) -> str:
    """What a user can do after the store stopped answering: only a search has anything to resume, and
    only once it has written something (a run that wrote nothing has nothing to continue)."""
    if args.command != "search":
        return ": check that the store is up and reachable, then run the command again"
    if args.resume or e.wrote:
        run = args.resume or e.uri
        return f"; what is done is checkpointed: fix the store, then continue with nasrl search --resume {run}"
    return (
        "; nothing of the run was written yet: check the endpoint (NASRL_S3_ENDPOINT) and that the store is up, "
        "then start the search again"
    )


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"command", "config", "resume", "quiet"}
    return nest({k: v for k, v in vars(args).items() if k not in skip})


def _objective_of(best: dict[str, Any]) -> str:
    """With an objective, the best child is the best by it: say its value and whether it meets the target."""
    if best.get("objective") is None or best["objective"] == best["reward"]:
        return ""
    meets = {True: ", meets the target", False: ", misses the target"}.get(best.get("meets_target"), "")
    return f", objective {best['objective']:.4f}{meets}"


def cmd_search(args: argparse.Namespace) -> int:
    from controller.runner import open_run, run_search

    flags = _flag_values(args)
    if args.resume:
        _files, saved = open_run(args.resume)
        base = config_from_yaml_text(saved)
        # Only settings that do not change what the run is may differ on resume.
        changed = {k for k in flags if k not in ("run_dir",)}
        if changed - {"quiet"}:
            raise NasrlError(
                f"--resume takes the run's own config; drop {', '.join('--' + k for k in sorted(changed))}"
            )
        config = base
    else:
        file_values = load_yaml(args.config) if args.config else {}
        config = build_config(file_values, flags)
    summary = run_search(config, resume_dir=args.resume, quiet=args.quiet)
    best = summary["best"]
    print(
        f"run {summary['run_id']}: {summary['trials_completed']} completed, {summary['trials_failed']} failed"
        + (f"; best {best['reward']:.4f} ({best['trial_id']}){_objective_of(best)} {best['summary']}" if best else "")
    )
    print(f"summary: {summary['run_dir']}/summary.json")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from components.trainer.errors import TrialNotPublished
    from components.trainer.trial import exit_code, publish_deadline, run_trials, split_trial_uri

    if args.children_per_gpu < 1:
        raise NasrlError(f"--children-per-gpu: {args.children_per_gpu} is not allowed (allowed: an integer >= 1)")
    for uri in args.trial:
        split_trial_uri(uri)  # every folder named right before the first child trains
    publish_deadline()  # a wrong NASRL_PUBLISH_DEADLINE is refused before any child trains
    results = run_trials(args.trial, args.children_per_gpu, num_threads=args.threads)
    for result in results:
        if isinstance(result, TrialNotPublished):
            print(f"{result} (exit {exit_code(result)}: store_unavailable)", file=sys.stderr)
        elif result.status == "COMPLETE":
            params = "?" if result.params is None else result.params
            print(f"{result.trial_id}: COMPLETE reward {result.reward:.4f} ({params} parameters)")
        else:
            print(f"{result.trial_id}: FAILED {result.reason_code}: {result.reason}", file=sys.stderr)
    unpublished = [r for r in results if isinstance(r, TrialNotPublished)]
    if len(results) == 1 or unpublished:
        # A trial without its result.json: the Job's exit code is its only verdict (run it again).
        return exit_code(unpublished[0] if unpublished else results[0])
    # A batch: every trial's result is in the store, each deciding its own trial; the Job itself succeeded.
    return 0


if __name__ == "__main__":
    sys.exit(main())
