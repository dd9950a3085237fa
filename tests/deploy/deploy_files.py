"""Readers for the deployment files, shared by the tests in this folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from buildstate.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
DOCKERFILES = [ROOT / "service.Dockerfile", ROOT / "resource.Dockerfile"]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "docker-compose.sqlite.yml"]
NGINX_CONF = ROOT / "deploy/nginx/nginx.conf"


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: ``!reset`` and ``!override`` (Compose 2.24) mark how an override merges;
    the value under the tag is what the schema sees."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _tagged)
ComposeLoader.add_constructor("!override", _tagged)


def compose(path: Path = COMPOSE_FILES[0]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 - SafeLoader subclass
    return loaded


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s by ``Kind/name`` (not kustomization.yaml: not a k8s object)."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") != "Kustomization":
                found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def setting_names() -> set[str]:
    return {f"BUILDSTATE_{name.upper()}" for name in Settings.model_fields}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]
