"""Where secrets live and where they never go (docs/security.md, "Secrets"), checked on a real service:

- the service log, at DEBUG, holds no API key, token, password, webhook secret, JWT secret or webhook key,
  even when they are sent in the wrong place or are wrong;
- the database holds an API key only as its SHA-256, a password only as an argon2id hash, and a webhook
  secret only encrypted (Fernet, with the key from the environment or <data_dir>/webhook.key);
- a disabled user's token is refused at once by every worker (nothing is cached);
- keys, tokens and passwords are compared in constant time.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import hmac
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet
from tests.security.conftest import Live
from tests.support import ROOT, call

from buildstate.auth import keys, passwords
from buildstate.auth.tokens import TokenIssuer

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another horse, another staple"
WRONG_PASSWORD = "not-the-password-at-all"
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="


def sign_in(live: Live, username: str, password: str) -> Any:
    return call(f"{live.url}/token", "POST", {"username": username, "password": password})


def sign_in_with_a_form(live: Live, username: str, password: str) -> str:
    """The OAuth2 password grant, as a form."""
    body = urllib.parse.urlencode({"grant_type": "password", "username": username, "password": password})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    request = urllib.request.Request(f"{live.url}/token", data=body.encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        token: str = json.loads(response.read())["access_token"]
        return token


@pytest.fixture(scope="module")
def secrets_used(live_service: Live) -> dict[str, str]:
    """Use every kind of secret against the service, rightly and wrongly; return them by name."""
    live, admin = live_service, live_service.headers
    created = call(f"{live.url}/admin/keys", "POST", {"name": "ci", "scopes": ["read", "write"]}, admin).body
    key = created["key"]
    user = call(f"{live.url}/admin/users", "POST",
                {"username": "alice", "role": "operator", "password": PASSWORD}, admin)  # fmt: skip
    assert user.status == 201, user.body
    token = sign_in(live, "alice", PASSWORD).body["access_token"]
    form_token = sign_in_with_a_form(live, "alice", PASSWORD)
    assert sign_in(live, "alice", WRONG_PASSWORD).status == 401
    hook = call(f"{live.url}/admin/webhooks", "POST",
                {"name": "h", "url": "http://127.0.0.1:9/hook", "secret": WEBHOOK_SECRET}, admin)  # fmt: skip
    assert hook.status == 201, hook.body
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {token}"}, {"X-API-Key": forged},
                    {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {token}x"},
                    {"X-API-Key": key, "Authorization": f"Bearer {token}"}):  # fmt: skip
        call(f"{live.url}/builds", headers=headers)
        call(f"{live.url}/builds", "POST", {"platform": "aws"}, headers)
    call(f"{live.url}/builds?api_key={key}&token={token}", headers={"X-API-Key": key})
    assert (
        call(f"{live.url}/admin/users/alice/password", "POST", {"password": NEW_PASSWORD}, admin).status
        == 200
    )
    data = Path(live.env["BUILDSTATE_DATA_DIR"])
    return {
        "api key": key,
        "api key secret part": key[12:],
        "token": token,
        "token signature": token.rsplit(".", 1)[1],
        "form token": form_token,
        "password": PASSWORD,
        "new password": NEW_PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "webhook secret": WEBHOOK_SECRET,
        "jwt secret": (data / "jwt-secret").read_text().strip(),
        "webhook key": (data / "webhook.key").read_text().strip(),
        "admin key": admin["X-API-Key"],
    }


def test_no_secret_reaches_the_service_log(live_service: Live, secrets_used: dict[str, str]) -> None:
    log = live_service.log.read_text()
    assert '"level": "debug"' in log  # the service logged at its most talkative
    leaked = [name for name, value in secrets_used.items() if value in log]
    assert not leaked, f"secrets in the service log: {leaked}"


async def _dump(database_url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        return {t: [r[0] for r in await conn.fetch(f'SELECT t::text FROM "{t}" t')] for t in tables}
    finally:
        await conn.close()


def test_the_database_holds_secrets_only_hashed_or_encrypted(
    live_service: Live, secrets_used: dict[str, str]
) -> None:
    rows = asyncio.run(_dump(live_service.env["BUILDSTATE_DATABASE_URL"]))
    everything = "\n".join(row for table in rows.values() for row in table)
    clear = ("api key", "api key secret part", "token", "form token", "password", "new password",
             "wrong password", "webhook secret", "jwt secret", "webhook key", "admin key")  # fmt: skip
    assert not [name for name in clear if secrets_used[name] in everything]
    assert hashlib.sha256(secrets_used["api key"].encode()).hexdigest() in everything
    (alice,) = [row for row in rows["users"] if "alice" in row]
    assert "$argon2id$" in alice
    (hook,) = rows["webhooks"]
    sealed = next(part for part in hook.strip("()").split(",") if part.startswith("gAAAA"))
    assert Fernet(secrets_used["webhook key"].encode()).decrypt(sealed.encode()).decode() == WEBHOOK_SECRET


def test_a_disabled_users_token_is_refused_at_once_by_every_worker(live_service: Live) -> None:
    live, admin = live_service, live_service.headers
    call(
        f"{live.url}/admin/users", "POST", {"username": "bob", "role": "viewer", "password": PASSWORD}, admin
    )
    bearer = {"Authorization": f"Bearer {sign_in(live, 'bob', PASSWORD).body['access_token']}"}
    assert {call(f"{live.url}/builds", headers=bearer).status for _ in range(10)} == {200}
    assert call(f"{live.url}/admin/users/bob/disable", "POST", None, admin).status == 200
    # Each request on a fresh connection, so both workers answer some of them: none caches the user.
    answers = [call(f"{live.url}/builds", headers=bearer) for _ in range(30)]
    assert {a.status for a in answers} == {401}
    assert {a.body["type"].rsplit("/", 1)[1] for a in answers} == {"user-disabled"}
    assert sign_in(live, "bob", PASSWORD).status == 401


# ---------------------------------------------------------------- constant-time comparisons


class Spy:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []
        self.real = hmac.compare_digest

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return self.real(a, b)


async def test_the_api_key_check_compares_digests_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, anon_client: TestClient[Any, Any], make_key: Any
) -> None:
    key = await make_key("read")
    spy = Spy()
    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    assert (await anon_client.get("/builds", headers={"X-API-Key": key})).status == 200
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert (await anon_client.get("/builds", headers={"X-API-Key": forged})).status == 401
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert (digest, digest) in spy.calls  # the right key: its digest against the stored one
    assert (hashlib.sha256(forged.encode()).hexdigest(), digest) in spy.calls


def test_token_signatures_are_checked_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)  # PyJWT's HMAC verification calls it
    issuer = TokenIssuer(b"s" * 48, issuer="buildstate", audience="buildstate", ttl_seconds=60)
    assert issuer.decode(issuer.issue("alice", "read", 1)).username == "alice"
    assert spy.calls


async def test_an_unknown_user_costs_a_password_hash_too(monkeypatch: pytest.MonkeyPatch) -> None:
    real = passwords._HASHER
    verified: list[str] = []

    class SpyHasher:
        def hash(self, password: str) -> str:
            return real.hash(password)

        def verify(self, stored: str, password: str) -> bool:
            verified.append(stored)
            return real.verify(stored, password)

    monkeypatch.setattr(passwords, "_HASHER", SpyHasher())
    assert await passwords.verify_password(None, "whatever password") is False
    assert verified and verified[0].startswith("$argon2id$")  # the dummy hash, at full cost


def test_no_secret_is_compared_with_a_plain_equality_in_the_service_code() -> None:
    """`==` on strings stops at the first differing character; a secret must go through compare_digest."""
    offenders = []
    for path in sorted((ROOT / "service/buildstate").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare) or not any(
                isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops
            ):
                continue
            names = [ast.unparse(part).lower() for part in (node.left, *node.comparators)]
            if any(any(word in name for word in ("hash", "digest", "signature")) for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)
