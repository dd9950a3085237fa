# syntax=docker/dockerfile:1
# The buildstate Concourse resource type: /opt/resource/{check,in,out}.
#
#   docker build -f resource.Dockerfile -t buildstate-resource .     the image pipelines use
#   docker build -f resource.Dockerfile --target tests .              runs tests/resource against it
#
# The resource is standard-library Python only, so the image is the slim base plus the package:
# no compiler, no pip, none of the service's dependencies (aiohttp, asyncpg, pydantic).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS resource
# The CA bundle for https (Concourse also mounts the worker's certificates at /etc/ssl/certs);
# pip and setuptools go: nothing is installed at run time, and fewer tools means less to patch.
# ca-certificates stays unpinned on purpose: a pinned CA bundle goes stale.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python -m pip uninstall --yes --quiet pip setuptools wheel
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY resource/buildstate_resource /usr/local/lib/python3.11/site-packages/buildstate_resource
# Each script is the same entry point as the console command that pyproject.toml installs, so the
# tests run outside the image exactly what runs inside it. Byte-compiled ahead: check runs every
# minute per resource and must start fast.
RUN python -m compileall -q /usr/local/lib/python3.11/site-packages/buildstate_resource \
 && mkdir -p /opt/resource \
 && for pair in check:check in:get out:put; do \
      script="${pair%%:*}"; module="${pair##*:}"; \
      printf '#!/usr/local/bin/python3\nfrom buildstate_resource.%s import main\n\nmain()\n' "$module" \
        > "/opt/resource/$script"; \
      chmod 0755 "/opt/resource/$script"; \
      ln -s "/opt/resource/$script" "/usr/local/bin/buildstate-resource-$script"; \
    done

FROM resource AS tests
# The tests start a real buildstate service, so this stage (never shipped) installs the whole
# project and its dev tools into a venv of its own, then runs the suite against /opt/resource.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY resource/ resource/
COPY pipelines/ pipelines/
COPY tests/conftest.py tests/conftest.py
COPY tests/resource/ tests/resource/
RUN python -m venv /opt/test-venv \
 && /opt/test-venv/bin/pip install --no-cache-dir --quiet '.[dev]' trustme PyYAML
ENV BUILDSTATE_RESOURCE_SCRIPTS_DIR=/opt/resource
RUN /opt/test-venv/bin/pytest -p no:cacheprovider tests/resource

# The default target is the resource image, not the test stage.
FROM resource
