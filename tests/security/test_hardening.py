"""The claims of docs/security.md that no other test folder makes: the webhook key file is private, and
webhooks may only target allowed hosts. (tests/auth has the JWT secret file, production without a secret,
rate limits, sign-in throttling and CORS.)"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from tests.conftest import ClientMaker, make_settings

from buildstate.config import Settings
from buildstate.webhooks.secrets import SecretBox


def test_the_development_webhook_key_is_a_file_only_its_owner_can_read(tmp_path: Path) -> None:
    SecretBox.from_settings(Settings(data_dir=tmp_path))
    assert stat.S_IMODE((tmp_path / "webhook.key").stat().st_mode) == 0o600


async def test_webhooks_may_only_target_allowed_hosts(
    make_client: ClientMaker, make_key: Any, settings: Settings
) -> None:
    fenced = make_settings(settings.database_url, settings.data_dir, webhook_allowed_hosts=["ci.example.com"],
                           webhook_dispatcher=False)  # fmt: skip
    admin = await make_client(fenced, headers={"X-API-Key": await make_key("admin")})
    for url in (
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:5432/",
        "http://ci.example.com.evil.net/",
    ):
        refused = await admin.post("/admin/webhooks", json={"name": "x", "url": url})
        assert refused.status == 422, url
    assert (
        await admin.post("/admin/webhooks", json={"name": "ci", "url": "https://ci.example.com/hook"})
    ).status == 201
    with_credentials = await admin.post(
        "/admin/webhooks", json={"name": "c", "url": "https://u:p@ci.example.com/"}
    )
    assert with_credentials.status == 422
