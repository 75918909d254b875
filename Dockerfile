# One image for every service of docker-compose.yml: the eocube package and its
# console scripts (eocube, prefect, dask, jupyter-lab). CPU torch by default; the GPU
# Dask worker gets the GPU through the NVIDIA container runtime (a CUDA torch build can
# be chosen with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    EOCUBE_DEMO_ARCHIVE=/data/demo-archive

RUN apt-get update \
 && apt-get install -y --no-install-recommends tini curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/eocube
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
COPY catalogs ./catalogs
COPY notebooks ./notebooks
COPY prefect.yaml ./
RUN pip install --extra-index-url "${TORCH_INDEX}" ".[test]"

RUN useradd --create-home --uid 1000 eocube && mkdir -p /data && chown eocube /data
USER eocube
VOLUME ["/data"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["eocube", "--help"]
