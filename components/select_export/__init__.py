"""The pipeline's selection and export of the best final model. :mod:`.step` does the work (no kfp
import); :mod:`.component` is the Kubeflow component around it."""
