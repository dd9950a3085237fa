"""The published specifications the tests validate against, used in place (never copied into the project).

``BUILDSTATE_SPECS_DIR`` names the folder that holds ``cdevents-0.5.1/``; by default it is ``../shared/specs``
beside the checkout (where CI lays ``shared/``), else ``/work/shared/specs``. Missing, the tests that need it
skip with the reason, except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = (ROOT.parent / "shared" / "specs", Path("/work/shared/specs"))
CDEVENTS = "cdevents-0.5.1"


def specs_dir() -> Path:
    given = os.environ.get("BUILDSTATE_SPECS_DIR")
    candidates = (Path(given),) if given else CANDIDATES
    for candidate in candidates:
        if (candidate / CDEVENTS / "schemas").is_dir():
            return candidate
    reason = (
        f"the CDEvents schemas ({CDEVENTS}/schemas) are not in {' or '.join(map(str, candidates))}; "
        "set BUILDSTATE_SPECS_DIR to the folder holding them"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@cache
def _cdevents(folder: Path) -> tuple[dict[str, dict[str, Any]], Registry]:
    """Every schema of the release by file stem (``buildqueued``), and a registry of all of them by $id
    (the event schemas refer to ``links/...`` relative to their own $id)."""
    by_name: dict[str, dict[str, Any]] = {}
    resources = []
    for path in sorted((folder / CDEVENTS / "schemas").rglob("*.json")):
        schema = json.loads(path.read_text())
        by_name[path.stem] = schema
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return by_name, Registry().with_resources(resources)


def cdevents_validator(schema_file: str) -> Draft202012Validator:
    """A validator for ``schemas/<schema_file>.json`` that checks formats (uri-reference, date-time) too."""
    by_name, registry = _cdevents(specs_dir())
    checker = Draft202012Validator.FORMAT_CHECKER
    # Without its optional checker package a format passes unchecked: make sure these two are checked.
    assert not checker.conforms("not a uri reference: \\", "uri-reference")
    assert not checker.conforms("yesterday", "date-time")
    return Draft202012Validator(by_name[schema_file], registry=registry, format_checker=checker)
