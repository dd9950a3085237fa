"""The HTTP side: stdlib ``urllib`` with one outer retry loop, extra CAs and the proxy environment.

Why urllib: it honours ``http_proxy``/``https_proxy``/``no_proxy`` by itself, costs no install and
little import time, and a resource makes a handful of requests per run.

Retries live only here, in one loop around the whole request: exponential backoff with full
jitter, bounded by ``source.retry_seconds`` in total (no sleep may cross the deadline), on
connection errors, timeouts, 429 (``Retry-After`` honoured) and 502/503/504. Every other 4xx is
final. Writes may be retried because ``put`` always sends an ``Idempotency-Key``.
"""

import http.client
import json
import os
import random
import ssl
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode
from urllib.request import HTTPRedirectHandler, HTTPSHandler, OpenerDirector, Request, build_opener

from . import log
from .config import Source
from .errors import ApiError, ConfigError
from .numbers import ascii_int

RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
# Tests shrink the exponential backoff with this; Retry-After is always honoured as given.
BACKOFF_SCALE_ENV = "BUILDSTATE_RESOURCE_BACKOFF_SCALE"
USER_AGENT = "buildstate-concourse-resource/0.1"
NO_KEY_HINT = (
    "source.api_key is not set: the service needs an API key for every step "
    "(scope read for check and get, write for put, release for assign_channel)"
)


class Answer(NamedTuple):
    """A decoded JSON answer; ``replayed``: the service said nothing new was written
    (``Idempotent-Replayed: true``: the same Idempotency-Key again, or a change that was already true)."""

    body: Any
    replayed: bool = False


class _TransientError(Exception):
    """A failed attempt that the retry loop may repeat (never leaves this module)."""

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.retry_after = retry_after


class _RefuseRedirects(HTTPRedirectHandler):
    """Redirects end in an error that names the target instead of being followed.

    urllib would resend ``X-API-Key`` to whatever host a redirect names, and turn a redirected
    POST into a GET without its body. A redirect here means ``source.url`` is not the service's
    address, which the pipeline author should fix.
    """

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def path_for(*segments: str | int) -> str:
    """``/builds/<ref>/state`` with each segment quoted (build ids may hold ``:`` and ``+``)."""
    return "".join("/" + quote(str(segment), safe="") for segment in segments)


