"""The architecture overview's curl examples, run with curl against a real server process, as written:
X-API-Key for the pipeline's writes, then POST /token and a Bearer token for /dashboard/summary."""

# ruff: noqa: E501 - the seed's shell lines are kept as the seed wrote them
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from buildstate.store import Store

# The seed's commands, verbatim but for `-sS` (no progress meter) and $API_URL before the bare "/token".
PIPELINE = r"""
set -eu
BUILD_ID="rhel-8.8-base-$(date +%s)"
RESPONSE=$(curl -sS -X POST ${API_URL}/builds \
  -H "X-API-Key: ${API_KEY}" \
  -H "Content-Type: application/json" \
  -d "{\"platform\":\"aws\",\"os_version\":\"rhel-8.8\",\"image_type\":\"base\",\"build_id\":\"${BUILD_ID}\"}")
echo $RESPONSE | jq -r .id > build-uuid.txt

BUILD_UUID=$(cat build-uuid.txt)
for step in '{"state_code": 10, "message": "Starting Packer build"}' \
            '{"state_code": 25, "message": "Packer build completed"}' \
            '{"state_code": 50, "message": "Starting Ansible configuration"}' \
            '{"state_code": 75, "message": "Ansible configuration completed"}' \
            '{"state_code": 100, "message": "Build completed successfully"}'; do
  curl -sS -X POST ${API_URL}/builds/${BUILD_UUID}/state \
    -H "X-API-Key: ${API_KEY}" \
    -H "Content-Type: application/json" \
    -d "$step" > /dev/null
done

RESPONSE=$(curl -sS -X POST ${API_URL}/builds -H "X-API-Key: ${API_KEY}" -H "Content-Type: application/json" \
  -d "{\"platform\":\"aws\",\"os_version\":\"rhel-8.8\",\"image_type\":\"base\",\"build_id\":\"${BUILD_ID}-b\"}")
FAILING=$(echo $RESPONSE | jq -r .id)
curl -sS -X POST ${API_URL}/builds/${FAILING}/failure \
  -H "X-API-Key: ${API_KEY}" \
  -H "Content-Type: application/json" \
  -d '{
    "error_message": "Pipeline failed",
    "error_code": "PIPELINE_FAILURE",
    "component": "concourse",
    "details": {"stage": "packer-build", "exit_code": 1}
  }' > /dev/null

TOKEN=$(curl -sS -X POST ${API_URL}/token -d '{"username":"user","password":"'"${PASSWORD}"'"}' | jq -r .access_token)
curl -sS -H "Authorization: Bearer $TOKEN" ${API_URL}/dashboard/summary
"""


@pytest.mark.slow
async def test_the_seed_curl_examples_work_as_written(  # noqa: PLR0917 - fixtures
    serve: Any, make_key: Any, make_user: Any, password: str, store: Store, tmp_path: Path
) -> None:
    url = await serve(BUILDSTATE_LOG_LEVEL="DEBUG")
    key = await make_key("read", "write", name="concourse")
    await make_user("user", "viewer")
    run = subprocess.run(
        ["bash", "-c", PIPELINE],
        env={"PATH": "/usr/bin:/bin", "API_URL": url, "API_KEY": key, "PASSWORD": password},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["counts"] == {"running": 0, "failed": 1, "succeeded": 1}
    build_uuid = (tmp_path / "build-uuid.txt").read_text().strip()
    history = await store.history(build_uuid)
    assert [e.state_code for e in history.events] == [0, 10, 25, 50, 75, 100]
    assert {e.actor for e in history.events} == {f"key:{key[:11]}"}

    server_log = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    token_like = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
    assert key not in server_log and password not in server_log and not token_like.search(server_log)
