"""Settings, read once from ``BUILDSTATE_*`` environment variables (and an optional ``.env`` file).

Every variable is documented in ``.env.example`` at the top of the repository; a test keeps the two in step.
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from buildstate.paths import default_data_dir


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUILDSTATE_", env_file=".env", extra="ignore", frozen=True)

    env: Environment = Environment.DEVELOPMENT
    # SQLite's file and the development secrets; empty: $XDG_DATA_HOME/buildstate (~/.local/share/buildstate),
    # absolute so that the service and every CLI command find the same store wherever they run.
    data_dir: Path = Field(default_factory=default_data_dir)
    # Empty means "sqlite:///<data_dir>/buildstate.db".
    database_url: str = ""
    bind: str = "127.0.0.1:8080"
    workers: int = Field(default=2, ge=1, le=64)
    # How long SIGTERM waits for in-flight requests before workers are killed (Kubernetes'
    # terminationGracePeriodSeconds and compose's stop_grace_period must be longer).
    graceful_timeout_seconds: int = Field(default=30, ge=1, le=600)
    # Prometheus multiprocess files; empty means a fresh temporary directory per `buildstate serve`.
    metrics_dir: str = ""
    # The platforms and failure components that get a label of their own in /metrics; every other name
    # a pipeline sends is counted as "other", so clients cannot grow the number of time series.
    metrics_platforms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["aws", "azure", "gcp", "vsphere"]
    )
    metrics_components: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["packer", "ansible", "concourse"]
    )
    pg_pool_min: int = Field(default=1, ge=0, le=100)
    pg_pool_max: int = Field(default=4, ge=1, le=100)
    db_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    log_level: str = "INFO"
    log_format: str = Field(default="auto", pattern="^(auto|json|text)$")
    # One structured line per request (web/observe.py); probes and scrapes only at DEBUG.
    access_log: bool = True
    public_url: str = ""
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    # How often each worker fires the scheduled revocations that are due (each fires once, in one of them).
    revocation_poll_seconds: float = Field(default=10.0, gt=0, le=3600)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Auth (buildstate/auth). The JWT secret signs sign-in tokens: required in production; in development
    # one is generated once and kept in <data_dir>/jwt-secret (mode 0600). At least 32 characters.
    jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    jwt_issuer: str = "buildstate"
    jwt_audience: str = "buildstate"
    token_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # Shared rate limits and sign-in throttling for every worker and instance; empty: per process.
    redis_url: SecretStr | None = None
    redis_prefix: str = "buildstate:"
    # A token bucket per API key and per user: `burst` requests at once, refilled at `per_second`.
    rate_limit_per_second: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=400, ge=1)
    # Each worker keeps the API keys it checked in memory, dropped at once when a key is revoked anywhere
    # (store/key_changes.py: NOTIFY on PostgreSQL, a file beside the database on SQLite). False: read the
    # key's row on every request.
    key_cache: bool = True
    # The older trade, off by default: trust a checked key this long whatever happens (a revoked key then
    # works on for up to this long on workers that saw it; an expired one never).
    key_cache_seconds: float = Field(default=0.0, ge=0, le=60)
    # Failed sign-ins: after this many for one username (or from one client address) within the
    # window, /token answers 429 until the window has refilled.
    signin_failures_per_user: int = Field(default=5, ge=1)
    signin_failures_per_client: int = Field(default=20, ge=1)
    signin_window_seconds: int = Field(default=300, ge=1)
    # Refused credentials per client address (IPv6: per /64) within the window before 429s that write
    # nothing; the window also groups repeated denials into one audit row.
    auth_failures_per_client: int = Field(default=30, ge=1)
    auth_failure_window_seconds: int = Field(default=300, ge=1)
    # Addresses or networks of reverse proxies whose X-Forwarded-For is believed (comma-separated, e.g.
    # 10.0.0.0/8); empty: the header is ignored and the peer address is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Live updates (buildstate/webhooks). Webhook signing secrets are encrypted at rest with this Fernet key
    # (`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`):
    # required in production; in development one is generated once into <data_dir>/webhook.key.
    webhook_key: SecretStr | None = None
    # Hosts webhooks may target ("ci.example.com", "*.example.com", or an address or network such as
    # 10.20.0.0/16); empty: any host. A host or network named here may be private (webhooks/targets.py).
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Webhooks may reach loopback, private, link-local and other non-public addresses (a Concourse on the
    # same private network, tests on 127.0.0.1). Off: only public addresses and the allow-list's.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # First retry after about this long, doubling (with jitter) up to an hour, until webhook_max_age_hours.
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_max_age_hours: float = Field(default=24.0, gt=0)
    webhook_disable_after_failures: int = Field(default=50, ge=1)
    # How often an idle dispatcher looks for due retries (new events wake it at once).
    webhook_poll_seconds: float = Field(default=2.0, gt=0)
    # Run the webhook dispatcher in this process (every worker does by default; it is safe to run many).
    webhook_dispatcher: bool = True
    # Event stream: SSE comment heartbeat, and the SQLite poll for new events.
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)
    stream_poll_seconds: float = Field(default=0.25, gt=0)
    # How often an open stream checks its credential again (a revoked or expired key, a disabled user, a
    # withdrawn or expired token ends it within this long, with a final "end" event saying why).
    stream_recheck_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _default_data_dir(cls, value: object) -> object:
        return default_data_dir() if value in ("", None) else value

    @field_validator(
        "cors_origins", "webhook_allowed_hosts", "metrics_platforms", "metrics_components", mode="before"
    )
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql:// (empty: SQLite in the data dir)")
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        """It names this service in OpenAPI's servers and in every CDEvent's source (a URI reference)."""
        parts = urlsplit(value)
        if value and not (parts.scheme in ("http", "https") and parts.netloc and value.isprintable()):
            raise ValueError("must be an absolute http:// or https:// URL, or empty")
        if " " in value or parts.query or parts.fragment or parts.password is not None:
            raise ValueError("must be an http(s) URL without spaces, query, fragment or password")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for network in value:
                ip_network(str(network), strict=False)  # a ValueError names the bad entry
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'buildstate.db').resolve()}"


class SettingsError(ValueError):
    """Settings that cannot be used, said without their values: a value may be a secret."""


def load_settings() -> Settings:
    """``Settings()`` from the environment; a value that does not validate is a ``SettingsError`` naming the
    variable and the rule, never the value (pydantic's own message quotes it: a mistyped secret would be
    printed)."""
    try:
        return Settings()
    except ValidationError as exc:
        said = "; ".join(
            f"BUILDSTATE_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise SettingsError(said) from None
