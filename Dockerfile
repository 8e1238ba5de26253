# automtd image for docker-compose.yml (workers, study creation, dashboard).  CPU by default.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install torch==2.14.1 torchvision==0.29.1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY automtd ./automtd
# postgres: psycopg 3 for the PostgreSQL storage; dashboard: optuna-dashboard
RUN pip install ".[postgres,dashboard]" && rm -rf /src

RUN useradd --create-home --uid 1000 automtd \
    && mkdir -p /work/studies /data /weights \
    && chown -R automtd /work
USER automtd
WORKDIR /work
CMD ["automtd", "--help"]
