"""The Kubeflow pipeline: :mod:`.nasrl_pipeline` wires the components, :mod:`.compile` writes the committed
``nasrl_pipeline.yaml``, :mod:`.submit` uploads it and starts a run, :mod:`.local` runs it with kfp.local."""
