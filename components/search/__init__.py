"""The pipeline's search step. :mod:`.step` does the work (no kfp import); :mod:`.component` is the
Kubeflow component around it."""
