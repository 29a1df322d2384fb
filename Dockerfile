# One image for the controller and the trainer: `nasrl search ...` runs the search, and each child's
# Kubernetes Job runs `nasrl train --trial s3://...`.
#
#   docker build -t nasrl:cpu .                                          CPU torch (CPU clusters, tests)
#   docker build -t nasrl:cu128 --build-arg TORCH_VARIANT=cu128 .        CUDA torch for GPU nodes
#
# Without a registry (this project's machines), scripts/build-image.sh builds the same file with buildah
# from a Debian base made with debootstrap (BASE_IMAGE=localhost/nasrl-base, no Python in it), and keeps
# the "deps" stage as an image of its own (the script points "FROM deps" at it), so that a code change
# rebuilds only the code.
ARG BASE_IMAGE=python:3.11-slim

# ---- deps: Python, a virtual environment in /opt/nasrl, torch and every dependency ------------------
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VERSION=2.13.0
# "cpu", or a CUDA build tag of the PyTorch index (cu126, cu128, ...)
ARG TORCH_VARIANT=cpu
# Where the torch build comes from; empty: only wheels in build/image/wheels/ of the context (and PyPI)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PATH=/opt/nasrl/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml /src/
# A bare base (debootstrap) has no Python: take Debian's 3.11; python:3.11-slim skips that. pip reaches
# PyPI; behind a TLS-intercepting proxy, pass its CA as the build secret "pip-cert" (build-image.sh does).
# The local version (+cpu, +cu128) pins the torch build: a bare torch==X from PyPI would be the CUDA one.
# kfp comes too ([pipeline]): the Kubeflow steps run their components in this image.
# The dependencies come from pyproject.toml alone (an empty package, a blank README), so a change to the
# code does not redo them.
RUN --mount=type=bind,target=/ctx --mount=type=secret,id=pip-cert \
    set -e; \
    if ! command -v python3 >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi; \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    python3 -m venv /opt/nasrl; \
    pip install --find-links /ctx/build/image/wheels ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      "torch==${TORCH_VERSION}+${TORCH_VARIANT}"; \
    touch /src/README.md && pip install "/src[pipeline]" && pip uninstall --yes nasrl

# ---- build: nasrl itself --------------------------------------------------------------------------
FROM deps AS build
COPY README.md /src/
COPY controller /src/controller
COPY components /src/components
COPY pipelines /src/pipelines
# C++ unit-test binaries and pandas' test suite are a tenth of the image and never run here.
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    pip install --no-deps /src \
    && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && rm -rf "$site/torch/test" "$site/pandas/tests" "$site/pip" /opt/nasrl/bin/pip*

# ---- final: Python, the venv (byte-compiled by pip), a non-root user; no compilers, no pip ----------
FROM ${BASE_IMAGE}
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 nasrl && useradd --uid 10001 --gid 10001 --home-dir /home/nasrl --create-home \
      --shell /usr/sbin/nologin nasrl \
    && mkdir -p /scratch && chown 10001:10001 /scratch
# /scratch is where a Job mounts its writable emptyDir (the root filesystem is read-only there); the same
# settings here keep `docker run` and a Job alike. No .pyc writes: pip compiled them at install time.
ENV PATH=/opt/nasrl/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/scratch XDG_CACHE_HOME=/scratch/.cache MPLCONFIGDIR=/scratch/.config/matplotlib \
    NASRL_CACHE_DIR=/scratch/.cache/nasrl
WORKDIR /scratch
# Numeric, so that the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["nasrl"]
CMD ["--help"]
# Last: the one large layer, so the steps above stay cached when only the code changed.
COPY --from=build /opt/nasrl /opt/nasrl
