"""resource.Dockerfile without a container engine: lint, and parity with the console scripts (tests/containers
builds and runs it)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "resource.Dockerfile"
CONCOURSE_NAMES = {"check": "check", "in": "in", "out": "out"}


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    completed = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_image_scripts_run_the_same_entry_points_as_the_console_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    text = DOCKERFILE.read_text()
    (pairs,) = re.findall(r"for pair in ((?:\S+:\S+ ?)+); do", text)
    image = dict(pair.split(":") for pair in pairs.split())

    for script, module in image.items():
        assert scripts[f"buildstate-resource-{script}"] == f"buildstate_resource.{module}:main"
    assert set(image) == set(CONCOURSE_NAMES)
    assert "from buildstate_resource.%s import main" in text


def test_image_is_slim_with_a_test_stage_and_no_service_dependencies() -> None:
    text = DOCKERFILE.read_text()
    resource_stage = text.split("FROM resource AS tests")[0]

    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "ca-certificates" in resource_stage
    assert "pip uninstall" in resource_stage
    for build_tool in ("gcc", "build-essential", "pip install"):
        assert build_tool not in resource_stage
    assert re.search(r"pytest .*tests/resource", text)
    assert "BUILDSTATE_RESOURCE_SCRIPTS_DIR=/opt/resource" in text
    # tests/resource reads the example pipelines and the Packer manifests of tests/fixtures.
    assert "COPY pipelines/ pipelines/" in text
    assert "COPY tests/fixtures/ tests/fixtures/" in text
