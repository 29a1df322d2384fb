"""The ``cleanup`` Kubeflow component, the pipeline's exit handler: a thin wrapper around
:mod:`components.cleanup.step`."""

from kfp import dsl

from components.search.component import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def cleanup(store: str, job_id: str, executor: str, search_config: str, status: dsl.PipelineTaskFinalStatus):
    """Deletes the run's trial Jobs still alive when the pipeline ends, whether it succeeded or failed.

    Args:
        store: Where runs live; the run is STORE/kfp-<run id>, as in the search step.
        job_id: The KFP run's id.
        executor: "kubernetes" or "local" (nothing to delete).
        search_config: The search step's JSON settings (its run_dir and kubernetes section count here too).
        status: The pipeline's final state, logged.
    """
    import logging
    import os

    from components.cleanup.step import cleanup_run

    logging.info("pipeline %s: %s %s", status.pipeline_job_resource_name, status.state, status.error_message or "")
    cleanup_run(store=store, job_id=job_id, executor=executor, search_config=search_config, env=os.environ)
