# syntax=docker/dockerfile:1
# The HTTP gateway of a node: the OICP port (7001) and the internal API (7101) in one process.
#   docker build -f deploy/gateway.Dockerfile -t oicp-p2p-gateway .
# The node's file is named by OICP_P2P_CONFIG; tokens and URLs come from the environment
# (OICP_P2P_<SECTION>__<KEY>), see compose.yaml and deploy/compose.env.example.

# ---- builder: the locked dependencies and the project, installed into /opt/venv ----------------
# (the same stage as in worker.Dockerfile: the build cache shares its layers between the two images)
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
    HEALTHZ_URL=http://127.0.0.1:7101/healthz
RUN groupadd --system --gid 10001 oicp \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin oicp
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY deploy/config ./deploy/config
USER 10001:10001
EXPOSE 7001 7101
# The gateway stops on SIGTERM: uvicorn finishes open requests (5 s), then the broker connection closes.
STOPSIGNAL SIGTERM
# Liveness: /healthz on the internal port needs no token. HEALTHZ_URL follows internal.host/port if a
# deployment moves them.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHZ_URL'], timeout=4)"]
# Exec form: python is PID 1 and gets SIGTERM itself (no shell in between).
CMD ["python", "-m", "services.gateway"]
