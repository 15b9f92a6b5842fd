# syntax=docker/dockerfile:1
# The mail_pipeline image: one image for the code server (the default command), each run's
# task, the daemon and the webserver (docs/deployment.md). Build from the repository root:
#
#   docker build -t mail-pipeline:$(git rev-parse --short HEAD) .
#
# Dependencies are the pinned runtime closure in deploy/requirements.lock (regenerate it with
# `.venv/bin/python deploy/lock.py > deploy/requirements.lock`); `pip check` refuses a lock
# that misses a requirement.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY deploy/requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-deps -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY mail_pipeline /src/mail_pipeline
RUN /opt/venv/bin/pip install --no-deps /src \
    && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin dagster \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/data \
    && chown dagster:dagster /opt/dagster/dagster_home /opt/dagster/data
COPY --from=build /opt/venv /opt/venv
COPY deploy/dagster.production.yaml /opt/dagster/dagster_home/dagster.yaml
COPY deploy/workspace.production.yaml /opt/dagster/workspace.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    MAIL_PIPELINE_DATA_DIR=/opt/dagster/data
WORKDIR /opt/dagster
USER dagster
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-m", "mail_pipeline.definitions", "-h", "0.0.0.0", "-p", "4000"]
