# The buildstate service: gunicorn with aiohttp workers (service/buildstate/gunicorn_conf.py).
#
#   docker build -f service.Dockerfile -t buildstate .
#   docker run -p 8080:8080 -e BUILDSTATE_JWT_SECRET=... -e BUILDSTATE_DATABASE_URL=postgresql://... buildstate
#
# Settings are BUILDSTATE_* environment variables (.env.example lists them all). The image runs as an
# unprivileged user, keeps SQLite data (if used) under /var/lib/buildstate, and logs JSON to stderr.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build: the wheel, then a venv from it
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY resource/ resource/
# Every dependency ships manylinux wheels (asyncpg, uvloop, argon2-cffi...), so no compiler is needed.
# The wheel's own dependency ranges come from pyproject.toml.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/buildstate \
 && /opt/buildstate/bin/pip install /wheels/buildstate-*.whl \
 && /opt/buildstate/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/buildstate/bin/python -m compileall -q /opt/buildstate/lib

# ---------------------------------------------------------------- runtime: slim base + the venv, nothing else
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="buildstate" \
      org.opencontainers.image.description="Where every VM image build stands: the state service" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid so volumes and Kubernetes' runAsUser agree with the image.
RUN groupadd --system --gid 10001 buildstate \
 && useradd --system --uid 10001 --gid buildstate --home-dir /var/lib/buildstate --no-create-home \
      --shell /usr/sbin/nologin buildstate \
 && install -d -o buildstate -g buildstate -m 0750 /var/lib/buildstate \
 && python -m pip uninstall --yes --quiet pip setuptools wheel
COPY --from=build /opt/buildstate /opt/buildstate
ENV PATH=/opt/buildstate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BUILDSTATE_ENV=production \
    BUILDSTATE_BIND=0.0.0.0:8080 \
    BUILDSTATE_DATA_DIR=/var/lib/buildstate \
    BUILDSTATE_LOG_FORMAT=json
WORKDIR /var/lib/buildstate
USER 10001:10001
EXPOSE 8080
# Liveness only (the process answers); /ready, which also needs the database, is for load balancers
# and Kubernetes' readinessProbe. The port follows BUILDSTATE_BIND.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; port = os.environ.get('BUILDSTATE_BIND', ':8080').rsplit(':', 1)[1]; u.urlopen(f'http://127.0.0.1:{port}/health', timeout=2)"]
# gunicorn's graceful stop: listeners close, in-flight requests get BUILDSTATE_GRACEFUL_TIMEOUT_SECONDS
# (30 s) to finish. Give the container longer than that (compose stop_grace_period, Kubernetes
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
# `serve` applies pending migrations once in the gunicorn master before the workers start; with several
# replicas run `buildstate migrate` as a one-shot step first (compose's migrate service, the k8s Job).
CMD ["buildstate", "serve"]
