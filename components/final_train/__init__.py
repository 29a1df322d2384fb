"""The pipeline's final training: one architecture at one grid point per task. :mod:`.step` does the
work (no kfp import); :mod:`.component` is the Kubeflow component around it."""
