"""Bearer tokens: only HS256 JWTs signed with our secret, for our issuer and audience, with every
required claim, for a user who still exists, is enabled and has not changed password since."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from buildstate.config import Settings


def now() -> int:
    """The clock when a token is made: a constant taken at import would expire during a long run."""
    return int(time.time())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: dict[str, Any], claims: dict[str, Any], key: bytes | None, digest: Any = hashlib.sha256
) -> str:
    """A JWT built by hand, so the header can say anything (``alg: none``, RS256, HS512...)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def claims_for(settings: Settings, username: str = "alice", **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": username,
        "iat": now(),
        "exp": now() + 600,
        "scope": "read",
        "ver": 1,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def secret(settings: Settings) -> bytes:
    assert settings.jwt_secret is not None
    return settings.jwt_secret.get_secret_value().encode()


async def summary_status(client: TestClient[Any, Any], token: str) -> tuple[int, dict[str, Any], str]:
    response = await client.get("/dashboard/summary", headers={"Authorization": f"Bearer {token}"})
    body = await response.json(content_type=None)
    return response.status, body, response.headers.get("WWW-Authenticate", "")


async def test_a_token_signed_with_the_secret_and_every_claim_is_accepted(
    anon_client: TestClient[Any, Any], settings: Settings, make_user: Any
) -> None:
    await make_user("alice")
    token = jwt.encode(claims_for(settings), secret(settings), algorithm="HS256")
    status, _, _ = await summary_status(anon_client, token)
    assert status == 200


def edited(settings: Settings) -> str:
    """A valid token whose claims were swapped for more powerful ones, keeping the old signature."""
    header, _, signature = jwt.encode(claims_for(settings), secret(settings), algorithm="HS256").split(".")
    claims = b64(json.dumps(claims_for(settings, scope="read write admin")).encode())
    return f"{header}.{claims}.{signature}"


def without(claim: str) -> Any:
    return lambda s: jwt.encode(claims_for(s, **{claim: None}), secret(s), algorithm="HS256")


BAD_TOKENS = {
    "expired": lambda s: jwt.encode(
        claims_for(s, exp=now() - 60, iat=now() - 700), secret(s), algorithm="HS256"
    ),
    "issued in the future": lambda s: jwt.encode(
        claims_for(s, iat=now() + 600, exp=now() + 1200), secret(s), algorithm="HS256"
    ),
    "wrongly signed": lambda s: jwt.encode(claims_for(s), b"another-secret-" * 4, algorithm="HS256"),
    "alg none": lambda s: forge({"alg": "none", "typ": "JWT"}, claims_for(s), None),
    "alg None spelled oddly": lambda s: forge({"alg": "None", "typ": "JWT"}, claims_for(s), None),
    "RS256 header, HMAC with our secret (algorithm confusion)": lambda s: forge(
        {"alg": "RS256", "typ": "JWT"}, claims_for(s), secret(s)
    ),
    "ES256 header (algorithm confusion)": lambda s: forge(
        {"alg": "ES256", "typ": "JWT"}, claims_for(s), secret(s)
    ),
    "HS512 with our secret (not the one algorithm)": lambda s: forge(
        {"alg": "HS512", "typ": "JWT"}, claims_for(s), secret(s), hashlib.sha512
    ),
    "wrong issuer": lambda s: jwt.encode(claims_for(s, iss="someone-else"), secret(s), algorithm="HS256"),
    "wrong audience": lambda s: jwt.encode(claims_for(s, aud="another-api"), secret(s), algorithm="HS256"),
    "signature stripped": lambda s: (
        jwt.encode(claims_for(s), secret(s), algorithm="HS256").rsplit(".", 1)[0] + "."
    ),
    "claims edited after signing": edited,
    "malformed: not a JWT": lambda s: "not-a-jwt",
    "malformed: two segments": lambda s: "abc.def",
    "malformed: garbage base64": lambda s: "eyJ!!!.eyJ???.sig",
    **{
        f"missing claim {claim}": without(claim)
        for claim in ("exp", "iat", "sub", "iss", "aud", "scope", "ver")
    },
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_untrustworthy_tokens_get_401_with_a_bearer_challenge(
    case: str, anon_client: TestClient[Any, Any], settings: Settings, make_user: Any
) -> None:
    await make_user("alice")
    status, body, challenge = await summary_status(anon_client, BAD_TOKENS[case](settings))
    assert status == 401, body
    assert challenge.startswith('Bearer realm="buildstate", error="invalid_token"')
    # An expired token was good once: it says so (an open event stream ends with the same reason).
    assert body["type"].endswith("/token-expired" if case == "expired" else "/invalid-token")


@pytest.mark.parametrize(
    ("header", "slug"),
    [
        ("", "no-credentials"),
        ("Bearer", "unauthorized"),
        ("Bearer ", "unauthorized"),
        ("Basic YWxpY2U6cGFzc3dvcmQ=", "unauthorized"),
        ("Token abc", "unauthorized"),
    ],
)
async def test_missing_or_malformed_authorization_gets_401(
    header: str, slug: str, anon_client: TestClient[Any, Any]
) -> None:
    headers = {"Authorization": header} if header else {}
    response = await anon_client.get("/dashboard/summary", headers=headers)
    assert response.status == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert "X-API-Key" in response.headers["WWW-Authenticate"]
    assert (await response.json(content_type=None))["type"].endswith(f"/{slug}")


async def test_a_disabled_users_tokens_stop_working_at_once(
    client: TestClient[Any, Any], anon_client: TestClient[Any, Any], make_user: Any, sign_in: Any
) -> None:
    await make_user("alice", "operator")
    token = await sign_in("alice")
    assert (await summary_status(anon_client, token))[0] == 200
    assert (await client.post("/admin/users/alice/disable")).status == 200
    status, body, _ = await summary_status(anon_client, token)
    assert status == 401 and body["type"].endswith("/user-disabled")
    # Enabling again does not revive tokens issued before the disable.
    assert (await client.post("/admin/users/alice/enable")).status == 200
    assert (await summary_status(anon_client, token))[0] == 401
    assert (await summary_status(anon_client, await sign_in("alice")))[0] == 200


async def test_a_password_change_withdraws_earlier_tokens(
    client: TestClient[Any, Any], anon_client: TestClient[Any, Any], make_user: Any, sign_in: Any
) -> None:
    await make_user("alice")
    old = await sign_in("alice")
    changed = await client.post("/admin/users/alice/password", json={"password": "a whole new password"})
    assert changed.status == 200
    status, body, _ = await summary_status(anon_client, old)
    assert status == 401 and body["type"].endswith("/token-withdrawn")
    assert (await summary_status(anon_client, await sign_in("alice", "a whole new password")))[0] == 200


async def test_a_token_for_a_user_that_does_not_exist_is_refused(
    anon_client: TestClient[Any, Any], settings: Settings
) -> None:
    token = jwt.encode(claims_for(settings, username="ghost"), secret(settings), algorithm="HS256")
    assert (await summary_status(anon_client, token))[0] == 401


async def test_token_scopes_never_exceed_the_users_current_role(
    anon_client: TestClient[Any, Any], settings: Settings, make_user: Any
) -> None:
    await make_user("viewer", "viewer")
    forged_scope = jwt.encode(
        claims_for(settings, username="viewer", scope="read write reset admin"),
        secret(settings),
        algorithm="HS256",
    )
    response = await anon_client.get("/audit", headers={"Authorization": f"Bearer {forged_scope}"})
    assert response.status == 403
    assert (await response.json(content_type=None))["missing_scope"] == "admin"
