"""What a delivery sends, and how it is signed.

- ``json``: ``{"type": "buildstate.<event type>", "timestamp", "data": <event>}`` (the Standard Webhooks
  payload shape), signed with ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` by the
  ``standardwebhooks`` reference library. An ``artifact`` event's artifacts are ``data.detail.artifacts``.
- ``cdevents``: a CDEvents 0.5.1 event (``dev.cdevents.build.queued|started|finished.0.3.0``,
  ``dev.cdevents.artifact.published.0.3.0``) in a CloudEvents 1.0 structured envelope, our event under
  ``customData`` (``cdevents.py`` says which event becomes which); signed the same way.
- ``concourse``: an empty POST to the resource's check webhook with ``?webhook_token=``; Concourse checks the
  token, so nothing is signed, and the token never appears in listings or logs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from standardwebhooks import Webhook as Signer

from buildstate.errors import Unprocessable
from buildstate.models import Event
from buildstate.webhooks import cdevents
from buildstate.webhooks.models import WebhookKind

_CONCOURSE_PATH = "/check/webhook"


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def build_request(
    kind: WebhookKind,
    url: str,
    secret: str,
    event: Event,
    message_id: str,
    *,
    source: str,
    now: datetime | None = None,
) -> Request:
    if kind == WebhookKind.CONCOURSE:
        return Request(url=with_token(url, secret), body=b"")
    if kind == WebhookKind.CDEVENTS:
        body = cdevents.envelope(event, source=source)
        content_type = "application/cloudevents+json"
    else:
        payload = {
            "type": f"buildstate.{event.type.value}",
            "timestamp": event.recorded_at.isoformat(),
            "data": json.loads(event.model_dump_json()),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        content_type = "application/json"
    stamp = (now or datetime.now(UTC)).replace(microsecond=0)
    signature = Signer(secret).sign(message_id, stamp, body.decode())
    headers = {
        "Content-Type": content_type,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }
    return Request(url=url, body=body, headers=headers)


def with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("webhook_token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def split_concourse_url(url: str, secret: str | None) -> tuple[str, str]:
    """A Concourse check webhook URL without its token, and the token (from the URL or ``secret``)."""
    parts = urlsplit(url)
    if not parts.path.rstrip("/").endswith(_CONCOURSE_PATH) or "/api/v1/teams/" not in parts.path:
        raise Unprocessable(
            "a concourse webhook URL looks like https://ci.example.com/api/v1/teams/T/pipelines/P/"
            "resources/R/check/webhook",
            slug="bad-webhook-url",
        )
    query = parse_qsl(parts.query)
    tokens = [value for key, value in query if key == "webhook_token"]
    token = tokens[-1] if tokens else secret
    if not token:
        raise Unprocessable(
            "a concourse webhook needs the resource's webhook_token (in the URL or as secret)",
            slug="bad-webhook-url",
        )
    rest = [(key, value) for key, value in query if key != "webhook_token"]
    return urlunsplit(parts._replace(query=urlencode(rest))), token


def test_request(url: str, secret: str, message_id: str, webhook_id: int) -> Request:
    """A signed ``buildstate.test`` message, so a receiver can check its verification before real events."""
    stamp = datetime.now(UTC).replace(microsecond=0)
    body = json.dumps(
        {
            "type": "buildstate.test",
            "timestamp": stamp.isoformat(),
            "data": {"webhook_id": webhook_id, "message": "test delivery from buildstate"},
        },
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Signer(secret).sign(message_id, stamp, body.decode()),
    }
    return Request(url=url, body=body, headers=headers)
