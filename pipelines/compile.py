"""Compile the pipeline to the YAML that is committed beside it (``nasrl pipeline compile``, or
``python -m pipelines.compile [FILE]``)."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).with_name("nasrl_pipeline.yaml")


def compile_pipeline(output: str | Path = PACKAGE, *, s3_secret_name: str | None = None) -> Path:
    """Write the pipeline's YAML to ``output`` (default: the committed ``pipelines/nasrl_pipeline.yaml``).

    ``s3_secret_name`` is the one compile-time setting: the Secret the steps read the store's credentials
    from (default ``nasrl-s3``). Everything else is a run parameter.
    """
    from kfp import compiler

    from pipelines.nasrl_pipeline import build_pipeline, nasrl_pipeline

    pipeline = nasrl_pipeline if s3_secret_name is None else build_pipeline(s3_secret_name=s3_secret_name)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(output))
    return output


if __name__ == "__main__":
    print(compile_pipeline(sys.argv[1] if len(sys.argv) > 1 else PACKAGE))
