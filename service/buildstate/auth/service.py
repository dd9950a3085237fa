"""``Authenticator``: turns a request's credential into a ``Principal``, and a password into a token.

Each worker keeps the API keys that passed every check in memory (``BUILDSTATE_KEY_CACHE``, on by
default), and trusts one only while the store's key epoch (``store/key_changes.py``) is the one its row
was read under: a revocation anywhere moves every worker's epoch (NOTIFY on PostgreSQL, a file beside
the database on SQLite) before it is answered, so a revoked key is refused at once by every worker of
every instance, without a database read per request. Expiry is checked against the clock: an entry
never outlives its key's ``expires_at``, nor ``key_changes.MAX_AGE``. While a worker cannot tell the
epoch (its LISTEN connection is down), it reads the row on every request. Keys that fail a check are
never cached (a key created a moment ago works at once), and users (tokens) are always read.

``BUILDSTATE_KEY_CACHE_SECONDS`` > 0 is the older trade: trust a checked key for that long whatever
happens, so a revoked key works on for up to that long on other workers (an expired one never).
``last_used_at`` is written at most once a minute per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import time
from collections.abc import Awaitable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from buildstate.auth import keys, passwords
from buildstate.auth.principal import Principal
from buildstate.auth.ratelimit import Bucket, Decision, Limiter, client_key, create_limiter
from buildstate.auth.scopes import ROLE_SCOPES, expand, spell
from buildstate.auth.secret import jwt_secret
from buildstate.auth.tokens import ExpiredToken, InvalidToken, TokenIssuer
from buildstate.config import Settings
from buildstate.errors import BadRequest, ServiceUnavailable, TooManyRequests, Unauthorized
from buildstate.store import Store
from buildstate.store.access import ApiKeyRecord, key_target, user_target
from buildstate.store.key_changes import MAX_AGE
from buildstate.store.types import AuditEntry, WriteContext

log = logging.getLogger("buildstate.auth")

REALM = "buildstate"
LAST_USED_RESOLUTION = timedelta(minutes=1)
ANONYMOUS = "anonymous"
_KEY_CACHE_LIMIT = 10_000
# The epoch of an entry kept for BUILDSTATE_KEY_CACHE_SECONDS: trusted whatever the store's epoch says.
_GRACE = object()


def challenge(error: str | None = None) -> dict[str, str]:
    """``WWW-Authenticate`` naming both ways in (RFC 6750 for Bearer; ApiKey is this service's own)."""
    bearer = f'Bearer realm="{REALM}"'
    if error:
        bearer += f', error="{error}"'
    return {"WWW-Authenticate": f'{bearer}, ApiKey realm="{REALM}", header="X-API-Key"'}


def unauthorized(detail: str, *, slug: str = "unauthorized", error: str | None = None) -> Unauthorized:
    return Unauthorized(detail, slug=slug, headers=challenge(error))


@dataclass(frozen=True, slots=True)
class SignedIn:
    token: str
    expires_in: int
    scope: str
    actor: str

    def __repr__(self) -> str:
        return f"SignedIn(actor={self.actor!r}, scope={self.scope!r})"


class Authenticator:
    def __init__(self, settings: Settings, store: Store, limiter: Limiter, tokens: TokenIssuer) -> None:
        self.store = store
        self.limiter = limiter
        self.tokens = tokens
        self.key_cache_seconds = settings.key_cache_seconds
        self.key_cache = settings.key_cache or settings.key_cache_seconds > 0
        self.key_changes = store.access.key_changes
        # SHA-256 of a presented key that passed every check -> (usable until, monotonic; the key epoch
        # its row was read under, or _GRACE; its principal)
        self._principals: dict[str, tuple[float, Hashable, Principal]] = {}
        # (public id, epoch) -> the read of its row in flight, shared by the requests that wait for it
        self._reading: dict[tuple[str, Hashable], asyncio.Future[tuple[float, ApiKeyRecord | None]]] = {}
        self.requests = Bucket("default", settings.rate_limit_per_second, settings.rate_limit_burst)
        window = settings.signin_window_seconds
        self.signin_user = Bucket(
            "signin-user", settings.signin_failures_per_user / window, settings.signin_failures_per_user
        )
        self.signin_client = Bucket(
            "signin-client", settings.signin_failures_per_client / window, settings.signin_failures_per_client
        )
        self.failure_window = settings.auth_failure_window_seconds
        failures = settings.auth_failures_per_client
        self.credential_failures = Bucket("credential-failures", failures / self.failure_window, failures)
        # One audit row write per repeat key and window for requests refused with 429 (a flood writes once).
        self.throttled_audit = Bucket("throttled-audit", 1 / self.failure_window, 1)

    # ------------------------------------------------------------------ request credentials

    async def identify(self, headers: Mapping[str, str], *, fresh: bool = False) -> Principal:
        """The principal of the request's credential; ``fresh``: from the key's row as it is now, not
        from this worker's memory (an open stream's rechecks: rare, and they must also see a change
        made to ``api_keys`` by hand, which no epoch signals)."""
        api_key, authorization = headers.get("X-API-Key"), headers.get("Authorization")
        if api_key is not None and authorization is not None:
            raise unauthorized(
                "send one credential, X-API-Key or Authorization, not both", error="invalid_request"
            )
        for name, value in (("X-API-Key", api_key), ("Authorization", authorization)):
            # Keys and tokens are printable ASCII; anything else (bytes that are not UTF-8 arrive as
            # surrogates) is no credential, and must not reach a digest, a decoder or a log line.
            if value is not None and not (value.isascii() and value.isprintable()):
                raise unauthorized(
                    f"the {name} header holds characters no credential has (printable ASCII only)",
                    slug="invalid-credential",
                    error="invalid_request",
                )
        if api_key is not None:
            return await self.from_api_key(api_key.strip(), fresh=fresh)
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise unauthorized(
                    "the Authorization header must be 'Bearer <token>' (get one from POST /token)",
                    error="invalid_request",
                )
            return await self.from_bearer(token.strip())
        raise unauthorized(
            "this route needs a credential: 'X-API-Key: <key>', or 'Authorization: Bearer <token>' "
            "from POST /token",
            slug="no-credentials",
        )

    async def from_api_key(self, presented: str, *, fresh: bool = False) -> Principal:
        digest = keys.digest(presented)
        epoch = self.key_changes.epoch() if self.key_cache else None
        cached = None if fresh else self._principals.get(digest)
        if cached is not None:
            until, read_in, principal = cached
            # This very key passed every check below, within the entry's time, and (but for the grace
            # mode) no key has changed anywhere since its row was read.
            if time.monotonic() < until and (read_in is _GRACE or (epoch is not None and read_in == epoch)):
                return principal
        public_id = keys.public_id(presented)
        if public_id is None:
            raise unauthorized("the X-API-Key value is not a buildstate key (bs_...)", slug="invalid-key")
        read_at, record = await self._key_record(public_id, None if fresh else epoch)
        if record is None or not hmac.compare_digest(digest, record.key_hash):
            raise unauthorized("the API key is not valid", slug="invalid-key")
        # Only the holder of the full key gets to learn why it no longer works.
        now = datetime.now(UTC)
        if record.revoked_at is not None:
            raise unauthorized(f"the API key {public_id} has been revoked", slug="key-revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise unauthorized(
                f"the API key {public_id} expired at {record.expires_at.isoformat()}", slug="key-expired"
            )
        if record.last_used_at is None or record.last_used_at < now - LAST_USED_RESOLUTION:
            with contextlib.suppress(ServiceUnavailable):  # bookkeeping must not fail the request
                await self.store.access.touch_key(record.id, now, now - LAST_USED_RESOLUTION)
        platforms = frozenset(record.platforms) if record.platforms is not None else None
        principal = Principal(actor=key_target(public_id), scopes=expand(record.scopes), platforms=platforms)
        if self.key_cache_seconds > 0 or epoch is not None:
            # As long as the row it was checked against may be used, and never past the key's expiry.
            grace = self.key_cache_seconds > 0
            until = read_at + (self.key_cache_seconds if grace else MAX_AGE)
            if record.expires_at is not None:
                until = min(until, time.monotonic() + (record.expires_at - now).total_seconds())
            self._remember(digest, until, _GRACE if grace else epoch, principal)
        return principal

    async def _key_record(self, public_id: str, epoch: Hashable | None) -> tuple[float, ApiKeyRecord | None]:
        """The key's row, and when it was read (monotonic).

        With the cache on, the requests that miss it for the same key at the same moment share one read
        (one per key epoch: a read begun before a revocation serves no request that came after it):
        under load every request in flight with that key would otherwise queue for a database connection
        at once, each time its cache entry runs out, and wait behind each other."""
        if self.key_cache_seconds <= 0 and epoch is None:
            return time.monotonic(), await self.store.access.key_by_prefix(public_id)
        shared = (public_id, epoch)
        reading = self._reading.get(shared)
        if reading is None:
            reading = asyncio.ensure_future(self._read_key(public_id))
            self._reading[shared] = reading
            reading.add_done_callback(lambda _done: self._reading.pop(shared, None))
        # Shielded: a request that goes away must not cancel the read the others wait for.
        return await asyncio.shield(reading)

    async def _read_key(self, public_id: str) -> tuple[float, ApiKeyRecord | None]:
        started = time.monotonic()
        return started, await self.store.access.key_by_prefix(public_id)

    def _remember(self, digest: str, until: float, epoch: Hashable, principal: Principal) -> None:
        """Cache a checked key (at most ``_KEY_CACHE_LIMIT``; when full, run-out entries go first)."""
        if len(self._principals) >= _KEY_CACHE_LIMIT:
            now = time.monotonic()
            self._principals = {k: v for k, v in self._principals.items() if v[0] > now}
        if len(self._principals) < _KEY_CACHE_LIMIT:
            self._principals[digest] = (until, epoch, principal)

    async def from_bearer(self, token: str) -> Principal:
        try:
            claims = self.tokens.decode(token)
        except InvalidToken as exc:
            slug = "token-expired" if isinstance(exc, ExpiredToken) else "invalid-token"
            raise unauthorized(str(exc), slug=slug, error="invalid_token") from None
        user = await self.store.access.user_by_name(claims.username)
        if user is None or user.disabled_at is not None:
            raise unauthorized(
                "the token's user is disabled or gone", slug="user-disabled", error="invalid_token"
            )
        if claims.version != user.token_version:
            raise unauthorized(
                "the token was withdrawn by a password change; sign in again",
                slug="token-withdrawn",
                error="invalid_token",
            )
        # A role lowered since sign-in lowers the token's scopes too.
        scopes = expand(claims.scopes) & ROLE_SCOPES[user.role]
        return Principal(actor=user_target(user.username), scopes=scopes)

    def limit(self, principal: Principal) -> Awaitable[Decision]:
        """The take from the principal's bucket (the limiter's own awaitable: no coroutine around it)."""
        return self.limiter.take(principal.actor, self.requests)

    async def credential_refused(self, source: str | None) -> Decision:
        """Count a refused credential against the client (``client_key``); once its bucket is empty the
        caller answers 429 and writes nothing. Accepted credentials cost nothing here."""
        return await self.limiter.take(f"credential-failures:{client_key(source)}", self.credential_failures)

    async def record_denial(self, entry: AuditEntry, *, throttled: bool = False) -> None:
        """The audit row of a denied request, shared with its repeats: one row per source, actor, action,
        status and reason within the window (``repeats`` counts them), so that a flood of made-up credentials
        adds one row, not one per request. A ``throttled`` denial (a 429) is written at most once per
        window and key, whatever the rate. Best effort while the database is down."""
        window = int(time.time() // self.failure_window)
        reason = str((entry.detail or {}).get("reason", ""))  # a disabled account and a wrong password differ
        key = "|".join(
            (str(window), client_key(entry.source), entry.actor, entry.action, str(entry.status_code), reason)
        )
        if throttled and not (await self.limiter.take(f"audit:{key}", self.throttled_audit)).allowed:
            return
        try:
            await self.store.record_audit(dataclasses.replace(entry, repeat_key=key))
        except ServiceUnavailable:
            log.warning("audit row for a denied %s not written: database unavailable", entry.action)

    # ------------------------------------------------------------------ sign-in

    async def sign_in(
        self, username: str, password: str, requested_scope: str | None, ctx: WriteContext
    ) -> SignedIn:
        """A token for a correct username and password; 401 otherwise, 429 after repeated failures.

        Each attempt takes a token from the username's and the client address's bucket *before* the
        password is checked (so parallel guesses cannot slip past a check), and a success gives it back:
        only failures drain the buckets.
        """
        name = username.strip().lower()
        buckets = (
            (f"signin:user:{name}", self.signin_user),
            (f"signin:client:{client_key(ctx.source)}", self.signin_client),
        )
        taken = [(key, bucket, await self.limiter.take(key, bucket)) for key, bucket in buckets]
        refused = [decision for _, _, decision in taken if not decision.allowed]
        if refused:
            for key, bucket, decision in taken:
                if decision.allowed:
                    await self.limiter.take(key, bucket, cost=-1)
            wait = max(decision.retry_after for decision in refused)
            await self._audit_sign_in(
                ctx, ANONYMOUS, name, outcome="denied", status=429, reason="too many failed sign-ins"
            )
            raise TooManyRequests(
                f"too many failed sign-ins for this user or from this address; retry in {wait} s",
                slug="sign-in-throttled",
                headers={"Retry-After": str(wait)},
            )
        user = await self.store.access.user_by_name(name)
        correct = await passwords.verify_password(user.password_hash if user else None, password)
        if user is None or not correct or user.disabled_at is not None:
            # The answer is the same whether the password was right or not: telling a disabled account's
            # caller "disabled" only when the password was right would confirm the password. The audit
            # log (admins only) says which it was.
            reason = "disabled user" if user is not None and correct else "wrong username or password"
            await self._audit_sign_in(ctx, ANONYMOUS, name, outcome="denied", status=401, reason=reason)
            raise unauthorized("wrong username or password", slug="sign-in-failed")
        for key, bucket, _ in taken:
            await self.limiter.take(key, bucket, cost=-1)
        scopes = ROLE_SCOPES[user.role]
        if requested_scope:
            asked = frozenset(requested_scope.split())
            if not asked <= scopes:
                raise BadRequest(
                    f"scope {spell(asked - scopes) or requested_scope!r} is beyond role {user.role!r}",
                    slug="invalid-scope",
                )
            scopes = asked
        actor = user_target(user.username)
        token = self.tokens.issue(user.username, spell(scopes), user.token_version)
        await self._audit_sign_in(ctx, actor, name, outcome="allowed", status=200, reason=None)
        return SignedIn(token=token, expires_in=self.tokens.ttl_seconds, scope=spell(scopes), actor=actor)

    async def _audit_sign_in(
        self, ctx: WriteContext, actor: str, username: str, *, outcome: str, status: int, reason: str | None
    ) -> None:
        entry = AuditEntry(
            actor=actor,
            action="auth.token",
            target=user_target(username[:64]),
            outcome=outcome,
            status_code=status,
            request_id=ctx.request_id,
            source=ctx.source,
            detail={"reason": reason} if reason else None,
        )
        if outcome == "denied":  # guesses from one source are one row with a count
            await self.record_denial(entry, throttled=status == 429)
            return
        try:
            await self.store.record_audit(entry)
        except ServiceUnavailable:
            log.warning("audit row for sign-in of %s not written: database unavailable", entry.target)


def build_authenticator(settings: Settings, store: Store) -> Authenticator:
    """Everything the middleware and /token need, from the settings (refuses production without a secret)."""
    tokens = TokenIssuer(
        jwt_secret(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.token_ttl_seconds,
    )
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
    return Authenticator(settings, store, create_limiter(redis_url, settings.redis_prefix), tokens)