class Client:
    def __init__(self, source: Source) -> None:
        self.base_url = source.url
        self.api_key = source.api_key
        self.timeout = source.timeout
        self.retry_seconds = source.retry_seconds
        self._opener = self._build_opener(source)

    @staticmethod
    def _build_opener(source: Source) -> OpenerDirector:
        if not source.url.startswith("https://"):
            return build_opener(_RefuseRedirects())
        context = ssl.create_default_context()
        for pem in source.ca_certs:
            try:
                context.load_verify_locations(cadata=pem)
            except (ssl.SSLError, ValueError) as error:
                raise ConfigError(
                    f"source.ca_certs holds a certificate that cannot be loaded: {error}"
                ) from None
        # build_opener keeps its default ProxyHandler, which reads the proxy variables.
        return build_opener(HTTPSHandler(context=context), _RefuseRedirects())

    def get(self, path: str, query: Mapping[str, str | int] | None = None) -> Any:
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        return self._request("GET", url, None, {}).body

    def send(self, method: str, path: str, body: Mapping[str, Any], idempotency_key: str) -> Answer:
        """A write (``POST``, ``PUT``) with its key, so that a retry of it is safe."""
        data = json.dumps(body, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        return self._request(method, self.base_url + path, data, headers)

    def _request(self, method: str, url: str, data: bytes | None, extra: dict[str, str]) -> Answer:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **extra}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        started = time.monotonic()
        deadline = started + self.retry_seconds
        attempt = 0
        while True:
            attempt += 1
            # Retries may not run far past the budget; the first attempt always gets the full timeout.
            timeout = (
                self.timeout if attempt == 1 else min(self.timeout, max(deadline - time.monotonic(), 1.0))
            )
            log.debug(f"{method} {url} attempt {attempt}, timeout {timeout:.1f}s, {_shown(headers)}")
            if data is not None:
                log.debug(f"body: {data.decode()}")
            try:
                return self._attempt(method, url, data, headers, timeout)
            except _TransientError as error:
                problem, retry_after = str(error), error.retry_after
            delay = retry_after if retry_after is not None else _backoff(attempt)
            elapsed = time.monotonic() - started
            if time.monotonic() + delay > deadline:
                raise ApiError(
                    f"{problem} (gave up after {attempt} attempt{'s' if attempt > 1 else ''} in "
                    f"{elapsed:.1f}s; source.retry_seconds is {self.retry_seconds:g})"
                )
            log.info(f"{problem}; retrying in {delay:.1f}s (attempt {attempt})")
            time.sleep(delay)

    def _attempt(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str], timeout: float
    ) -> Answer:
        """One try: the decoded body, or :class:`_TransientError` when it is worth another."""
        request = Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http(s) only, checked in config
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
                replayed = response.headers.get("Idempotent-Replayed", "").strip().lower() == "true"
        except HTTPError as error:
            raw = error.read()
            error.close()
            log.debug(f"-> {error.code} in {time.monotonic() - started:.3f}s: {raw[:2000]!r}")
            problem = f"{method} {url} failed: {_describe(error.code, raw)}"
            if error.code == 401 and not self.api_key:
                problem += f"; {NO_KEY_HINT}"
            if 300 <= error.code < 400:
                target = error.headers.get("Location")
                problem += f" (redirected to {target}: set source.url to the service's own address)"
            if error.code not in RETRY_STATUSES:
                raise ApiError(problem, error.code) from None
            raise _TransientError(problem, _retry_after(error.headers.get("Retry-After"))) from None
        except URLError as error:
            if isinstance(error.reason, ssl.SSLCertVerificationError):
                raise ApiError(
                    f"TLS verification failed for {url}: {error.reason.verify_message}; "
                    "add the service's CA to source.ca_certs"
                ) from None
            raise _TransientError(f"cannot reach {url}: {error.reason}") from None
        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as error:
            raise _TransientError(f"cannot reach {url}: {type(error).__name__}: {error}") from None
        log.debug(f"-> {status} in {time.monotonic() - started:.3f}s: {raw[:2000]!r}")
        try:
            return Answer(json.loads(raw), replayed)
        except ValueError:
            raise ApiError(f"{method} {url} answered {status} with a body that is not JSON") from None


def _shown(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: (log.REDACTED if name == "X-API-Key" else value) for name, value in headers.items()}


def _describe(status: int, raw: bytes) -> str:
    """``409 Conflict: <detail>`` from a problem+json body, or the start of any other body."""
    try:
        problem = json.loads(raw)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        text = " ".join(raw.decode(errors="replace").split())[:200]
        return f"{status} {text}".strip()
    text = f"{status} {problem.get('title') or ''}".strip()
    if problem.get("detail"):
        text += f": {problem['detail']}"
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        text += " (" + "; ".join(_field_error(item) for item in errors[:5]) + ")"
    return text


def _field_error(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = item.get("loc") or item.get("field") or item.get("pointer") or ""
    if isinstance(where, list):
        where = ".".join(str(part) for part in where)
    message = item.get("msg") or item.get("message") or item.get("detail") or ""
    return f"{where}: {message}" if where else str(message)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    seconds = ascii_int(value)
    if seconds is not None:
        return float(seconds)
    from email.utils import parsedate_to_datetime  # noqa: PLC0415 - rare path

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff(attempt: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))], so retries spread out."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    scale = float(os.environ.get(BACKOFF_SCALE_ENV) or 1.0)
    return random.uniform(0, ceiling) * scale  # noqa: S311 - jitter, not cryptography
