# syntax=docker/dockerfile:1
# One image for the four worker services of a node: evse_push, authorization, sessions, cdr. The
# command picks the service (python -m services.<name>); compose.yaml runs each as its own service.
#   docker build -f deploy/worker.Dockerfile -t oicp-p2p-worker .
# Each worker serves /healthz (no token) and /metrics (bearer token) on its metrics port: 9100 in
# containers (metrics.ports in deploy/config/compose-cpo.yaml).

# ---- builder: the locked dependencies and the project, installed into /opt/venv ----------------
# (the same stage as in gateway.Dockerfile: the build cache shares its layers between the two images)
FROM python:3.11-slim AS builder
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 PIP_DISABLE_PIP_VERSION_CHECK=1
# uv at the version of the Makefile (UV_VERSION)
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes, not with every code change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY shared ./shared
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable

# ---- runtime: the interpreter, the venv and the node configurations; nothing to build with -------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    HEALTHZ_URL=http://127.0.0.1:9100/healthz
RUN groupadd --system --gid 10001 oicp \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin oicp
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY deploy/config ./deploy/config
USER 10001:10001
EXPOSE 9100
# SIGTERM stops a worker gracefully: FastStream waits up to 10 s for the messages in hand, then the
# delivery lanes and connections close (10-15 s in all; compose gives 30 s before SIGKILL).
STOPSIGNAL SIGTERM
# Liveness: /healthz on the metrics port needs no token. HEALTHZ_URL follows metrics.host/ports if a
# deployment moves them.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHZ_URL'], timeout=4)"]
# Exec form: python is PID 1 and gets SIGTERM itself (no shell in between). The default is one of the
# workers; compose.yaml names each service's command explicitly.
CMD ["python", "-m", "services.evse_push"]
