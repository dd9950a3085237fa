"""``redact``: the one function that blanks credentials from texts (webhook errors, URLs, every log line)."""

from __future__ import annotations

import logging

import pytest

from buildstate.observability.logging import JsonFormatter, scrub
from buildstate.redaction import redact
from buildstate.store import describe_url

API_KEY = "bs_1a2b3c4d_" + "Zq9" * 14 + "x"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Connection timeout to host http://ci:8080/check/webhook?webhook_token=tok-123456", "tok-123456"),
        ("http://h/x?a=1&api_key=k-123456&b=2", "k-123456"),
        ("postgresql://bs:p%40ss:word@db:5432/bs?sslpassword=pw-987654", "p%40ss:word"),
        ("postgresql://bs:p@ss@db:5432/bs", "p@ss"),
        ("postgresql://bs:pw@db/bs?sslpassword=pw-987654", "pw-987654"),
        ("password=hunter2-hunter2 user=alice", "hunter2-hunter2"),
        (f"a key in a message: {API_KEY}", API_KEY[12:]),
        (f"X-API-Key: {API_KEY}", API_KEY),
        (f"Authorization: Bearer {JWT}", JWT),
        (f"token {JWT} in text", JWT),
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ],
)
def test_anything_shaped_like_a_credential_is_blanked(text: str, hidden: str) -> None:
    assert hidden not in redact(text)
    assert "***" in redact(text)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, text.replace("%", "%%"), None, None)
    assert hidden not in JsonFormatter().format(record)  # the log's second line of defence


def test_a_known_secret_is_blanked_in_every_spelling() -> None:
    secret = "s3cr3t token/with+odd&chars"
    encoded, form = "s3cr3t%20token%2Fwith%2Bodd%26chars", "s3cr3t+token%2Fwith%2Bodd%26chars"
    text = f"raw {secret}; encoded http://h/?t={encoded}; form {form}"
    redacted = redact(text, secret)
    assert "s3cr3t" not in redacted
    assert redacted.count("***") == 3


def test_what_is_not_a_credential_is_left_alone() -> None:
    for text in ("GET /builds/rhel-8.8-base-1 200 1.2ms", "webhook 3 delivery msg_5_3 attempt 1: HTTP 500"):
        assert redact(text) == text
        assert scrub(text) == text
    assert redact("a short one: abc", "abc") == "a short one: abc"  # too short to be a secret


def test_database_urls_are_described_without_their_password() -> None:
    assert describe_url("postgresql://bs:hunter2@db:5432/bs") == "postgresql://bs:***@db:5432/bs"
    assert describe_url("sqlite:////data/buildstate.db") == "sqlite:////data/buildstate.db"


def test_the_clean_text_cache_is_bounded_in_count_and_length() -> None:
    """``redact`` remembers texts it found no trigger in; a client sending many long made-up paths must not
    be able to grow a worker's memory with them."""
    from buildstate import redaction

    long_text = "/builds/" + "x" * (redaction._CLEAN_LONGEST + 1)
    assert redaction.redact(long_text) == long_text
    assert long_text not in redaction._CLEAN
    for n in range(redaction._CLEAN_LIMIT + 10):
        assert redaction.redact(f"/builds/b{n}") == f"/builds/b{n}"
    assert len(redaction._CLEAN) <= redaction._CLEAN_LIMIT
    # A text seen clean and then given a secret to blank is still blanked.
    seen = "/builds/canary-7f3a9c21d4e8b605"
    assert redaction.redact(seen) == seen
    assert redaction.redact(seen, "canary-7f3a9c21d4e8b605") == f"/builds/{redaction.MASK}"
