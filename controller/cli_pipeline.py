"""``nasrl pipeline ...``: compile, submit, upload and run-local, each checking for the pipeline extra first."""

from __future__ import annotations

import argparse
import sys

from controller.errors import NasrlError


def cmd_pipeline(args: argparse.Namespace) -> int:
    _require_pipeline_extra(args.pipeline_command)
    from pipelines.compile import PACKAGE, compile_pipeline

    if args.pipeline_command == "compile":
        print(compile_pipeline(args.output or PACKAGE, s3_secret_name=args.s3_secret_name))
        return 0
    if args.pipeline_command == "submit":
        from pipelines.submit import parse_arguments, submit

        package = args.package or PACKAGE
        url = submit(
            parse_arguments(args.arg, package),
            host=args.host,
            token_path=args.token_path,
            namespace=args.namespace,
            experiment=args.experiment,
            run_name=args.run_name,
            service_account=args.service_account,
            package=package,
        )
        print(url)
        return 0
    if args.pipeline_command == "upload":
        from pipelines.submit import upload

        pipeline_id, version_id = upload(
            host=args.host, token_path=args.token_path, namespace=args.namespace, package=args.package or PACKAGE
        )
        print(f"pipeline {pipeline_id}, version {version_id}")
        return 0
    return cmd_pipeline_run_local(args)


def cmd_pipeline_run_local(args: argparse.Namespace) -> int:
    """Short by default: a line per finished step, then what the run found; kfp.local's log goes to a file."""
    import time
    from pathlib import Path

    from pipelines.compile import PACKAGE
    from pipelines.local import PipelineFailed, Step, run_local, summary
    from pipelines.submit import parse_arguments

    arguments = parse_arguments(args.arg, PACKAGE)
    # Not print() once kfp.local has run: it swaps builtins.print for one that indents, and its parallel
    # steps can leave it swapped when they end; write to the terminal itself.
    terminal = sys.stdout

    def say(line: str) -> None:
        terminal.write(line + "\n")
        terminal.flush()

    if args.verbose:
        try:
            outputs = run_local(args.store, args.root, arguments)
        except PipelineFailed as e:
            print(f"nasrl: error: {e} (its output is above)", file=sys.stderr)
            return 1
        say(f"step outputs: {outputs}")
    else:
        root = Path(args.root)
        root.mkdir(parents=True, exist_ok=True)
        log_path = root / f"run-local-{time.strftime('%Y%m%d-%H%M%S')}.log"

        def progress(step: Step) -> None:
            # Not print(): while a step runs, kfp.local's print indents into sys.stdout, which is its log.
            if step.retry_in is not None:
                terminal.write(f"  {'':<20} retrying in {step.retry_in:g} s\n")
            else:
                name = step.name + (f" (try {step.attempt})" if step.attempt > 1 else "")
                terminal.write(f"  {name:<20} {step.status:<8} {step.seconds:6.1f} s\n")
            terminal.flush()

        print(f"running the pipeline here with kfp.local; its whole log: {log_path}", flush=True)
        with log_path.open("w") as log:
            try:
                outputs = run_local(args.store, args.root, arguments, log=log, on_step=progress)
            except PipelineFailed as e:
                print(f"nasrl: error: {e}", file=sys.stderr)
                for step in e.failed:
                    tries = f" (try {step.attempt})" if step.attempt > 1 else ""
                    print(f"last lines of {step.name!r}{tries}:", file=sys.stderr)
                    print("\n".join(f"    {line}" for line in step.tail), file=sys.stderr)
                print(f"whole log: {log_path}", file=sys.stderr)
                return 1
        say(f"step outputs: {outputs}")
    for line in summary(outputs):
        say(line)
    return 0


def _require_pipeline_extra(action: str) -> None:
    """kfp is the optional ``pipeline`` extra (``scripts/setup.sh`` leaves it out): without it, say what to
    install instead of a traceback."""
    try:
        import kfp.kubernetes  # noqa: F401  (kfp itself comes with it)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "kfp":
            raise
        raise NasrlError(f"'nasrl pipeline {action}' needs the pipeline extra: {_pipeline_extra_install()}") from None


def _pipeline_extra_install() -> str:
    """The command that installs the extra into this environment: ``.venv/bin/pip install -e '.[pipeline]'``
    from a checkout's root, with the paths that fit wherever it is run from."""
    from pathlib import Path

    def shown(path: Path) -> str:
        return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)

    pip = shown(Path(sys.prefix) / "bin" / "pip")
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():  # an editable install, as scripts/setup.sh makes
        return f"{pip} install -e '{shown(checkout)}[pipeline]'"
    from importlib.metadata import requires

    wanted = [r.split(";")[0].strip() for r in requires("nasrl") or [] if 'extra == "pipeline"' in r]
    return f"{pip} install " + " ".join(f"'{r}'" for r in wanted or ["kfp", "kfp-kubernetes"])
