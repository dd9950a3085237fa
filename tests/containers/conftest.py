"""Both images, built from a clean copy of the checkout once per session, on a real engine (container_engine).

Every name the suite makes (images, containers, networks, volumes, compose projects) carries this session's
token, so runs from other checkouts on the same engine never meet; all of it is removed at the end, except
the layer cache (a ``buildstate-test-cache`` tag per image) that makes the next build warm.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# --import-mode=importlib puts no test folder on sys.path; the helper module has a name no other folder uses.
sys.path.insert(0, str(Path(__file__).parent))

import container_engine as engine
from tests.support import fresh_copy


@pytest.fixture(scope="session")
def token() -> str:
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def container_engine() -> dict[str, Any]:
    try:
        ready = engine.ensure_engine()
        ready.update(engine.ensure_base_images())
        engine.sweep_leftovers()
    except engine.Unavailable as reason:
        engine.unavailable(str(reason))
    engine.REPORT.update(ready)
    return ready


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a clone has (tracked files and this checkout's new ones, no .venv, .env or data)."""
    return fresh_copy(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="session")
def images(container_engine: dict[str, Any], checkout: Path, token: str) -> Iterator[dict[str, str]]:
    """Both images, built as a user builds them: ``service.Dockerfile``, and ``resource.Dockerfile`` whole
    (the classic builder also builds and runs its ``tests`` stage: tests/resource inside the image)."""
    tags = {"service": f"buildstate-test-{token}:service", "resource": f"buildstate-test-{token}:resource"}
    built: list[str] = []
    try:
        for name, dockerfile in (("service", "service.Dockerfile"), ("resource", "resource.Dockerfile")):
            engine.REPORT[f"{name}_image"] = engine.build(checkout, dockerfile, tags[name])
            built.append(name)
        yield tags
    finally:
        for name in built:
            # Keep the layers for the next run's cache under one stable tag; drop this run's own tag.
            engine.docker("tag", tags[name], f"buildstate-test-cache:{name}", check=False)
            engine.docker("rmi", "--no-prune", tags[name], check=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not engine.REPORT:
        return
    engine.REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    engine.REPORT_FILE.write_text(json.dumps(engine.REPORT, indent=2) + "\n")
    terminalreporter.section("containers: sizes and times")
    for key, value in engine.REPORT.items():
        terminalreporter.write_line(f"{key}: {json.dumps(value)}")
    terminalreporter.write_line(f"(also in {engine.REPORT_FILE})")
