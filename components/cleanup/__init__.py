"""The pipeline's exit handler: delete leftover trial Jobs. :mod:`.step` does the work (no kfp import);
:mod:`.component` is the Kubeflow component around it."""
