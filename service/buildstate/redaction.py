"""``redact``: the one function that blanks credentials out of a text before it is stored, logged or answered.

It is applied where such a text is made (a webhook delivery's error, a database URL in a message) and, as a
second line, to every log line (``observability.logging``). Two kinds of things are blanked:

- values the caller knows to be secret (``redact(text, token)``), in the spellings they take in URLs and
  JSON (raw, percent-encoded, form-encoded);
- anything shaped like a credential whoever made the text: a URL's password (``scheme://user:***@``),
  query and form values whose name says secret (``webhook_token=***``, ``api_key=***``, ``password=***``),
  bearer tokens, ``X-API-Key`` header values, buildstate API keys (``bs_1a2b3c4d_***``), JWTs and
  Standard Webhooks secrets (``whsec_***``).

What it cannot know stays: a secret in a URL's path (``/hooks/T0/B0/XYZ``) looks like any other path, so
webhook error texts carry no URL at all (``webhooks.dispatcher``).
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter "secrets" would blank ordinary words; every real credential here is far longer.
_MIN_SECRET_LENGTH = 6
_CREDENTIAL_NAMES = (
    r"webhook_token|access_token|refresh_token|id_token|token|api[_-]?key|apikey|key|secret|client_secret"
    r"|password|passwd|pwd|signature|sig|auth|authorization|credentials?"
)
_PATTERNS = (
    # scheme://user:password@host -> scheme://user:***@host
    # (up to the host's "@": a password may hold an unencoded "@", as urlsplit reads it)
    (
        re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^/?#\s]*(?=@[^@/?#\s]*(?:[/?#\s]|$))", re.I),
        rf"\g<keep>{MASK}",
    ),
    # ?webhook_token=... &x_api_key=... sslpassword=...: any name that ends in a secret word
    (
        re.compile(
            rf"(?P<keep>(?:^|[?&;\s,{{(\"'])[\w.-]*?(?:{_CREDENTIAL_NAMES})=)[^&;\s\"'#,)}}]+", re.IGNORECASE
        ),
        rf"\g<keep>{MASK}",
    ),
    # Any Authorization header (Bearer, Basic, ...; Proxy-Authorization too): the scheme stays.
    (
        re.compile(r"(?P<keep>\bAuthorization[\"']?\s*[:=]\s*[\"']?(?:[A-Za-z-]+\s+)?)[^\s\"',;]+", re.I),
        rf"\g<keep>{MASK}",
    ),
    # A bearer or basic credential outside a header line; up to the next space or quote, so that an
    # escaped byte in it (a parser error's repr: eyJ...\x01...) does not leave the rest in clear.
    (re.compile(r"(?P<keep>\b(?:Bearer|Basic)\s+)[^\s\"',;]+", re.IGNORECASE), rf"\g<keep>{MASK}"),
    (
        re.compile(r"(?P<keep>\bX-API-Key[\"']?\s*[:=]\s*[\"']?)[^\s,\"';]+", re.IGNORECASE),
        rf"\g<keep>{MASK}",
    ),
    # A buildstate API key anywhere: its public id stays (it names the key in the audit log).
    (re.compile(r"(?P<keep>\bbs_[0-9a-f]{8}_)[A-Za-z0-9_-]{8,}"), rf"\g<keep>{MASK}"),
    # A JWT, also cut short or with an escaped byte in it (a parser's quote of a refused line).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"(?P<keep>\bwhsec_)[A-Za-z0-9+/=]{8,}"), rf"\g<keep>{MASK}"),
)
# Every pattern needs one of these (lowercased): text without any is only searched for the known secrets,
# which spares the expressions on nearly every log line (one access line a request).
_TRIGGERS = ("://", "=", "bearer", "basic", "authorization", "api-key", "bs_", "eyj", "whsec_")
# Texts found to hold no trigger, when no secret was given: redact returns them as they are, so the next
# time it can say so at once (the same paths and messages come back on every request). Nothing in it can
# be shaped like a credential; bounded in count and in the length of what it keeps (so a client sending
# long made-up paths holds at most _CLEAN_LIMIT x _CLEAN_LONGEST characters of a worker), emptied when full.
_CLEAN: set[str] = set()
_CLEAN_LIMIT = 4096
_CLEAN_LONGEST = 256


def spellings(secret: str) -> set[str]:
    """``secret`` as it can appear in a text: as is, percent-encoded, form-encoded."""
    return {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)} - {""}


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with each of ``secrets`` (in every spelling) and anything shaped like a credential blanked."""
    if not secrets and text in _CLEAN:
        return text
    if secrets:
        known = sorted(
            {spelled for secret in secrets if secret for spelled in spellings(secret)},
            key=len,
            reverse=True,  # longest first, so that an encoded form is not half-replaced by its raw prefix
        )
        for secret in known:
            if len(secret) >= _MIN_SECRET_LENGTH:
                text = text.replace(secret, MASK)
    lowered = text.lower()
    for trigger in _TRIGGERS:  # a loop, not any() over a generator: half the time, on every log line
        if trigger in lowered:
            break
    else:
        if not secrets and len(text) <= _CLEAN_LONGEST:
            if len(_CLEAN) >= _CLEAN_LIMIT:
                _CLEAN.clear()
            _CLEAN.add(text)
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
