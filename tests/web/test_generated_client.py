"""A client generated from ``buildstate openapi`` by openapi-python-client runs the seed flow and resumes the
event stream with ``Last-Event-ID`` (read with httpx-sse), against a real ``scripts/serve``.

This is what the OpenAPI document promises to a code generator: typed operations for the pipeline's calls,
``text/event-stream`` for ``/events/stream`` (not JSON, which a generated client would wait on for ever) and
``Last-Event-ID`` as a declared header parameter.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from tests.support import CLI, ROOT, ServiceProcess, admin_key, clean_env

pytestmark = pytest.mark.slow  # a real server


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    work = tmp_path_factory.mktemp("generated-client")
    spec = work / "openapi.json"
    spec.write_text(subprocess.run([CLI, "openapi"], capture_output=True, text=True, check=True).stdout)
    config = work / "config.yaml"
    config.write_text("post_hooks: []\npackage_name_override: bsclient\nproject_name_override: bsclient\n")
    subprocess.run(
        [ROOT / ".venv/bin/openapi-python-client", "generate", "--path", spec, "--config", config,
         "--meta", "none", "--output-path", work / "bsclient"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module("bsclient")
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == "bsclient" or m.startswith("bsclient.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    work = tmp_path_factory.mktemp("generated-client-service")
    env = clean_env(work / "data")
    key = admin_key(env)
    served = ServiceProcess(env, work / "serve.log", workers=1).start()
    try:
        yield served.url, key
    finally:
        served.stop()


def op(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.{name}")


def read_events(client: Any, stream: Any, count: int, **kwargs: Any) -> list[tuple[str, str, int]]:
    """``count`` events of the stream opened with the generated request builder: (id, event, state)."""
    got = []
    with connect_sse(client.get_httpx_client(), **stream._get_kwargs(**kwargs)) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for message in source.iter_sse():
            got.append((message.id, message.event, message.json()["state_code"]))
            if len(got) == count:
                break
    return got


def test_a_generated_client_runs_the_seed_flow_and_resumes_the_stream(
    generated: ModuleType, service: tuple[str, str]
) -> None:
    url, key = service
    client = generated.AuthenticatedClient(
        base_url=url, token=key, prefix="", auth_header_name="X-API-Key", timeout=httpx.Timeout(10.0)
    )
    with client:
        run_the_flow(generated, client)


def run_the_flow(generated: ModuleType, client: Any) -> None:
    models = importlib.import_module("bsclient.models")
    created = op(generated, "builds.create_build").sync(
        client=client,
        body=models.BuildCreate(platform="aws", os_version="rhel-8.8", image_type="base", build_id="gen-1"),
    )
    assert isinstance(created, models.BuildWithEvent), created
    for code in (10, 25, 50, 75, 100):
        changed = op(generated, "builds.post_state").sync(
            created.id, client=client, body=models.StateChange(state_code=code, message=f"step {code}")
        )
        assert isinstance(changed, models.BuildWithEvent) and changed.state_code == code
    first = created.event.seq

    stream = op(generated, "events.stream_events")
    head = read_events(client, stream, 2, after=first - 1)
    assert head == [(str(first), "created", 0), (str(first + 1), "state", 10)]
    # The connection is gone; a new one with Last-Event-ID continues exactly after it (and wins over after=).
    rest = read_events(client, stream, 4, after=0, last_event_id=head[-1][0])
    assert rest == [(str(first + 2 + n), "state", code) for n, code in enumerate((25, 50, 75, 100))]

    answer = stream.sync_detailed(client=client, last_event_id="not-a-seq")
    assert answer.status_code == 400
