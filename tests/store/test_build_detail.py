"""``build_detail`` (GET /builds/{ref}) on both stores: the build and its artifacts as one state. On
PostgreSQL it is one statement (the artifacts an array column of the build's row); what it answers must be
what the build and its artifacts read apart answer, to the byte of the JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.store.test_artifacts import EU, US, record
from tests.store.test_rules import CTX, create, state

from buildstate.errors import NotFound
from buildstate.models import BuildDetail, ResetRequest
from buildstate.store import Store


async def test_the_detail_is_the_build_and_its_artifacts_read_apart(store: Store) -> None:
    made = await create(store, "detail-1", labels={"arch": "x86_64", "team": "images"})
    await state(store, "detail-1", 50)
    await record(store, "detail-1", EU, {**US, "labels": {"arch": "arm64", "note": 'quote " and \\ slash'}})
    await store.reset_build("detail-1", ResetRequest(reason="again"), CTX)
    await record(store, "detail-1", {"region": "", "kind": "file", "external_id": "disk.vmdk"})
    for ref in ("detail-1", made["id"], made["id"].upper()):
        detail = await store.build_detail(ref)
        build = await store.get_build(ref)
        artifacts = (await store.history(ref)).artifacts
        apart = BuildDetail(**build.model_dump(), artifacts=artifacts)
        assert detail == apart
        assert detail.model_dump_json() == apart.model_dump_json()
        assert [(a.external_id, a.attempt) for a in detail.artifacts] == [
            ("ami-0eu", 1),
            ("ami-0us", 1),
            ("disk.vmdk", 2),
        ]
        labels: dict[str, Any] = json.loads(detail.model_dump_json())["artifacts"][1]["labels"]
        assert labels == {"arch": "arm64", "note": 'quote " and \\ slash'}


async def test_a_build_without_artifacts_has_an_empty_list_and_a_missing_one_is_404(store: Store) -> None:
    await create(store, "detail-2")
    assert (await store.build_detail("detail-2")).artifacts == []
    with pytest.raises(NotFound) as missing:
        await store.build_detail("no-such-build")
    assert missing.value.type_slug == "build-not-found"
