"""The pipeline's exit handler: delete the run's trial Jobs still alive when the pipeline ends or fails.

The executor deletes each Job once its outcome is recorded, but a search that crashed, was stopped or
whose pipeline was terminated leaves Jobs (and their GPUs) behind. With the local executor the children
died with the search step's pod: nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from components.search.step import parse_overrides, pipeline_run_dir
from controller.settings import merge

log = logging.getLogger(__name__)


def cleanup_run(
    *,
    store: str,
    job_id: str,
    executor: str,
    search_config: str | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    delete: Callable[..., int] | None = None,
) -> int | None:
    """Delete the pipeline run's trial Jobs; returns how many, or None when there was nothing to ask.

    Reads the same settings as the search step (``executor``, ``search_config``'s ``run_dir`` and
    ``kubernetes`` section), so both agree on the run and the namespace. ``delete`` stands in for
    ``controller.executors.kubernetes.delete_run_jobs`` in tests.
    """
    env = {} if env is None else env
    settings = merge({"executor": executor, "run_dir": pipeline_run_dir(store, job_id)}, parse_overrides(search_config))
    run_dir = settings["run_dir"]
    if settings["executor"] != "kubernetes":
        log.info("executor %r: the children ran inside the search step, no Jobs to delete", settings["executor"])
        return None
    if delete is None:
        try:
            from controller.executors.kubernetes import delete_run_jobs
        except ImportError as e:  # an image older than the Kubernetes executor cannot have created Jobs
            log.warning("no Kubernetes executor in this image (%s): nothing to delete", e)
            return None
        delete = delete_run_jobs
    from controller.executors.k8s_config import KubernetesConfig
    from controller.settings import from_mapping

    kubernetes = dict(settings.get("kubernetes") or {})
    if env.get("POD_NAMESPACE"):
        kubernetes.setdefault("namespace", env["POD_NAMESPACE"])
    # Only where and how patiently to ask matter here; the Job template settings are the search's business.
    wanted = {k: v for k, v in kubernetes.items() if k in ("namespace", "api_retry_seconds")}
    config = from_mapping(KubernetesConfig, wanted, "kubernetes")
    deleted = delete(run_dir, config)
    log.info("deleted %d Job(s) of %s in namespace %s", deleted, run_dir, config.namespace)
    return deleted
